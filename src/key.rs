//! Which breaker a request belongs to.
//!
//! A [`KeyExtractor`] reads a key from each request: the target host on a
//! client (one breaker per downstream), the matched route on a server (one per
//! route), a tenant header, or anything a closure computes. A request without
//! a key uses the layer's base breaker. Keys become breaker names as
//! `{base}/{key}`, one name per key: `%`, `~`, braces and control characters
//! are percent-escaped (`a{b}` becomes `a%7Bb%7D`), and a name that would be
//! longer than [`MAX_NAME_LEN`](crate::store::MAX_NAME_LEN) bytes keeps a
//! readable prefix and ends in `~` and 80 bits of the SHA-1 of the whole key.

use std::borrow::Cow;

use http::{HeaderName, Request};

use crate::store::MAX_NAME_LEN;

/// Reads the key of a request's breaker.
///
/// Closures `Fn(&Req) -> Option<String>` are extractors; the stock ones borrow
/// from the request and allocate nothing.
pub trait KeyExtractor<Req> {
    /// The key, or `None` for the base breaker.
    fn extract<'r>(&self, request: &'r Req) -> Option<Cow<'r, str>>;
}

impl<F, Req> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> Option<String>,
{
    fn extract<'r>(&self, request: &'r Req) -> Option<Cow<'r, str>> {
        self(request).map(Cow::Owned)
    }
}

/// One breaker per target authority (`host:port`) of an outgoing
/// `http::Request`: what a client calling several downstreams wants.
///
/// ```
/// use distributed_circuit_breaker::{ByAuthority, KeyExtractor};
///
/// let request = http::Request::get("http://payments.internal:8080/charge").body(()).unwrap();
/// assert_eq!(ByAuthority.extract(&request).as_deref(), Some("payments.internal:8080"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ByAuthority;

impl<B> KeyExtractor<Request<B>> for ByAuthority {
    fn extract<'r>(&self, request: &'r Request<B>) -> Option<Cow<'r, str>> {
        // `user:password@` never becomes part of a breaker name (names reach
        // Redis keys, announcements and logs).
        let without_userinfo = |a: &'r str| a.rsplit_once('@').map_or(a, |(_, host)| host);
        request
            .uri()
            .authority()
            .map(|a| Cow::Borrowed(without_userinfo(a.as_str())))
            .or_else(|| {
                let host = request.headers().get(http::header::HOST)?;
                host.to_str().ok().map(without_userinfo).map(Cow::Borrowed)
            })
    }
}

/// One breaker per value of a request header (a tenant id, an API key class).
///
/// ```
/// use distributed_circuit_breaker::{ByHeader, KeyExtractor};
///
/// let by_tenant = ByHeader::new(http::HeaderName::from_static("x-tenant"));
/// let request = http::Request::get("/jobs").header("x-tenant", "acme").body(()).unwrap();
/// assert_eq!(by_tenant.extract(&request).as_deref(), Some("acme"));
/// ```
#[derive(Debug, Clone)]
pub struct ByHeader {
    header: HeaderName,
}

impl ByHeader {
    /// Keys by `header`.
    pub fn new(header: HeaderName) -> Self {
        Self { header }
    }
}

impl<B> KeyExtractor<Request<B>> for ByHeader {
    fn extract<'r>(&self, request: &'r Request<B>) -> Option<Cow<'r, str>> {
        let value = request.headers().get(&self.header)?;
        value.to_str().ok().map(Cow::Borrowed)
    }
}

/// One breaker per axum route (`MatchedPath`, e.g. `/users/{id}`), for a
/// breaker used as route middleware.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct ByMatchedPath;

#[cfg(feature = "axum")]
impl<B> KeyExtractor<Request<B>> for ByMatchedPath {
    fn extract<'r>(&self, request: &'r Request<B>) -> Option<Cow<'r, str>> {
        let path = request.extensions().get::<axum::extract::MatchedPath>()?;
        Some(Cow::Borrowed(path.as_str()))
    }
}

