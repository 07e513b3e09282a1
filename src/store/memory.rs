//! The embedded store: breakers shared by every layer in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{
    Acquired, BreakerInfo, BreakerName, Force, ForceNote, HealthCheck, HealthTurn, OutcomeBatch,
    PolicyConflicts, ProbeResult, Store, StoreFuture,
};
use crate::machine::Machine;
use crate::policy::Params;
use crate::rand::rand16;
use crate::{Policy, Snapshot, State, StoreEvent, Transition};

/// How many transitions a slow subscriber may fall behind before it skips
/// ahead (it then resynchronises on its next refresh).
const EVENT_BUFFER: usize = 1024;

/// Operations between two sweeps of breakers idle past their TTL.
const SWEEP_EVERY: u64 = 4096;

/// The in-process [`Store`]: the default when no Redis is configured.
///
/// Cloning a `MemoryStore` gives another handle to the same breakers, so every
/// layer built on clones of one store shares state, exactly as processes
/// sharing one Redis do. Breakers idle for longer than their policy's
/// `key_ttl` are forgotten.
///
/// ```
/// use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, MemoryStore, Policy};
///
/// let store = MemoryStore::new();
/// let a = DistributedCircuitBreakerLayer::new("payments", Policy::default(), store.clone())?;
/// let b = DistributedCircuitBreakerLayer::new("payments", Policy::default(), store)?;
/// // `a` and `b` are two replicas of one breaker.
/// # Ok::<(), distributed_circuit_breaker::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    breakers: Mutex<Breakers>,
    events: broadcast::Sender<StoreEvent>,
    conflicts: PolicyConflicts,
    epoch: Instant,
    /// Wall-clock milliseconds at `epoch`: generations start from the clock
    /// (as in Redis), so they never restart near zero.
    epoch_ms: u64,
}

#[derive(Debug, Default)]
struct Breakers {
    map: HashMap<BreakerName, Entry>,
    operations: u64,
    /// Health-check turns: holder and when the turn ends (the Redis store
    /// keeps them in a key of their own).
    turns: HashMap<BreakerName, (u64, u64)>,
}

#[derive(Debug, Clone)]
struct Entry {
    machine: Machine,
    expires_at: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::starting_at(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
        )
    }

    /// An empty store whose clock reads `epoch_ms` now (simulations fix it,
    /// so that a seed gives the same generations in every run).
    pub(crate) fn starting_at(epoch_ms: u64) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            inner: Arc::new(Inner {
                breakers: Mutex::new(Breakers::default()),
                events,
                conflicts: PolicyConflicts::default(),
                epoch: Instant::now(),
                epoch_ms,
            }),
        }
    }

    /// The store's clock in milliseconds: wall-clock time at creation, then
    /// tokio's monotonic clock (so tests with a paused clock drive it).
    fn now(&self) -> u64 {
        let elapsed = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.epoch_ms.saturating_add(elapsed)
    }

    fn lock(&self) -> MutexGuard<'_, Breakers> {
        // No code panics while holding the lock, and the map stays consistent at
        // every step, so a poisoned lock is safe to keep using.
        self.inner
            .breakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one step of the machine under the lock and announces any
    /// transition. A step that `writes` keeps the breaker for another
    /// `key_ttl`; a read does only if it created it or changed its state (as
    /// in Redis, where a read that changes nothing writes nothing).
    fn step<T>(
        &self,
        name: &BreakerName,
        policy: &Policy,
        writes: bool,
        origin: u64,
        op: impl FnOnce(&mut Machine, &Params, u64) -> T,
    ) -> (T, Snapshot) {
        let params = policy.params();
        let now = self.now();
        let mut breakers = self.lock();
        breakers.operations += 1;
        if breakers.operations % SWEEP_EVERY == 0 {
            breakers.map.retain(|_, entry| entry.expires_at > now);
        }
        if breakers
            .map
            .get(name)
            .is_some_and(|entry| entry.expires_at <= now)
        {
            breakers.map.remove(name);
        }
        let (out, before, from, snapshot) = match breakers.map.get_mut(name) {
            Some(entry) => {
                let before = entry.machine.generation;
                let from = entry.machine.state;
                let out = op(&mut entry.machine, params, now);
                if writes || entry.machine.generation != before {
                    entry.expires_at = entry.machine.keep_until(params, now);
                }
                (out, before, from, entry.machine.snapshot(params, now))
            }
            None => {
                // Not held: the implicit breaker, kept only once something
                // worth keeping happened to it.
                let mut machine = Machine::implicit();
                let before = machine.generation;
                let from = machine.state;
                let out = op(&mut machine, params, now);
                let snapshot = machine.snapshot(params, now);
                if machine.worth_keeping(params) {
                    let expires_at = machine.keep_until(params, now);
                    breakers.map.insert(
                        name.clone(),
                        Entry {
                            machine,
                            expires_at,
                        },
                    );
                }
                (out, before, from, snapshot)
            }
        };
        if snapshot.generation != before {
            // No receiver is fine: nobody subscribed yet.
            let _ = self.inner.events.send(StoreEvent::Transition(Transition {
                name: name.as_str().to_owned(),
                snapshot,
                received: Instant::now(),
                origin,
                from: Some(from),
            }));
        }
        (out, snapshot)
    }
}

