//! The Redis store: one hash per breaker, every change one atomic Lua script,
//! transitions announced on pub/sub. Works on a single node and on Redis Cluster.

mod events;
mod scripts;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Script};
use tokio::sync::broadcast;

use self::scripts::Scripts;
use super::{
    Acquired, BreakerName, Force, OutcomeBatch, PolicyConflicts, ProbeResult, Store, StoreError,
    StoreErrorKind, StoreFuture,
};
use crate::policy::Params;
use crate::rand::rand16;
use crate::{Policy, Snapshot, State, StoreEvent};

/// The version of the Redis hash layout, stored in each breaker's `v` field.
/// A client refuses (and leaves alone) a breaker written by a newer layout.
pub const SCHEMA_VERSION: u32 = 1;

const DEFAULT_PREFIX: &str = "dcb";
const MAX_PREFIX_LEN: usize = 64;
const EVENT_BUFFER: usize = 1024;

/// The [`Store`] for a fleet: breakers live in Redis and every process that
/// connects with the same key prefix shares them.
///
/// Each breaker is one hash, `{prefix}:{<name>}` (the braces are a Redis
/// Cluster hash tag), that expires after the policy's `key_ttl` of disuse.
/// Every change is one Lua script run with `EVALSHA`, on Redis's clock;
/// transitions are announced on the channel `{prefix}:events` to one subscriber
/// connection per store. The connections reconnect by themselves.
///
/// ```no_run
/// use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, Policy, RedisStore};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let layer = DistributedCircuitBreakerLayer::new("payments", Policy::default(), store.clone())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    prefix: String,
    channel: String,
    scripts: Scripts,
    events: broadcast::Sender<StoreEvent>,
    conflicts: PolicyConflicts,
    subscriber: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Configures a [`RedisStore`] before connecting.
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    #[cfg(feature = "redis-tls")]
    root_certificate: Option<Vec<u8>>,
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            #[cfg(feature = "redis-tls")]
            root_certificate: None,
        }
    }
}

impl RedisStoreBuilder {
    /// Key prefix (default `dcb`): stores with different prefixes never see
    /// each other's breakers. 1 to 64 characters, no braces, spaces or control
    /// characters.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long connecting may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the connection waits for any reply (default 1 s). Requests never
    /// wait that long: the policy's `store_timeout` bounds them.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Trusts the PEM certificate(s) in `pem` for `rediss://` connections
    /// instead of the system's roots (a private CA, a self-signed server).
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Connects to one Redis server: `redis://[user:password@]host:port[/db]`,
    /// or `rediss://...` over TLS with the `redis-tls` feature.
    ///
    /// Fails with a clear error, within the connect timeout, on a malformed URL,
    /// an unreachable server, a wrong password, or a user not allowed the
    /// commands the store needs.
    pub async fn connect(self, url: &str) -> Result<RedisStore, StoreError> {
        self.check()?;
        let client = self.open_client(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let manager = tokio::time::timeout(
            self.connect_timeout,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| unavailable_after(self.connect_timeout))?
        .map_err(map_error)?;
        self.finish(Connection::Single(manager), vec![client]).await
    }

    /// Connects to a Redis Cluster through any of its nodes.
    pub async fn connect_cluster(self, nodes: &[&str]) -> Result<RedisStore, StoreError> {
        self.check()?;
        if nodes.is_empty() {
            return Err(StoreError::new(
                StoreErrorKind::Config,
                "connect_cluster needs at least one node URL",
            ));
        }
        let clients = nodes
            .iter()
            .map(|url| self.open_client(url))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = redis::cluster::ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            .retries(2)
            .build()
            .map_err(map_error)?;
        let connection = tokio::time::timeout(self.connect_timeout, cluster.get_async_connection())
            .await
            .map_err(|_| unavailable_after(self.connect_timeout))?
            .map_err(map_error)?;
        self.finish(Connection::Cluster(connection), clients).await
    }

    fn open_client(&self, url: &str) -> Result<redis::Client, StoreError> {
        #[cfg(feature = "redis-tls")]
        {
            // rustls needs one process-wide crypto provider; ours is ring. An
            // error only means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            if let Some(root) = &self.root_certificate {
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root.clone()),
                };
                return redis::Client::build_with_tls(url, certificates).map_err(|e| {
                    StoreError::new(
                        StoreErrorKind::Config,
                        format!("invalid Redis URL or certificate: {e}"),
                    )
                });
            }
        }
        open_client(url)
    }

    fn check(&self) -> Result<(), StoreError> {
        let p = &self.prefix;
        let bad = p.is_empty()
            || p.len() > MAX_PREFIX_LEN
            || p.chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '{' || c == '}');
        if bad {
            return Err(StoreError::new(
                StoreErrorKind::Config,
                format!("invalid `prefix` {p:?}: 1 to {MAX_PREFIX_LEN} characters, no braces, spaces or control characters"),
            ));
        }
        Ok(())
    }

    async fn finish(
        self,
        connection: Connection,
        clients: Vec<redis::Client>,
    ) -> Result<RedisStore, StoreError> {
        let channel = format!("{}:events", self.prefix);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let subscriber = tokio::spawn(events::subscribe_forever(
            clients,
            channel.clone(),
            events.clone(),
            self.connect_timeout,
        ))
        .abort_handle();
        let store = RedisStore {
            inner: Arc::new(Inner {
                connection,
                prefix: self.prefix,
                channel,
                scripts: Scripts::new(),
                events,
                conflicts: PolicyConflicts::default(),
                subscriber,
            }),
        };
        // Prove now that this user may run what the store needs (SCRIPT LOAD,
        // EVALSHA, HSET, PEXPIRE), rather than on the first trip.
        let check = store.check_access();
        tokio::time::timeout(self.connect_timeout, check)
            .await
            .map_err(|_| unavailable_after(self.connect_timeout))??;
        Ok(store)
    }
}

