//! `durable_transitions`: after a script that changed a breaker's state,
//! `WAIT` until enough replicas hold it, so that a failover does not lose it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::error::map_error;
use super::{Connection, RedisStore};
use crate::store::{BreakerName, StoreError, StoreErrorKind};

/// How long a count of connected replicas is trusted.
const RECOUNT_AFTER: Duration = Duration::from_secs(1);

/// The setting: this many replicas, waited for at most this long.
#[derive(Debug, Clone, Copy)]
pub(super) struct Durability {
    replicas: u32,
    timeout: Duration,
}

impl Durability {
    pub(super) fn new(replicas: u32, timeout: Duration) -> Self {
        Durability { replicas, timeout }
    }

    pub(super) fn check(&self) -> Result<(), StoreError> {
        if self.replicas == 0 || self.timeout.is_zero() {
            return Err(StoreError::new(
                StoreErrorKind::Config,
                format!(
                    "invalid `durable_transitions`: {} replicas within {:?}; both must be above zero",
                    self.replicas, self.timeout
                ),
            ));
        }
        Ok(())
    }
}

/// The setting at work in one store.
#[derive(Debug)]
pub(super) struct Durable {
    config: Durability,
    /// Replicas connected to the primary, and when they were counted.
    connected: Mutex<Option<(Instant, u64)>>,
    /// Fewer replicas than asked are connected (logged once per episode).
    short: AtomicBool,
}

impl Durable {
    pub(super) fn new(config: Durability) -> Self {
        Durable {
            config,
            connected: Mutex::new(None),
            short: AtomicBool::new(false),
        }
    }
}

impl RedisStore {
    /// Waits (`WAIT`) until the asked replicas hold the transition `name`'s
    /// script just made, at most the shorter of the setting's timeout and
    /// half the `store_timeout`. The transition is saved either way: fewer
    /// replicas in time is logged, never an error. Skipped while fewer
    /// replicas than asked are connected: Redis checks a `WAIT`'s timeout
    /// only on its clock tick (100 ms at the default `hz 10`), and the wait
    /// holds the connection's later commands meanwhile.
    pub(super) async fn replicate(
        &self,
        name: &BreakerName,
        durable: &Durable,
        store_timeout: Duration,
    ) {
        let wanted = durable.config.replicas;
        if let Some(connected) = self.connected_replicas(durable).await {
            if connected < u64::from(wanted) {
                if !durable.short.swap(true, Ordering::Relaxed) {
                    tracing::warn!(connected, wanted, "durable_transitions: fewer replicas connected than asked; transitions are not waited for until they are back");
                }
                return;
            }
            if durable.short.swap(false, Ordering::Relaxed) {
                tracing::info!(
                    connected,
                    wanted,
                    "durable_transitions: enough replicas connected again"
                );
            }
        }
        let budget = durable.config.timeout.min(store_timeout / 2);
        // WAIT 0 would block forever.
        let millis = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut wait = redis::cmd("WAIT");
        wait.arg(wanted).arg(millis);
        // WAIT counts the writes of the connection it is sent on: the one
        // that ran the script (on a cluster, the connection to the key's node).
        let acked = async {
            match &self.inner.connection {
                Connection::Cluster(c) => {
                    use redis::cluster_routing::{
                        Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
                    };
                    let route = Route::with_key(self.key(name), SlotAddr::Master);
                    let routing =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                    match c.clone().route_command(wait, routing).await {
                        Ok(value) => redis::from_redis_value(value).map_err(super::corrupt),
                        Err(error) => Err(map_error(error)),
                    }
                }
                other => other.clone().query::<u64>(wait).await,
            }
        };
        // Our own deadline: Redis may answer a tick late.
        match tokio::time::timeout(budget, acked).await {
            Ok(Ok(n)) if n >= u64::from(wanted) => {}
            Ok(Ok(n)) => {
                tracing::warn!(breaker = %name, acked = n, wanted, waited = ?budget, "a transition reached fewer replicas than asked; a failover now could lose it")
            }
            Ok(Err(error)) => {
                tracing::warn!(breaker = %name, %error, "could not wait for replicas to hold a transition")
            }
            Err(_) => {
                tracing::warn!(breaker = %name, wanted, waited = ?budget, "replicas did not confirm a transition in time; a failover now could lose it")
            }
        }
    }

    /// The primary's connected replicas, counted at most once a second
    /// (`None` on a cluster, where each key has its own primary, or when
    /// the count cannot be read).
    async fn connected_replicas(&self, durable: &Durable) -> Option<u64> {
        if matches!(self.inner.connection, Connection::Cluster(_)) {
            return None;
        }
        let cached = *durable
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((at, n)) = cached {
            if at.elapsed() < RECOUNT_AFTER {
                return Some(n);
            }
        }
        let mut info = redis::cmd("INFO");
        info.arg("replication");
        let text: String = self.inner.connection.clone().query(info).await.ok()?;
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix("connected_slaves:"))
            .and_then(|n| n.trim().parse().ok())?;
        *durable
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), n));
        Some(n)
    }
}
