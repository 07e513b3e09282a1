//! The Redis store: one hash per breaker, every change one atomic Lua script,
//! transitions announced on pub/sub. Works on a single node and on Redis Cluster.

mod builder;
mod durability;
mod error;
mod events;
mod inspect;
mod runner;
mod scripts;
mod sentinel;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use tokio::sync::broadcast;

pub use self::builder::RedisStoreBuilder;
use self::durability::Durability;
use self::error::map_error;
use self::scripts::Scripts;
use super::{
    Acquired, BreakerInfo, BreakerName, Force, ForceNote, HealthCheck, HealthTurn, OutcomeBatch,
    PolicyConflicts, ProbeResult, Store, StoreError, StoreErrorKind, StoreFuture,
};
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
    durability: Option<durability::Durable>,
    /// Connected with [`RedisStoreBuilder::read_only`]: no write access checked.
    read_only: bool,
    /// The server knows no `EVALSHA_RO` (before Redis 7).
    no_read_only: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    /// The primary behind Redis Sentinel, followed across failovers.
    Sentinel(Arc<sentinel::Primary>),
    Cluster(ClusterConnection),
}

impl Connection {
    /// One command, routed by its key on a cluster.
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: redis::Cmd) -> Result<T, StoreError> {
        self.query_raw(&cmd).await.map_err(map_error)
    }

    /// Loads `script` (`SCRIPT LOAD`; on a cluster, on every master).
    async fn load(&mut self, script: &redis::Script) -> redis::RedisResult<String> {
        let load = script.prepare_invoke();
        match self {
            Connection::Single(c) => load.load_async(c).await,
            Connection::Sentinel(p) => p.observe(load.load_async(&mut p.manager()).await),
            Connection::Cluster(c) => load.load_async(c).await,
        }
    }

    /// A pipeline (one server: the keys of a cluster may live apart).
    async fn query_pipe<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            Connection::Single(c) => pipe.query_async(c).await,
            Connection::Sentinel(p) => p.observe(pipe.query_async(&mut p.manager()).await),
            Connection::Cluster(c) => pipe.query_async(c).await,
        }
    }

    /// One command, with redis-rs's own error (its code is needed).
    async fn query_raw<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Connection::Single(c) => cmd.query_async(c).await,
            Connection::Sentinel(p) => p.observe(cmd.query_async(&mut p.manager()).await),
            Connection::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

impl RedisStore {
    /// Every breaker key under the prefix: one `SCAN` on a single node, one
    /// per master on a cluster (found with `CLUSTER NODES`).
    async fn scan_keys(&self) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}:{{*}}", glob_escape(&self.inner.prefix));
        let mut keys = Vec::new();
        let single = match &self.inner.connection {
            Connection::Single(c) => Some(c.clone()),
            Connection::Sentinel(p) => Some(p.manager()),
            Connection::Cluster(_) => None,
        };
        match (single, self.inner.connection.clone()) {
            (Some(mut c), _) => {
                let mut iter = redis::cmd("SCAN")
                    .cursor_arg(0)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .clone()
                    .iter_async::<String>(&mut c)
                    .await
                    .map_err(map_error)?;
                while let Some(key) = iter.next_item().await {
                    keys.push(key.map_err(map_error)?);
                }
            }
            (None, Connection::Cluster(mut c)) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                let nodes = c
                    .route_command(redis::cmd("CLUSTER").arg("NODES").clone(), random)
                    .await
                    .map_err(map_error)?;
                let nodes: String = redis::from_redis_value(nodes).map_err(corrupt)?;
                let (up, down) = masters(&nodes);
                // A list without a shard's breakers would look complete.
                if !down.is_empty() {
                    return Err(StoreError::new(
                        StoreErrorKind::Unavailable,
                        format!(
                            "cannot list every breaker: cluster master(s) {} are down (their breakers cannot be read)",
                            down.join(", ")
                        ),
                    ));
                }
                for (host, port) in up {
                    let mut cursor = 0u64;
                    loop {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(500);
                        let node = SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        };
                        let reply = c
                            .route_command(scan, RoutingInfo::SingleNode(node))
                            .await
                            .map_err(|e| {
                                let e = map_error(e);
                                StoreError::new(
                                    e.kind(),
                                    format!("cannot list every breaker: cluster master {host}:{port}: {e}"),
                                )
                            })?;
                        let (next, batch): (u64, Vec<String>) =
                            redis::from_redis_value(reply).map_err(corrupt)?;
                        keys.extend(batch);
                        cursor = next;
                        if cursor == 0 {
                            break;
                        }
                    }
                }
            }
            (None, _) => {}
        }
        Ok(keys)
    }
}

/// `text` matched literally by a `SCAN MATCH` pattern: `[`, `]`, `*`, `?`
/// and `\\` escaped with a backslash.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '[' | ']' | '*' | '?' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A reply of an unexpected shape.
fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!("unexpected reply: {error}"),
    )
}