impl RedisStore {
    /// Connects to one Redis server with the default settings; see
    /// [`RedisStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        RedisStoreBuilder::default().connect(url).await
    }

    /// Connects to a Redis Cluster with the default settings.
    pub async fn connect_cluster(nodes: &[&str]) -> Result<RedisStore, StoreError> {
        RedisStoreBuilder::default().connect_cluster(nodes).await
    }

    /// Starts a builder for a prefix or timeouts of your own.
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The Redis key of a breaker: `{prefix}:{<name>}`.
    pub fn key(&self, name: &BreakerName) -> String {
        format!("{}:{{{}}}", self.inner.prefix, name)
    }

    async fn check_access(&self) -> Result<(), StoreError> {
        let mut connection = self.inner.connection.clone();
        for script in self.inner.scripts.all() {
            let load = script.prepare_invoke();
            match &mut connection {
                Connection::Single(c) => load.load_async(c).await,
                Connection::Cluster(c) => load.load_async(c).await,
            }
            .map_err(map_error)?;
        }
        let probe = BreakerName::new("__connect_check")
            .map_err(|e| StoreError::new(StoreErrorKind::Config, e.to_string()))?;
        let policy = Policy::builder()
            .window(Duration::from_millis(100))
            .break_duration(Duration::from_millis(100))
            .probe_lease(Duration::from_millis(100))
            .sync_interval(Duration::from_millis(100))
            .key_ttl(Duration::from_millis(100))
            .build()
            .map_err(|e| StoreError::new(StoreErrorKind::Config, e.to_string()))?;
        self.run(&self.inner.scripts.read, &probe, &policy, &[], 0)
            .await?;
        // Transitions are announced with PUBLISH: a Redis 7 ACL user needs
        // channel rights (`&{prefix}:events`), which it lacks by default.
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.inner.channel).arg(events::PING);
        match &mut connection {
            Connection::Single(c) => publish.query_async::<i64>(c).await,
            Connection::Cluster(c) => publish.query_async::<i64>(c).await,
        }
        .map(drop)
        .map_err(|error| {
            let mut refused = map_error(error);
            if refused.kind() == StoreErrorKind::Refused {
                refused = StoreError::new(
                    StoreErrorKind::Refused,
                    format!(
                        "this Redis user may not PUBLISH to `{}`; grant it the channel (ACL `&{}`): {refused}",
                        self.inner.channel, self.inner.channel
                    ),
                );
            }
            refused
        })
    }

    /// Runs one script; `now` overrides Redis's clock when not 0 (tests only).
    async fn run(
        &self,
        script: &Script,
        name: &BreakerName,
        policy: &Policy,
        args: &[u64],
        now: u64,
    ) -> Result<Reply, StoreError> {
        self.run_with(script, name, policy.params(), args, now, rand16())
            .await
    }

    async fn run_with(
        &self,
        script: &Script,
        name: &BreakerName,
        p: &Params,
        args: &[u64],
        now: u64,
        rand16: u32,
    ) -> Result<Reply, StoreError> {
        let mut invocation = script.key(self.key(name));
        invocation
            .arg(p.consecutive)
            .arg(p.failure_ppm)
            .arg(p.slow_ppm)
            .arg(p.minimum_calls)
            .arg(p.bucket_ms)
            .arg(p.buckets)
            .arg(p.break_ms)
            .arg(p.backoff_permille)
            .arg(p.break_max_ms)
            .arg(p.jitter_ppm)
            .arg(p.permits)
            .arg(p.successes)
            .arg(p.lease_ms)
            .arg(p.ttl_ms)
            .arg(p.sync_ms)
            .arg(p.quorum)
            .arg(p.fingerprint)
            .arg(&self.inner.channel)
            .arg(name.as_str())
            .arg(rand16)
            .arg(now);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.inner.connection.clone();
        let reply: Vec<i64> = match &mut connection {
            Connection::Single(c) => invocation.invoke_async(c).await,
            Connection::Cluster(c) => invocation.invoke_async(c).await,
        }
        .map_err(map_error)?;
        let reply = Reply::parse(&reply).ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!("unexpected script reply {reply:?}"),
            )
        })?;
        if reply.reset {
            tracing::error!(breaker = %name, key = %self.key(name), "breaker data in Redis was unreadable; reset it to closed with a new generation");
        }
        if let Some(theirs) = reply.other_policy {
            self.inner.conflicts.report(name, p.fingerprint, theirs);
        }
        if reply.unannounced {
            // Saved (so never resent), but other processes learn of it only
            // on their next read of the shared state.
            tracing::warn!(breaker = %name, channel = %self.inner.channel, "a transition was saved but could not be announced (PUBLISH refused); other processes follow on their next read");
        }
        Ok(reply)
    }
}

