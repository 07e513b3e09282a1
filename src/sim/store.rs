//! A store for simulations: a `MemoryStore` whose clock starts at a fixed
//! time, that can be checkpointed and rolled back.

use std::ops::Deref;

use crate::store::{BreakerName, MemoryStore, Saved};
use crate::{Policy, Snapshot};

/// The store clock at the simulation's start: a fixed "wall clock", so
/// generations are the same in every run of a seed.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// A [`Store`](crate::Store) for simulations: a [`MemoryStore`] (it derefs to
/// one, and is used as one) whose clock starts at a fixed time, with a
/// [`checkpoint`](Self::checkpoint) / [`restore`](Self::restore) pair to play
/// a failover that loses the last writes (generations go back).
#[derive(Clone, Debug)]
pub struct SimStore {
    store: MemoryStore,
}

/// Every breaker of a [`SimStore`] at one moment.
#[derive(Clone, Debug)]
pub struct Checkpoint(Saved);

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
        Self {
            store: MemoryStore::starting_at(EPOCH_MS),
        }
    }

    /// Every breaker as it is now.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.store.save())
    }

    /// Puts every breaker back as it was at `checkpoint`, announcing nothing
    /// (as a failover to a lagging replica does).
    pub fn restore(&self, checkpoint: Checkpoint) {
        self.store.load(checkpoint.0);
    }

    /// One breaker as the store holds it, if it exists.
    pub fn inspect(&self, name: &BreakerName, policy: &Policy) -> Option<SimBreaker> {
        self.store.with_machine(name, |m, now| SimBreaker {
            snapshot: m.snapshot(policy.params(), now),
            leases: m.leases.len(),
            instances: m.failing.len() + m.tripped.len(),
            buckets: m.buckets.len(),
        })
    }
}

impl Deref for SimStore {
    type Target = MemoryStore;

    fn deref(&self) -> &MemoryStore {
        &self.store
    }
}