/// Every breaker of a store at one moment (simulations roll back to it).
#[cfg(feature = "sim")]
#[derive(Debug, Clone)]
pub(crate) struct Saved(HashMap<BreakerName, Entry>);

#[cfg(feature = "sim")]
impl MemoryStore {
    pub(crate) fn save(&self) -> Saved {
        Saved(self.lock().map.clone())
    }

    /// Puts every breaker back as it was, announcing nothing.
    pub(crate) fn load(&self, saved: Saved) {
        self.lock().map = saved.0;
    }

    /// Looks at one breaker as the store holds it, if it exists.
    pub(crate) fn with_machine<T>(
        &self,
        name: &BreakerName,
        look: impl FnOnce(&Machine, u64) -> T,
    ) -> Option<T> {
        let now = self.now();
        self.lock().map.get(name).map(|e| look(&e.machine, now))
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl Store for MemoryStore {
    fn record<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        batch: OutcomeBatch,
    ) -> StoreFuture<'a, Snapshot> {
        let (other, snapshot) = self.step(name, policy, true, batch.instance, |m, p, now| {
            m.record(p, now, &batch, rand16())
        });
        if let Some(theirs) = other {
            self.inner
                .conflicts
                .report(name, policy.params().fingerprint, theirs);
        }
        ready(snapshot)
    }

    fn acquire<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        lease: u64,
    ) -> StoreFuture<'a, Acquired> {
        let (acquired, _) = self.step(name, policy, true, lease, |m, p, now| {
            m.acquire(p, now, lease)
        });
        ready(acquired)
    }

    fn release<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        generation: u64,
        lease: u64,
        result: ProbeResult,
    ) -> StoreFuture<'a, Snapshot> {
        let ((), snapshot) = self.step(name, policy, true, lease, |m, p, now| {
            m.release(p, now, generation, lease, result, rand16());
        });
        ready(snapshot)
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
        let ((), snapshot) = self.step(name, policy, true, 0, |m, _, now| {
            m.force_noted(now, force, note);
        });
        ready(snapshot)
    }

    fn info<'a>(&'a self, name: &'a BreakerName) -> StoreFuture<'a, Option<BreakerInfo>> {
        let now = self.now();
        let breakers = self.lock();
        let info = breakers
            .map
            .get(name)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.machine.info(name.as_str(), now));
        ready(info)
    }

    fn list_info(&self) -> StoreFuture<'_, Vec<BreakerInfo>> {
        let now = self.now();
        let mut breakers = self.lock();
        breakers.map.retain(|_, entry| entry.expires_at > now);
        let mut all: Vec<_> = breakers
            .map
            .iter()
            .map(|(name, entry)| entry.machine.info(name.as_str(), now))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        ready(all)
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
    ) -> StoreFuture<'a, Snapshot> {
        let ((), snapshot) = self.step(name, policy, false, 0, |m, _, now| m.expire(now));
        ready(snapshot)
    }

    fn health<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        check: HealthCheck,
    ) -> StoreFuture<'a, HealthTurn> {
        let lease_ms = crate::machine::force_ms(check.lease);
        let extend_ms = crate::machine::force_ms(check.extend);
        let (holder, snapshot) = self.step(name, policy, true, check.holder, |m, _, now| {
            (m.state, m.generation, now)
        });
        let (state, _, now) = holder;
        let mut breakers = self.lock();
        let held = breakers
            .turns
            .get(name)
            .filter(|(_, until)| *until > now)
            .map_or(0, |(holder, _)| *holder);
        if state != State::Open {
            if held == check.holder {
                breakers.turns.remove(name);
            }
            return ready(HealthTurn {
                holder: false,
                snapshot,
            });
        }
        if held != 0 && held != check.holder {
            return ready(HealthTurn {
                holder: false,
                snapshot,
            });
        }
        breakers.turns.insert(
            name.clone(),
            (check.holder, now.saturating_add(lease_ms.max(1))),
        );
        drop(breakers);
        let Some(healthy) = check.report else {
            return ready(HealthTurn {
                holder: true,
                snapshot,
            });
        };
        let (moved, snapshot) = self.step(name, policy, true, check.holder, |m, _, now| {
            m.health_report(now, check.generation, healthy, extend_ms)
        });
        if moved {
            self.lock().turns.remove(name);
        }
        ready(HealthTurn {
            holder: true,
            snapshot,
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<(String, Snapshot)>> {
        let now = self.now();
        let mut breakers = self.lock();
        breakers.map.retain(|_, entry| entry.expires_at > now);
        // `list` knows no policy: it reports only the end of a break or of a
        // forced state (zero for half-open and for forced states without an
        // expiry), as the Redis store's `list` does.
        let params = Params {
            permits: u32::MAX,
            ..Params::default()
        };
        let mut all: Vec<_> = breakers
            .map
            .iter()
            .map(|(name, entry)| {
                (
                    name.as_str().to_owned(),
                    entry.machine.snapshot(&params, now),
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        ready(all)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }
}
