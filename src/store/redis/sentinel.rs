//! Redis Sentinel: find the primary of a named master through its sentinels
//! and follow it across failovers.
//!
//! redis-rs's `SentinelClient` hands out a client for the primary of the
//! moment; a connection made from it stays with that node after a failover.
//! A breaker store must move on its own, so this module keeps one
//! auto-reconnecting connection to the current primary and replaces it when
//! the sentinels name another one: checked on every connection error,
//! `READONLY` (an old primary demoted to replica) or `MASTERDOWN` reply, and
//! once per [`POLL`] besides (a primary that was failed over while it still
//! answered, as in a partition, would otherwise keep taking writes that the
//! fleet never sees).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::RedisError;
use tokio::sync::watch;

use super::error::{map_error, unavailable_after};
use super::RedisStoreBuilder;
use crate::store::{StoreError, StoreErrorKind};

/// How often the sentinels are asked who the primary is, besides on errors.
const POLL: Duration = Duration::from_secs(1);
/// How soon `connect` asks again when the named primary cannot be used.
const RETRY: Duration = Duration::from_millis(100);

/// Where a `redis+sentinel://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SentinelUrl {
    /// `redis` or `rediss`.
    scheme: &'static str,
    /// `user:password@` as written (still percent-encoded), or empty.
    userinfo: String,
    /// The sentinels, as `host:port`.
    sentinels: Vec<String>,
    /// The master name the sentinels monitor.
    master: String,
    db: i64,
}

impl SentinelUrl {
    /// `redis+sentinel://[user[:password]@]host:port[,host:port...]/master[/db]`,
    /// or `rediss+sentinel://...` for TLS to the sentinels and the nodes. The
    /// credentials are the data nodes'. `None` when the URL is not a
    /// sentinel URL at all; an error naming the part when it is a bad one.
    pub(super) fn parse(url: &str) -> Option<Result<SentinelUrl, StoreError>> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
            ("rediss", rest)
        } else {
            return None;
        };
        Some(Self::parse_rest(scheme, rest))
    }

    fn parse_rest(scheme: &'static str, rest: &str) -> Result<SentinelUrl, StoreError> {
        let bad = |what: &str| {
            StoreError::new(
                StoreErrorKind::Config,
                format!("invalid Redis Sentinel URL: {what} (expected redis+sentinel://[user:password@]host:port[,host:port...]/master[/db])"),
            )
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no master name"))?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
            None => (String::new(), authority),
        };
        let sentinels: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        for sentinel in &sentinels {
            let port = sentinel
                .rsplit_once(':')
                .map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return Err(bad(&format!("sentinel `{sentinel}` is not host:port")));
            }
        }
        let mut path = path.split('/');
        let master = path.next().unwrap_or_default().to_owned();
        if master.is_empty() {
            return Err(bad("no master name"));
        }
        let db = match path.next() {
            None | Some("") => 0,
            Some(db) => db
                .parse()
                .map_err(|_| bad("the database is not a number"))?,
        };
        if path.next().is_some() {
            return Err(bad("more path than /master/db"));
        }
        Ok(SentinelUrl {
            scheme,
            userinfo,
            sentinels,
            master,
            db,
        })
    }

    fn sentinel_url(&self, sentinel: &str) -> String {
        format!("{}://{sentinel}", self.scheme)
    }

    fn node_url(&self, (host, port): &(String, u16)) -> String {
        // An IPv6 address goes in brackets.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        format!(
            "{}://{}{host}:{port}/{}",
            self.scheme, self.userinfo, self.db
        )
    }
}

/// The connection to the current primary, replaced after a failover.
pub(super) struct Primary {
    url: SentinelUrl,
    builder: RedisStoreBuilder,
    config: ConnectionManagerConfig,
    current: Mutex<Current>,
    /// Bumped on every switch: the announcements subscriber moves with it.
    switched: watch::Sender<u64>,
    /// One search at a time.
    searching: AtomicBool,
    /// The connection to the sentinel that answered last.
    sentinel: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    poller: Mutex<Option<tokio::task::AbortHandle>>,
}

#[derive(Clone)]
struct Current {
    address: (String, u16),
    client: redis::Client,
    manager: ConnectionManager,
}

