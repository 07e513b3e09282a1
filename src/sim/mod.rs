//! Support for deterministic simulations of a fleet (feature `sim`, test
//! support only: never enable it in production).
//!
//! A simulation runs many replicas, with their real background tasks, on one
//! current-thread tokio runtime with a paused clock, against a [`SimStore`]
//! that runs the same state machine as [`MemoryStore`](crate::MemoryStore)
//! and can be rolled back like a failover that lost its last writes. With
//! [`seed_thread_rng`] the crate's own randomness (jitter, instance and lease
//! ids) is drawn from a seed too, so one seed replays one run.

mod store;

pub use store::{Checkpoint, SimBreaker, SimStore};

/// Seeds the random source the crate draws from on this thread (jitter,
/// instance ids, lease ids); call it on the runtime's thread before building
/// anything.
pub fn seed_thread_rng(seed: u64) {
    crate::rand::seed_with(seed);
}