/// The masters in a `CLUSTER NODES` reply: the reachable ones as (host,
/// port), and the addresses of those that are down (flagged `fail` or
/// without an address) but still own slots: their breakers cannot be read.
fn masters(nodes: &str) -> (Vec<(String, u16)>, Vec<String>) {
    let mut up = Vec::new();
    let mut down = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.contains(&"handshake") {
            continue;
        }
        // ip:port@cport[,hostname]
        let address = address.split('@').next().unwrap_or_default();
        let owns_slots = fields.len() > 8;
        if flags.iter().any(|f| matches!(*f, "fail" | "noaddr")) {
            if owns_slots {
                down.push(address.to_owned());
            }
            continue;
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            continue;
        };
        if let Ok(port) = port.parse() {
            up.push((host.to_owned(), port));
        }
    }
    (up, down)
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

    /// The key of the breaker's health-check turn (same hash slot).
    fn health_key(&self, name: &BreakerName) -> String {
        format!("{}:{{{}}}:health", self.inner.prefix, name)
    }
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
                batch.counted_age_ms.min(OutcomeBatch::UNKNOWN_AGE),
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
        self.force_noted(name, policy, force, &super::note::NO_NOTE)
    }

    fn force_noted<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        force: Force,
        note: &'a ForceNote,
    ) -> StoreFuture<'a, Snapshot> {
        Box::pin(async move {
            let duration = |d: Option<Duration>| d.map_or(0, crate::machine::force_ms);
            let args = match force {
                Force::Open(d) => [0, duration(d)],
                Force::Closed(d) => [1, duration(d)],
                Force::Disabled(d) => [2, duration(d)],
                Force::Reset => [3, 0],
                Force::OpenThenProbe(d) => [4, crate::machine::force_ms(d)],
            };
            let text = [
                note.reason_str().unwrap_or_default(),
                note.actor_str().unwrap_or_default(),
            ];
            let reply = self
                .run_text(&self.inner.scripts.force, name, policy, &args, &text, 0)
                .await?;
            Ok(reply.snapshot)
        })
    }

    fn health<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        check: HealthCheck,
    ) -> StoreFuture<'a, HealthTurn> {
        Box::pin(async move {
            let report = match check.report {
                None => 0,
                Some(true) => 1,
                Some(false) => 2,
            };
            let args = [
                check.holder & INSTANCE_MASK,
                crate::machine::force_ms(check.lease),
                report,
                check.generation,
                crate::machine::force_ms(check.extend),
            ];
            let reply = self
                .run(&self.inner.scripts.health, name, policy, &args, 0)
                .await?;
            Ok(HealthTurn {
                holder: reply.lease.is_some(),
                snapshot: reply.snapshot,
            })
        })
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
    ) -> StoreFuture<'a, Snapshot> {
        Box::pin(async move {
            let reply = self.read(name, policy).await?;
            Ok(reply.snapshot)
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<(String, Snapshot)>> {
        Box::pin(async move {
            let keys = self.scan_keys().await?;
            let mut connection = self.inner.connection.clone();
            let (secs, micros): (u64, u64) = connection.query(redis::cmd("TIME")).await?;
            let now = secs * 1000 + micros / 1000;
            let mut all = Vec::new();
            for key in keys {
                let Some(name) = key
                    .strip_prefix(&format!("{}:{{", self.inner.prefix))
                    .and_then(|rest| rest.strip_suffix('}'))
                else {
                    continue;
                };
                let mut hmget = redis::cmd("HMGET");
                hmget.arg(&key).arg(&["st", "g", "ou", "fu"]);
                let fields: Vec<Option<u64>> = connection.query(hmget).await.unwrap_or_default();
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

    fn info<'a>(&'a self, name: &'a BreakerName) -> StoreFuture<'a, Option<BreakerInfo>> {
        Box::pin(self.inspect(name))
    }

    fn list_info(&self) -> StoreFuture<'_, Vec<BreakerInfo>> {
        Box::pin(self.inspect_all())
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner.connection {
            Connection::Single(_) => "single",
            Connection::Sentinel(_) => "sentinel",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("connection", &kind)
            .finish()
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    #[test]
    fn masters_down_with_slots_are_named() {
        let nodes = "\
a 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 10.0.0.2:7001@17001 master,fail - 0 0 2 connected 5461-10922
c 10.0.0.3:7002@17002 master - 0 0 3 connected 10923-16383
d 10.0.0.4:7003@17003 master,fail - 0 0 4 disconnected
e 10.0.0.5:7004@17004 slave c 0 0 3 connected
";
        let (up, down) = masters(nodes);
        assert_eq!(
            up,
            vec![("10.0.0.1".to_owned(), 7000), ("10.0.0.3".to_owned(), 7002)]
        );
        assert_eq!(down, vec!["10.0.0.2:7001".to_owned()]);
    }

    #[test]
    fn scan_patterns_match_the_prefix_literally() {
        assert_eq!(glob_escape("dcb"), "dcb");
        assert_eq!(glob_escape("svc[1]"), "svc\\[1\\]");
        assert_eq!(glob_escape("a\\b*?"), "a\\\\b\\*\\?");
    }
}
