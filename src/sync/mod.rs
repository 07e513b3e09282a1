//! How one process keeps its view of a shared breaker: the lock-free replica
//! the hot path reads and writes, the judgement of its own outcomes, the one
//! background task per breaker that talks to the store, the probe permits,
//! and what happens while the store cannot be reached.
//!
//! One owner per decision: [`replica`] owns the state a call sees (what to
//! adopt from the store, when to trip on local outcomes); [`driver`] owns the
//! conversation with the store (when to flush, read, retry); [`degraded`]
//! owns the private breaker used while the store is away; [`local`] is the
//! window of this process's outcomes; [`permit`] returns half-open permits.

pub(crate) mod degraded;
pub(crate) mod dispatch;
pub(crate) mod driver;
pub(crate) mod health;
pub(crate) mod hub;
pub(crate) mod local;
pub(crate) mod observer;
pub(crate) mod permit;
pub(crate) mod replica;

pub use degraded::StoreFailure;