/// What every script answers:
/// `{state, generation, remaining ms, lease, reset, other policy, unannounced}`.
#[derive(Debug, Clone, Copy)]
struct Reply {
    snapshot: Snapshot,
    lease: Option<u64>,
    reset: bool,
    /// The fingerprint of another policy that wrote the breaker before.
    other_policy: Option<u64>,
    /// The transition was saved but could not be announced (PUBLISH refused).
    unannounced: bool,
}

impl Reply {
    fn parse(values: &[i64]) -> Option<Reply> {
        let [state, generation, remaining, lease, reset, other, unannounced] = values else {
            return None;
        };
        Some(Reply {
            snapshot: Snapshot {
                state: State::from_code(u64::try_from(*state).ok()?)?,
                generation: u64::try_from(*generation).ok()?,
                remaining: Duration::from_millis(u64::try_from(*remaining).ok()?),
            },
            lease: u64::try_from(*lease).ok().filter(|l| *l > 0),
            reset: *reset != 0,
            other_policy: u64::try_from(*other).ok().filter(|o| *o > 0),
            unannounced: *unannounced != 0,
        })
    }
}

fn open_client(url: &str) -> Result<redis::Client, StoreError> {
    redis::Client::open(url)
        .map_err(|e| StoreError::new(StoreErrorKind::Config, format!("invalid Redis URL: {e}")))
}

fn unavailable_after(timeout: Duration) -> StoreError {
    StoreError::new(
        StoreErrorKind::Unavailable,
        format!("Redis did not answer within {timeout:?}"),
    )
}

/// Sorts a Redis error by its error code (the first word of the server's
/// reply), never by searching its text.
fn map_error(error: RedisError) -> StoreError {
    let kind = match error.code() {
        Some("DCB_CORRUPT" | "DCB_SCHEMA" | "WRONGTYPE") => StoreErrorKind::Corrupt,
        Some("NOPERM" | "NOAUTH" | "WRONGPASS") => StoreErrorKind::Refused,
        _ if error.kind() == redis::ErrorKind::AuthenticationFailed => StoreErrorKind::Refused,
        _ if error.kind() == redis::ErrorKind::InvalidClientConfig => StoreErrorKind::Config,
        _ => StoreErrorKind::Unavailable,
    };
    StoreError::new(kind, error.to_string())
}

/// Instance and lease ids travel as 52-bit numbers: exact in the scripts' doubles.
const INSTANCE_MASK: u64 = (1 << 52) - 1;