impl Drop for Primary {
    fn drop(&mut self) {
        if let Some(poller) = self
            .poller
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            poller.abort();
        }
    }
}

impl Primary {
    /// Asks the sentinels for the primary, connects to it, and starts
    /// following it.
    pub(super) async fn connect(
        url: SentinelUrl,
        builder: RedisStoreBuilder,
        config: ConnectionManagerConfig,
    ) -> Result<Arc<Primary>, StoreError> {
        let sentinel = tokio::sync::Mutex::new(None);
        // Right after a failover a sentinel may still name the old primary
        // (and answer first): ask again until one names a primary that is
        // one. The caller bounds all of it by `connect_timeout`.
        let current = loop {
            let address = locate(&url, &builder, &sentinel).await?;
            match open(&url, &builder, &config, address).await {
                Ok(current) => break current,
                Err(error) if error.kind() == StoreErrorKind::Unavailable => {
                    tracing::debug!(%error, "the primary a sentinel named cannot be used; asking again");
                    sentinel.lock().await.take();
                    tokio::time::sleep(RETRY).await;
                }
                Err(error) => return Err(error),
            }
        };
        let primary = Arc::new(Primary {
            url,
            builder,
            config,
            current: Mutex::new(current),
            switched: watch::channel(0).0,
            searching: AtomicBool::new(false),
            sentinel,
            poller: Mutex::new(None),
        });
        let weak = Arc::downgrade(&primary);
        let poller = tokio::spawn(poll(weak)).abort_handle();
        *primary
            .poller
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(poller);
        Ok(primary)
    }

    fn current(&self) -> Current {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connection to the primary as far as this process knows.
    pub(super) fn manager(&self) -> ConnectionManager {
        self.current().manager
    }

    /// A client for the primary, for the announcements subscriber.
    pub(super) fn client(&self) -> redis::Client {
        self.current().client
    }

    /// Changes whenever the primary is replaced.
    pub(super) fn switches(&self) -> watch::Receiver<u64> {
        self.switched.subscribe()
    }

    /// Passes a command's result through, and looks for a new primary when
    /// the error says this one may be gone or demoted.
    pub(super) fn observe<T>(
        self: &Arc<Self>,
        result: Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        if let Err(error) = &result {
            let moved = match error.code() {
                None => true,
                Some(code) => matches!(code, "READONLY" | "MASTERDOWN" | "LOADING"),
            };
            if moved {
                self.search();
            }
        }
        result
    }

    /// Starts a search in the background unless one is running.
    fn search(self: &Arc<Self>) {
        if self.searching.swap(true, Ordering::AcqRel) {
            return;
        }
        let primary = Arc::clone(self);
        tokio::spawn(async move {
            primary.follow().await;
            primary.searching.store(false, Ordering::Release);
        });
    }

    /// Asks the sentinels and switches when they name another primary.
    async fn follow(&self) {
        let address = match locate(&self.url, &self.builder, &self.sentinel).await {
            Ok(address) => address,
            Err(error) => {
                tracing::debug!(%error, "asking the sentinels for the primary failed");
                return;
            }
        };
        let old = self.current().address;
        if address == old {
            return;
        }
        match open(&self.url, &self.builder, &self.config, address.clone()).await {
            Ok(current) => {
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = current;
                self.switched.send_modify(|n| *n += 1);
                tracing::info!(
                    master = %self.url.master,
                    from = %format!("{}:{}", old.0, old.1),
                    to = %format!("{}:{}", address.0, address.1),
                    "following the new Redis primary"
                );
            }
            Err(error) => {
                tracing::warn!(master = %self.url.master, %error, "the sentinels name a new primary, but it cannot be used yet");
            }
        }
    }
}

/// Looks for a new primary every [`POLL`] while the store lives.
async fn poll(primary: Weak<Primary>) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(primary) = primary.upgrade() else {
            return;
        };
        primary.search();
    }
}

