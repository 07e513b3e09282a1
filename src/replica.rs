//! One process's view of one breaker: the lock-free snapshot the hot path reads
//! and the counters it writes.
//!
//! A closed call costs one atomic load to admit and two or three atomic
//! read-modify-writes to record; no lock, no allocation, no store round trip.
//! The [`driver`](crate::driver) task hands the counters to the store in batches
//! and feeds snapshots back through [`Replica::apply`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::fallback::{Fallback, StoreFailure};
use crate::permit::{Admission, ProbePermit};
use crate::store::{OutcomeBatch, Store};
use crate::{BreakerName, CircuitOpen, Outcome, Policy, Snapshot, State};

/// Low bits of the packed snapshot that hold the state code.
const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// What the hot path decides before calling the inner service.
#[derive(Debug)]
pub(crate) enum Peek {
    /// Call, counting the outcome under `generation` unless the breaker is disabled.
    Pass { generation: u64, count: bool },
    /// Reject now (the error is built only by whoever needs it).
    Reject { state: State, retry_after: Duration },
    /// The break is over (or a permit may be free): ask the store for a probe permit.
    NeedsPermit,
}

/// Outcome counters for the current generation, flushed as an [`OutcomeBatch`].
#[derive(Debug, Default)]
struct Counters {
    successes: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
    trailing_failures: AtomicU32,
}

#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) name: BreakerName,
    pub(crate) policy: Policy,
    pub(crate) store: Arc<dyn Store>,
    /// `state code | generation << STATE_BITS`.
    snapshot: AtomicU64,
    /// When the current rejection ends, in nanoseconds since `epoch`.
    deadline: AtomicU64,
    epoch: Instant,
    counters: Counters,
    /// A probe-permit request to the store is in flight from this process.
    probing: AtomicBool,
    /// Wakes the driver for an early flush (a failure was counted).
    pub(crate) wake: Arc<Notify>,
    driver_started: AtomicBool,
    /// Deciding alone while the store is unreachable.
    pub(crate) fallback: Fallback,
}

impl Replica {
    pub(crate) fn new(name: BreakerName, policy: Policy, store: Arc<dyn Store>) -> Self {
        Replica {
            name,
            policy,
            store,
            snapshot: AtomicU64::new(pack(Snapshot::INITIAL.state, 0)),
            deadline: AtomicU64::new(0),
            epoch: Instant::now(),
            counters: Counters::default(),
            probing: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            driver_started: AtomicBool::new(false),
            fallback: Fallback::new(),
        }
    }

    /// The hot path's admission check.
    #[inline(always)]
    pub(crate) fn peek(self: &Arc<Self>) -> Peek {
        if !self.driver_started.load(Ordering::Relaxed) {
            crate::driver::start(self);
        }
        let packed = self.snapshot.load(Ordering::Acquire);
        let (state, generation) = unpack(packed);
        if self.fallback.is_degraded() {
            match self.fallback.mode() {
                StoreFailure::Local => {}
                StoreFailure::FailOpen => {
                    return Peek::Pass {
                        generation,
                        count: false,
                    }
                }
                StoreFailure::FailClosed => {
                    return Peek::Reject {
                        state: State::ForcedOpen,
                        retry_after: self.policy.sync_interval(),
                    }
                }
            }
        }
        match state {
            State::Closed | State::ForcedClosed => Peek::Pass {
                generation,
                count: true,
            },
            State::Disabled => Peek::Pass {
                generation,
                count: false,
            },
            State::Open | State::HalfOpen | State::ForcedOpen => {
                let left = self.time_left();
                if left.is_zero() {
                    Peek::NeedsPermit
                } else {
                    Peek::Reject {
                        state,
                        retry_after: left,
                    }
                }
            }
        }
    }

    /// Marks the driver as started; `false` if it already was.
    pub(crate) fn claim_driver(&self) -> bool {
        !self.driver_started.swap(true, Ordering::AcqRel)
    }

    /// Lets a later call try to start the driver again (no runtime was found).
    pub(crate) fn release_driver_claim(&self) {
        self.driver_started.store(false, Ordering::Release);
    }