impl Store for RedisStore {
    fn record<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        batch: OutcomeBatch,
    ) -> StoreFuture<'a, Snapshot> {
        Box::pin(async move {
            let args = [
                batch.generation,
                u64::from(batch.successes),
                u64::from(batch.failures),
                u64::from(batch.slow),
                u64::from(batch.trailing_failures),
                batch.success_age_ms.min(OutcomeBatch::UNKNOWN_AGE),
                batch.run_age_ms.min(OutcomeBatch::UNKNOWN_AGE),
                batch.instance & INSTANCE_MASK,
                u64::from(batch.tripped),
            ];
            let reply = self
                .run(&self.inner.scripts.record, name, policy, &args, 0)
                .await?;
            Ok(reply.snapshot)
        })
    }

    fn acquire<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        lease: u64,
    ) -> StoreFuture<'a, Acquired> {
        Box::pin(async move {
            let args = [lease & INSTANCE_MASK];
            let reply = self
                .run(&self.inner.scripts.acquire, name, policy, &args, 0)
                .await?;
            Ok(Acquired {
                lease: reply.lease,
                snapshot: reply.snapshot,
            })
        })
    }

    fn release<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        generation: u64,
        lease: u64,
        result: ProbeResult,
    ) -> StoreFuture<'a, Snapshot> {
        Box::pin(async move {
            let code = match result {
                ProbeResult::Success => 0,
                ProbeResult::Failure => 1,
                ProbeResult::Cancelled => 2,
            };
            let args = [generation, lease, code];
            let reply = self
                .run(&self.inner.scripts.release, name, policy, &args, 0)
                .await?;
            Ok(reply.snapshot)
        })
    }

    fn force<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        force: Force,
    ) -> StoreFuture<'a, Snapshot> {
        Box::pin(async move {
            let duration = |d: Option<Duration>| d.map_or(0, crate::machine::force_ms);
            let args = match force {
                Force::Open(d) => [0, duration(d)],
                Force::Closed(d) => [1, duration(d)],
                Force::Disabled(d) => [2, duration(d)],
                Force::Reset => [3, 0],
            };
            let reply = self
                .run(&self.inner.scripts.force, name, policy, &args, 0)
                .await?;
            Ok(reply.snapshot)
        })
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
    ) -> StoreFuture<'a, Snapshot> {
        Box::pin(async move {
            let reply = self
                .run(&self.inner.scripts.read, name, policy, &[], 0)
                .await?;
            Ok(reply.snapshot)
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<(String, Snapshot)>> {
        Box::pin(async move {
            let Connection::Single(mut connection) = self.inner.connection.clone() else {
                return Err(StoreError::new(
                    StoreErrorKind::Refused,
                    "listing breakers is not supported on Redis Cluster",
                ));
            };
            let pattern = format!("{}:{{*}}", self.inner.prefix);
            let keys: Vec<String> = {
                let mut iter = redis::cmd("SCAN")
                    .cursor_arg(0)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .clone()
                    .iter_async::<String>(&mut connection)
                    .await
                    .map_err(map_error)?;
                let mut keys = Vec::new();
                while let Some(key) = iter.next_item().await {
                    keys.push(key.map_err(map_error)?);
                }
                keys
            };
            let (secs, micros): (u64, u64) = redis::cmd("TIME")
                .query_async(&mut connection)
                .await
                .map_err(map_error)?;
            let now = secs * 1000 + micros / 1000;
            let mut all = Vec::new();
            for key in keys {
                let Some(name) = key
                    .strip_prefix(&format!("{}:{{", self.inner.prefix))
                    .and_then(|rest| rest.strip_suffix('}'))
                else {
                    continue;
                };
                let fields: Vec<Option<u64>> = redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&["st", "g", "ou", "fu"])
                    .query_async(&mut connection)
                    .await
                    .unwrap_or_default();
                let [Some(st), Some(g), Some(ou), Some(fu)] = fields[..] else {
                    continue;
                };
                let Some(state) = State::from_code(st) else {
                    continue;
                };
                let deadline = if state == State::Open { ou } else { fu };
                all.push((
                    name.to_owned(),
                    Snapshot {
                        state,
                        generation: g,
                        remaining: Duration::from_millis(deadline.saturating_sub(now)),
                    },
                ));
            }
            all.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(all)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner.connection {
            Connection::Single(_) => "single",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("connection", &kind)
            .finish()
    }
}