/// The primary's address: asked of the sentinel that answered last, else of
/// every sentinel at once (the first to know it wins, so sentinels that hang
/// cost nothing while others answer).
async fn locate(
    url: &SentinelUrl,
    builder: &RedisStoreBuilder,
    cached: &tokio::sync::Mutex<Option<MultiplexedConnection>>,
) -> Result<(String, u16), StoreError> {
    let mut cached = cached.lock().await;
    let timeout = builder.connect_timeout;
    if let Some(connection) = cached.take() {
        if let Ok((connection, Some(address))) = ask(connection, &url.master, timeout).await {
            *cached = Some(connection);
            return Ok(address);
        }
    }
    let mut asking = tokio::task::JoinSet::new();
    for sentinel in &url.sentinels {
        let client = builder.open_client(&url.sentinel_url(sentinel))?;
        let (master, sentinel) = (url.master.clone(), sentinel.clone());
        asking.spawn(async move {
            let connected =
                tokio::time::timeout(timeout, client.get_multiplexed_async_connection()).await;
            let connection = match connected {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => return Err(map_error(error)),
                Err(_) => return Err(unavailable_after(timeout)),
            };
            match ask(connection, &master, timeout).await? {
                (connection, Some(address)) => Ok((connection, address)),
                (_, None) => Err(StoreError::new(
                    StoreErrorKind::Config,
                    format!("sentinel {sentinel} does not monitor a master named `{master}`"),
                )),
            }
        });
    }
    let mut last = StoreError::new(StoreErrorKind::Unavailable, "no sentinel answered");
    while let Some(answer) = asking.join_next().await {
        match answer {
            Ok(Ok((connection, address))) => {
                *cached = Some(connection);
                return Ok(address);
            }
            Ok(Err(error)) => last = error,
            Err(_) => {}
        }
    }
    Err(last)
}

/// `SENTINEL get-master-addr-by-name` on one sentinel.
async fn ask(
    mut connection: MultiplexedConnection,
    master: &str,
    timeout: Duration,
) -> Result<(MultiplexedConnection, Option<(String, u16)>), StoreError> {
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("get-master-addr-by-name").arg(master);
    let reply = tokio::time::timeout(timeout, cmd.query_async(&mut connection)).await;
    let address = reply
        .map_err(|_| unavailable_after(timeout))?
        .map_err(map_error)?;
    Ok((connection, address))
}

/// Connects to `address` and makes sure it is a primary (a sentinel may
/// answer before the promotion is done).
async fn open(
    url: &SentinelUrl,
    builder: &RedisStoreBuilder,
    config: &ConnectionManagerConfig,
    address: (String, u16),
) -> Result<Current, StoreError> {
    let client = builder.open_client(&url.node_url(&address))?;
    let timeout = builder.connect_timeout;
    let connect = async {
        let mut manager = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(map_error)?;
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query_async(&mut manager)
            .await
            .map_err(map_error)?;
        let is_primary =
            matches!(role.first(), Some(redis::Value::BulkString(role)) if role == b"master");
        if !is_primary {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                format!("{}:{} is not a primary (yet)", address.0, address.1),
            ));
        }
        Ok(manager)
    };
    let manager = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| unavailable_after(timeout))??;
    Ok(Current {
        address,
        client,
        manager,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sentinel_urls() {
        let url =
            SentinelUrl::parse("redis+sentinel://u:p%40ss@10.0.0.1:26379,s2:26380/mymaster/2")
                .unwrap()
                .unwrap();
        assert_eq!(url.scheme, "redis");
        assert_eq!(url.sentinels, ["10.0.0.1:26379", "s2:26380"]);
        assert_eq!(url.master, "mymaster");
        assert_eq!(url.db, 2);
        assert_eq!(
            url.node_url(&("10.0.0.9".into(), 6379)),
            "redis://u:p%40ss@10.0.0.9:6379/2"
        );
        assert_eq!(url.sentinel_url("s2:26380"), "redis://s2:26380");
        assert_eq!(
            url.node_url(&("::1".into(), 6379)),
            "redis://u:p%40ss@[::1]:6379/2"
        );
        let tls = SentinelUrl::parse("rediss+sentinel://h:1/m")
            .unwrap()
            .unwrap();
        assert_eq!((tls.scheme, tls.db), ("rediss", 0));
        assert!(SentinelUrl::parse("redis://h:1").is_none());
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h/m",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1,/m",
            "redis+sentinel://h:1/m/x",
            "redis+sentinel://h:1/m/0/extra",
        ] {
            let error = SentinelUrl::parse(bad).unwrap().unwrap_err();
            assert_eq!(error.kind(), StoreErrorKind::Config, "{bad}");
        }
    }
}
