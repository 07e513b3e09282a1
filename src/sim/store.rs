//! A store for simulations: the breaker state machine per name, on tokio's
//! clock, that can be checkpointed and rolled back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::machine::Machine;
use crate::policy::Params;
use crate::rand::rand16;
use crate::store::{Acquired, BreakerName, Force, OutcomeBatch, ProbeResult, Store, StoreFuture};
use crate::{Policy, Snapshot, StoreEvent, Transition};

/// The store clock at the simulation's start: a fixed "wall clock", so
/// generations are the same in every run of a seed.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// Announcements a slow subscriber may fall behind by (as in `MemoryStore`).
const EVENT_BUFFER: usize = 1024;

/// A [`Store`] for simulations: like [`MemoryStore`](crate::MemoryStore)
/// (every method runs one step of the machine at once and announces
/// transitions), with a clock that starts at a fixed time, no key expiry,
/// and a [`checkpoint`](Self::checkpoint) / [`restore`](Self::restore) pair
/// to play a failover that loses the last writes (generations go back).
#[derive(Clone, Debug)]
pub struct SimStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    machines: Mutex<BTreeMap<BreakerName, Machine>>,
    events: broadcast::Sender<StoreEvent>,
    epoch: Instant,
}

/// Every breaker of a [`SimStore`] at one moment.
#[derive(Clone, Debug)]
pub struct Checkpoint(BTreeMap<BreakerName, Machine>);

/// What a simulation may check about one breaker of a [`SimStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimBreaker {
    /// Its state, generation and remaining time.
    pub snapshot: Snapshot,
    /// Probe permits on loan (live or expired but not yet swept).
    pub leases: usize,
    /// Instances remembered for the quorum (failing plus tripped).
    pub instances: usize,
    /// Window buckets held.
    pub buckets: usize,
}

impl Default for SimStore {
    fn default() -> Self {
        Self::new()
    }
}

impl SimStore {
    /// An empty store whose clock starts now (tokio's clock).
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            inner: Arc::new(Inner {
                machines: Mutex::new(BTreeMap::new()),
                events,
                epoch: Instant::now(),
            }),
        }
    }

    /// Every breaker as it is now.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.lock().clone())
    }

    /// Puts every breaker back as it was at `checkpoint`, announcing nothing
    /// (as a failover to a lagging replica does).
    pub fn restore(&self, checkpoint: Checkpoint) {
        *self.lock() = checkpoint.0;
    }

    /// One breaker as the store holds it, if it exists.
    pub fn inspect(&self, name: &BreakerName, policy: &Policy) -> Option<SimBreaker> {
        let now = self.now();
        let machines = self.lock();
        let m = machines.get(name)?;
        Some(SimBreaker {
            snapshot: m.snapshot(policy.params(), now),
            leases: m.leases.len(),
            instances: m.failing.len() + m.tripped.len(),
            buckets: m.buckets.len(),
        })
    }

    fn now(&self) -> u64 {
        let elapsed = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        EPOCH_MS.saturating_add(elapsed)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<BreakerName, Machine>> {
        // Nothing panics under the lock; a poisoned map is still consistent.
        self.inner
            .machines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one step of the machine and announces a change of generation.
    fn step<T>(
        &self,
        name: &BreakerName,
        policy: &Policy,
        op: impl FnOnce(&mut Machine, &Params, u64) -> T,
    ) -> (T, Snapshot) {
        let params = policy.params();
        let now = self.now();
        let mut machines = self.lock();
        let machine = machines
            .entry(name.clone())
            .or_insert_with(|| Machine::new(now));
        let before = machine.generation;
        let out = op(machine, params, now);
        let snapshot = machine.snapshot(params, now);
        drop(machines);
        if snapshot.generation != before {
            // No receiver is fine: nobody subscribed yet.
            let _ = self.inner.events.send(StoreEvent::Transition(Transition {
                name: name.as_str().to_owned(),
                snapshot,
                received: Instant::now(),
            }));
        }
        (out, snapshot)
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl Store for SimStore {
    fn record<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        batch: OutcomeBatch,
    ) -> StoreFuture<'a, Snapshot> {
        let ((), snapshot) = self.step(name, policy, |m, p, now| {
            m.record(p, now, &batch, rand16());
        });
        ready(snapshot)
    }

    fn acquire<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        lease: u64,
    ) -> StoreFuture<'a, Acquired> {
        let (acquired, _) = self.step(name, policy, |m, p, now| m.acquire(p, now, lease));
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
        let ((), snapshot) = self.step(name, policy, |m, p, now| {
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
        let ((), snapshot) = self.step(name, policy, |m, _, now| m.force(now, force));
        ready(snapshot)
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
    ) -> StoreFuture<'a, Snapshot> {
        let ((), snapshot) = self.step(name, policy, |m, _, now| m.expire(now));
        ready(snapshot)
    }

    fn list(&self) -> StoreFuture<'_, Vec<(String, Snapshot)>> {
        let now = self.now();
        // As `MemoryStore::list`: no policy, so only the ends of breaks and
        // forced states are reported.
        let params = Params {
            permits: u32::MAX,
            ..Params::default()
        };
        let all = self
            .lock()
            .iter()
            .map(|(name, m)| (name.as_str().to_owned(), m.snapshot(&params, now)))
            .collect();
        ready(all)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }
}
