//! Connecting to the breakers' Redis from the command line's flags.

use distributed_circuit_breaker::RedisStore;

use crate::args::{exit, Connection};
use crate::Failure;

/// `read_only`: for commands that only read (see `RedisStoreBuilder::read_only`).
pub(crate) async fn connect(c: &Connection, read_only: bool) -> Result<RedisStore, Failure> {
    let mut builder = RedisStore::builder()
        .read_only(read_only)
        .prefix(&c.key_prefix)
        .connect_timeout(c.connect_timeout)
        .response_timeout(c.connect_timeout);
    if let Some(path) = &c.tls_ca {
        let pem = std::fs::read(path).map_err(|e| {
            Failure(
                format!("cannot read --tls-ca {}: {e}", path.display()),
                exit::USAGE,
            )
        })?;
        builder = builder.tls_root_certificate(pem);
    }
    let result = if c.cluster {
        let nodes: Vec<&str> = c.redis.split(',').map(str::trim).collect();
        builder.connect_cluster(&nodes).await
    } else {
        builder.connect(&c.redis).await
    };
    result.map_err(|e| {
        Failure(
            format!("cannot use Redis at {}: {e}", redact(&c.redis)),
            exit::STORE,
        )
    })
}

/// The URL(s) without passwords, for messages: the user information
/// (everything between the scheme and the last `@`) keeps its user name
/// only, and a query (`?password=..`) is hidden whole. Forgiving on
/// purpose: it also covers URLs too malformed for redis-rs to read.
pub(crate) fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let (url, query) = match url.split_once('?') {
                Some((url, _)) => (url, "?***"),
                None => (url, ""),
            };
            let start = authority_start(url);
            let url = match url[start..].rfind('@') {
                Some(at) => {
                    let credentials = &url[start..start + at];
                    let user = match credentials.split_once(':') {
                        Some((user, _)) => user,
                        None => "",
                    };
                    format!("{}{user}:***{}", &url[..start], &url[start + at..])
                }
                None => url.to_owned(),
            };
            url + query
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Every password the URL(s) might hold, raw and percent-decoded, to scrub
/// from any message (a library's error may quote the URL).
pub(crate) fn secrets(urls: &str) -> Vec<String> {
    let mut found = Vec::new();
    for url in urls.split(',') {
        let (url, query) = url.split_once('?').unwrap_or((url, ""));
        let start = authority_start(url);
        if let Some(at) = url[start..].rfind('@') {
            let credentials = &url[start..start + at];
            // Without a colon the whole user information may be a password.
            let password = credentials
                .split_once(':')
                .map_or(credentials, |(_, pw)| pw);
            found.push(password);
            // With more than one `@`, a parser may end the password at the first.
            found.push(password.split('@').next().unwrap_or_default());
        }
        for pair in query.split('&') {
            if let Some((_, value)) = pair.split_once('=') {
                found.push(value);
            }
        }
    }
    let mut all = Vec::new();
    for secret in found.into_iter().filter(|s| s.len() >= 3) {
        let decoded = percent_decode(secret);
        all.push(secret.to_owned());
        if decoded != secret {
            all.push(decoded);
        }
    }
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all
}

/// `message` with every secret of `urls` replaced by `***`.
pub(crate) fn scrub(message: &str, urls: &str) -> String {
    let mut message = message.to_owned();
    for secret in secrets(urls) {
        message = message.replace(&secret, "***");
    }
    message
}

/// Where the authority begins: after `scheme:` and any slashes (so also
/// `redis:/:pw@host`), or at 0 without a scheme.
fn authority_start(url: &str) -> usize {
    let scheme_end = url
        .find(':')
        .filter(|i| {
            url[..*i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && url[i + 1..].contains('@')
                && url[..*i]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
        })
        .map_or(0, |i| i + 1);
    scheme_end + url[scheme_end..].len() - url[scheme_end..].trim_start_matches('/').len()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_show() {
        assert_eq!(
            super::redact("redis://ops:s3cret@h:6379,rediss://:pw@h2"),
            "redis://ops:***@h:6379,rediss://:***@h2"
        );
        assert_eq!(super::redact("redis://h:1"), "redis://h:1");
        for (url, secret) in [
            ("redis:/:PW1@h:1", "PW1"),
            ("redis://h:1/0?password=PW2", "PW2"),
            ("redis://u:PW3@h:1@x", "PW3"),
            ("redis://:PW4@[::1", "PW4"),
            ("redis+sentinel://:PW5@h:1/mymaster", "PW5"),
            ("redis://:P%40W6@h:1", "P@W6"),
        ] {
            let shown = super::redact(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
            let scrubbed = super::scrub(&format!("error in {url}: {secret}"), url);
            assert!(!scrubbed.contains(secret), "{url} -> {scrubbed}");
        }
    }
}
