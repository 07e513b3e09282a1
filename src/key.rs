//! Which breaker a request belongs to.
//!
//! A [`KeyExtractor`] reads a key from each request: the target host on a
//! client (one breaker per downstream), the matched route on a server (one per
//! route), a tenant header, or anything a closure computes. A request without
//! a key uses the layer's base breaker. Keys become breaker names as
//! `{base}/{key}`, with characters a name may not hold (braces, control
//! characters) replaced by `_` and cut to [`MAX_NAME_LEN`](crate::store::MAX_NAME_LEN) bytes.

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
        request
            .uri()
            .authority()
            .map(|a| Cow::Borrowed(a.as_str()))
            .or_else(|| {
                let host = request.headers().get(http::header::HOST)?;
                host.to_str().ok().map(Cow::Borrowed)
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

/// The breaker name for `key` under `base`: `{base}/{key}`, made valid.
pub(crate) fn breaker_name(base: &str, key: &str) -> String {
    let mut name = String::with_capacity(base.len() + 1 + key.len());
    name.push_str(base);
    name.push('/');
    for c in key.chars() {
        let c = if c.is_control() || c == '{' || c == '}' {
            '_'
        } else {
            c
        };
        if name.len() + c.len_utf8() > MAX_NAME_LEN {
            break;
        }
        name.push(c);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_valid_names() {
        assert_eq!(breaker_name("api", "host:80"), "api/host:80");
        assert_eq!(breaker_name("api", "a{b}\nc"), "api/a_b__c");
        let long = breaker_name("api", &"é".repeat(300));
        assert!(long.len() <= MAX_NAME_LEN);
        assert!(crate::BreakerName::new(&long).is_ok());
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