    /// Counts one outcome observed under `generation`.
    #[inline(always)]
    pub(crate) fn record(&self, generation: u64, outcome: Outcome, slow: bool) {
        let (_, current) = unpack(self.snapshot.load(Ordering::Relaxed));
        // Counted under a state that is gone: the store would drop it. Calls
        // admitted before the first sync (generation 0) count toward the first
        // generation heard of.
        if generation != current && generation != 0 {
            return;
        }
        let c = &self.counters;
        match outcome {
            Outcome::Ignore => return,
            Outcome::Success => {
                c.successes.fetch_add(1, Ordering::Relaxed);
                c.trailing_failures.store(0, Ordering::Relaxed);
            }
            Outcome::Failure => {
                c.failures.fetch_add(1, Ordering::Relaxed);
                c.trailing_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        if slow {
            c.slow.fetch_add(1, Ordering::Relaxed);
        }
        if outcome == Outcome::Failure || slow {
            self.wake.notify_one();
        }
    }

    /// Whether outcomes wait to be handed to the store.
    pub(crate) fn has_outcomes(&self) -> bool {
        let c = &self.counters;
        c.successes.load(Ordering::Relaxed) != 0 || c.failures.load(Ordering::Relaxed) != 0
    }

    /// Takes the counted outcomes as a batch for the current generation.
    pub(crate) fn take_batch(&self) -> OutcomeBatch {
        let (_, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        let c = &self.counters;
        // Take the run of failures first: a success racing with the swaps can
        // only make the run shorter than it was, never longer.
        let trailing_failures = c.trailing_failures.swap(0, Ordering::Relaxed);
        let successes = c.successes.swap(0, Ordering::Relaxed);
        let failures = c.failures.swap(0, Ordering::Relaxed);
        OutcomeBatch {
            generation,
            successes,
            failures,
            slow: c.slow.swap(0, Ordering::Relaxed),
            trailing_failures: trailing_failures.min(failures),
        }
    }

    /// Adopts a snapshot from the store unless it is older than the one held.
    /// Counters of an older generation are discarded.
    pub(crate) fn apply(&self, snapshot: Snapshot) {
        let mut current = self.snapshot.load(Ordering::Acquire);
        loop {
            let (_, generation) = unpack(current);
            if snapshot.generation < generation {
                return;
            }
            // The deadline is written before the state it belongs to is published.
            self.set_deadline(snapshot.remaining);
            let next = pack(snapshot.state, snapshot.generation);
            match self.snapshot.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if snapshot.generation != generation {
                        if generation != 0 {
                            self.take_batch();
                        }
                        let (from, _) = unpack(current);
                        tracing::debug!(
                            breaker = %self.name,
                            from = %from,
                            to = %snapshot.state,
                            generation = snapshot.generation,
                            "breaker transition"
                        );
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// The snapshot the hot path works from.
    pub(crate) fn current(&self) -> Snapshot {
        let (state, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        Snapshot {
            state,
            generation,
            remaining: self.time_left(),
        }
    }

    /// Asks the store for a probe permit. At most one request per process is in
    /// flight; concurrent callers are rejected meanwhile.
    pub(crate) async fn acquire(self: Arc<Self>) -> Result<Admission, CircuitOpen> {
        if self.probing.swap(true, Ordering::AcqRel) {
            let (state, _) = unpack(self.snapshot.load(Ordering::Acquire));
            return Err(self.open_error(state, Duration::ZERO));
        }
        let _clear = ClearOnDrop(&self.probing);
        if self.fallback.is_degraded() {
            return self.degraded_admission();
        }
        let answer = tokio::time::timeout(
            self.policy.store_timeout(),
            self.store.acquire(&self.name, &self.policy),
        )
        .await;
        match answer {
            Ok(Ok(acquired)) => {
                self.apply(acquired.snapshot);
                let snapshot = acquired.snapshot;
                match acquired.lease {
                    Some(lease) => Ok(Admission::Probe(Box::new(ProbePermit::new(
                        self.clone(),
                        snapshot.generation,
                        lease,
                    )))),
                    None if snapshot.state.admits_freely() => Ok(Admission::Pass {
                        generation: snapshot.generation,
                        count: snapshot.state != State::Disabled,
                    }),
                    None => Err(self.open_error(snapshot.state, snapshot.remaining)),
                }
            }
            Ok(Err(error)) => {
                self.store_lost(&error);
                self.degraded_admission()
            }
            Err(_elapsed) => {
                self.store_lost(&"timed out");
                self.degraded_admission()
            }
        }
    }

    /// Admission while the store is unreachable, by the chosen [`StoreFailure`].
    fn degraded_admission(self: &Arc<Self>) -> Result<Admission, CircuitOpen> {
        let (state, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        let pass = Admission::Pass {
            generation,
            count: true,
        };
        match self.fallback.mode() {
            StoreFailure::FailOpen => Ok(pass),
            StoreFailure::FailClosed => {
                Err(self.open_error(State::ForcedOpen, self.policy.sync_interval()))
            }
            StoreFailure::Local => {
                let Some(acquired) = self.fallback.acquire(self.policy.params()) else {
                    return Ok(pass); // the store came back meanwhile
                };
                let snapshot = acquired.snapshot;
                self.apply_local(snapshot);
                match acquired.lease {
                    Some(lease) => Ok(Admission::Probe(Box::new(ProbePermit::local(
                        self.clone(),
                        snapshot.generation,
                        lease,
                    )))),
                    None if snapshot.state.admits_freely() => Ok(pass),
                    None => Err(self.open_error(state, snapshot.remaining)),
                }
            }
        }
    }

    /// The store failed us: decide alone until it answers again (logged once
    /// per episode).
    pub(crate) fn store_lost(&self, error: &dyn std::fmt::Display) {
        if self.fallback.enter(self.current()) {
            tracing::warn!(
                breaker = %self.name,
                %error,
                mode = ?self.fallback.mode(),
                "store unreachable; deciding alone until it answers"
            );
        }
    }

    /// The store answered: adopt its state (even over what was decided alone).
    pub(crate) fn store_back(&self, snapshot: Snapshot) {
        if self.fallback.leave() {
            tracing::info!(breaker = %self.name, state = %snapshot.state, "store reachable again; following the shared state");
            self.overwrite(snapshot.state, snapshot.generation, snapshot.remaining);
        } else {
            self.apply(snapshot);
        }
    }

    /// Counts a batch in the private breaker (degraded `Local` mode).
    pub(crate) fn record_locally(&self, batch: &OutcomeBatch) {
        if let Some(snapshot) = self.fallback.record(self.policy.params(), batch) {
            self.apply_local(snapshot);
        }
    }

    /// Shows the private breaker's state under the generation last heard from
    /// the store, so that outcomes keep counting and the store's next answer
    /// (same generation or newer) replaces it.
    pub(crate) fn apply_local(&self, local: Snapshot) {
        let (_, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        self.overwrite(local.state, generation, local.remaining);
    }

    /// Publishes a state whatever the generation held (only degraded mode,
    /// entering or leaving, may do that).
    fn overwrite(&self, state: State, generation: u64, remaining: Duration) {
        self.set_deadline(remaining);
        self.snapshot
            .store(pack(state, generation), Ordering::Release);
    }

    /// Ends the current rejection `remaining` from now; written before the
    /// state it belongs to is published.
    fn set_deadline(&self, remaining: Duration) {
        let deadline = self.now_nanos().saturating_add(nanos(remaining));
        self.deadline.store(deadline, Ordering::Release);
    }

    pub(crate) fn open_error(&self, state: State, retry_after: Duration) -> CircuitOpen {
        CircuitOpen::new(self.name.clone(), state, retry_after)
    }

    fn time_left(&self) -> Duration {
        let deadline = self.deadline.load(Ordering::Acquire);
        Duration::from_nanos(deadline.saturating_sub(self.now_nanos()))
    }

    fn now_nanos(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }
}

struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn pack(state: State, generation: u64) -> u64 {
    (generation << STATE_BITS) | state.code()
}

fn unpack(packed: u64) -> (State, u64) {
    // Only `pack` writes the word, so the code is always a valid state.
    let state = State::from_code(packed & STATE_MASK).unwrap_or(State::Closed);
    (state, packed >> STATE_BITS)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
