//! Connecting to the breakers' Redis from the command line's flags.

use distributed_circuit_breaker::RedisStore;

use crate::args::{exit, Connection};
use crate::Failure;

pub(crate) async fn connect(c: &Connection) -> Result<RedisStore, Failure> {
    let mut builder = RedisStore::builder()
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

/// The URL(s) without passwords, for messages.
fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let credentials = &url[scheme + 3..at];
                let user = credentials.split(':').next().unwrap_or_default();
                format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
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
    }
}