/// Hex digits of the key's SHA-1 that end a shortened name (80 bits).
const HASH_HEX: usize = 20;

/// The breaker name for `key` under `base`: `{base}/{key}`, escaped so that
/// distinct keys never share a name (see the module docs).
pub(crate) fn breaker_name(base: &str, key: &str) -> String {
    let mut name = String::with_capacity(base.len() + 1 + key.len());
    name.push_str(base);
    name.push('/');
    for c in key.chars() {
        if c.is_control() || matches!(c, '{' | '}' | '%' | '~') {
            let mut utf8 = [0u8; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                name.push('%');
                name.push(char::from(HEX[usize::from(byte >> 4)]));
                name.push(char::from(HEX[usize::from(byte & 0xF)]));
            }
        } else {
            name.push(c);
        }
    }
    if name.len() <= MAX_NAME_LEN {
        return name;
    }
    // Too long: keep a readable prefix (cut at a character boundary) and end
    // with `~` and the hash of the whole name. Escaped keys hold no `~`, so a
    // shortened name never equals a whole one, whatever the base.
    let digest = sha1_smol::Sha1::from(format!("{base}/{key}").as_bytes())
        .digest()
        .to_string();
    let mut cut = MAX_NAME_LEN - 1 - HASH_HEX;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name.truncate(cut);
    name.push('~');
    name.push_str(&digest[..HASH_HEX]);
    name
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_valid_names() {
        assert_eq!(breaker_name("api", "host:80"), "api/host:80");
        assert_eq!(breaker_name("api", "a{b}\nc"), "api/a%7Bb%7D%0Ac");
        let long = breaker_name("api", &"é".repeat(300));
        assert!(long.len() <= MAX_NAME_LEN);
        assert!(crate::BreakerName::new(&long).is_ok());
    }

    #[test]
    fn distinct_keys_never_share_a_name() {
        let names = [
            breaker_name("t", "a{b}"),
            breaker_name("t", "a_b_"),
            breaker_name("t", "a%7Bb%7D"),
            breaker_name("t", "a~b"),
        ];
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Keys that differ only after byte 200.
        let common = "x".repeat(250);
        let a = breaker_name("tenants", &format!("{common}-alpha"));
        let b = breaker_name("tenants", &format!("{common}-beta"));
        assert_ne!(a, b);
        assert!(a.len() <= MAX_NAME_LEN && b.len() <= MAX_NAME_LEN);
        assert!(a.starts_with("tenants/xxxx"), "readable prefix: {a}");
        assert!(crate::BreakerName::new(&a).is_ok());
        // A base long enough to leave no room still gives one name per key.
        let base = "b".repeat(190);
        let (x, y) = (breaker_name(&base, "k-1"), breaker_name(&base, "k-2"));
        assert_ne!(x, y);
        assert!(crate::BreakerName::new(&x).is_ok() && crate::BreakerName::new(&y).is_ok());
        // A key exactly at the limit is kept whole; one byte more is hashed.
        let room = MAX_NAME_LEN - "t/".len();
        assert_eq!(breaker_name("t", &"y".repeat(room)).len(), MAX_NAME_LEN);
        assert!(breaker_name("t", &"y".repeat(room + 1)).contains('~'));
    }

    #[test]
    fn authority_never_keeps_credentials() {
        let request = Request::get("http://user:secret@payments:8080/x")
            .body(())
            .unwrap();
        assert_eq!(
            ByAuthority.extract(&request).as_deref(),
            Some("payments:8080")
        );
    }

    #[test]
    fn authority_falls_back_to_the_host_header() {
        let request = Request::get("/path")
            .header("host", "svc:9000")
            .body(())
            .unwrap();
        assert_eq!(ByAuthority.extract(&request).as_deref(), Some("svc:9000"));
        let none = Request::get("/path").body(()).unwrap();
        assert_eq!(ByAuthority.extract(&none), None);
    }
}
