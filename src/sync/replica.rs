//! One process's view of one breaker: the lock-free snapshot the hot path reads
//! and the counters it writes.
//!
//! A closed call costs one atomic load to admit and one or two atomic
//! read-modify-writes to record; no lock, no allocation, no store round trip.
//! Every failure is judged here at once against the policy ([`crate::sync::local`]):
//! a replica opens itself on its own trip, exactly when a private breaker
//! would, and reports the trip to the store. The [`driver`](crate::sync::driver) task
//! hands the counters to the store in batches and feeds snapshots back through
//! [`Replica::apply`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::events::{Cause, Rule, Scope, TransitionEvent};
use crate::lanes::StripedCounter;
use crate::machine::{break_ms, IMPLICIT_GENERATION};
use crate::rand::{instance_id, rand16};
use crate::store::{OutcomeBatch, ProbeResult, Store};
use crate::sync::degraded::{Degraded, StoreFailure};
use crate::sync::hub::Hub;
use crate::sync::local::{LocalWindow, Pending};
use crate::sync::observer::Observer;
use crate::sync::permit::{Admission, ProbePermit};
use crate::{BreakerName, CircuitOpen, Outcome, Policy, Snapshot, State, Transition};

/// Failures in a row a replica must see before its run counts toward the
/// fleet's run: two, for thresholds of at least `CORROBORATED_FROM`; one for
/// smaller thresholds, whose users accept trips on short runs anyway (a
/// private breaker of threshold 3 trips on scattered failures too).
const CORROBORATION: u32 = 2;
const CORROBORATED_FROM: u32 = 4;

/// Low bits of the packed snapshot: the state code, then the local flag.
const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
/// Set while this replica is open (or probing) on its own judgement while the
/// store's state, of the same generation, is still closed.
const LOCAL: u64 = 1 << STATE_BITS;
const FLAG_BITS: u32 = STATE_BITS + 1;

/// The bits of an announcement's origin that number a replica's probe
/// leases; the rest is the replica's `instance`.
const ORIGIN_LOW: u64 = 0xFFFF;

/// What a change of the replica's state reports.
#[derive(Debug, Clone, Copy)]
enum Why {
    /// Nothing worth an event (same state seen by callers).
    Quiet,
    /// This replica's own judgement.
    Local(Cause),
    /// The store's state, adopted.
    Fleet(Cause),
}

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
#[derive(Debug)]
struct Counters {
    /// Written by every successful call: striped per thread (see `lanes`).
    successes: StripedCounter,
    failures: AtomicU32,
    slow: AtomicU32,
    /// This replica's own run of consecutive failures (not reset by a flush).
    run: AtomicU32,
    /// When the run started, and when a success last broke a run (nanoseconds
    /// since the replica's epoch): the store merges runs by these times.
    run_started: AtomicU64,
    run_broken: AtomicU64,
    /// How much of the current run the fleet's run already counted.
    counted: AtomicU32,
    /// When the last failure was counted (0: never).
    last_failure: AtomicU64,
    /// When the last batch was taken.
    taken: AtomicU64,
}

impl Counters {
    fn new(lanes: usize) -> Self {
        Counters {
            successes: StripedCounter::new(lanes),
            failures: AtomicU32::default(),
            slow: AtomicU32::default(),
            run: AtomicU32::default(),
            run_started: AtomicU64::default(),
            run_broken: AtomicU64::default(),
            counted: AtomicU32::default(),
            last_failure: AtomicU64::default(),
            taken: AtomicU64::default(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) name: BreakerName,
    pub(crate) policy: Policy,
    pub(crate) store: Arc<dyn Store>,
    /// Routes the store's announcements to this replica.
    pub(crate) hub: Arc<Hub>,
    /// Announcements for this replica, waiting for its driver.
    inbox: Mutex<Inbox>,
    /// Wakes the driver when the inbox has mail.
    pub(crate) mail: Arc<Notify>,
    /// `state code | generation << STATE_BITS`.
    snapshot: AtomicU64,
    /// When the current rejection ends, in nanoseconds since `epoch`.
    deadline: AtomicU64,
    /// Held by whoever publishes a new snapshot with its deadline, so that the
    /// two are always written as a pair (the hot path only reads them).
    writer: Mutex<()>,
    epoch: Instant,
    counters: Counters,
    /// The rate rules' window of this replica's own outcomes.
    window: LocalWindow,
    /// Opens on this replica's own judgement since it last closed (backoff).
    local_opens: AtomicU32,
    /// A local trip waits to be reported to the store.
    trip_pending: AtomicBool,
    /// The fleet's run changed here (a run of this replica joined it, or a
    /// success ended a run it counted): report it at once.
    break_pending: AtomicBool,
    /// This replica's id in the store's quorum counts (low 16 bits zero:
    /// its probe leases fill them, so an announcement's origin names it).
    instance: u64,
    /// Numbers this replica's probe leases.
    leases: AtomicU32,
    /// The generation of the half-open state this replica's health check
    /// brought about (0: none).
    pub(crate) health_passed: AtomicU64,
    /// A health check runs for this breaker.
    health_checked: AtomicBool,
    /// Tells the world what happens to this breaker.
    pub(crate) observer: Observer,
    /// Wakes calls waiting for the first answer of the store.
    synced: Notify,
    /// Wakes calls waiting (backpressure) for the state to change.
    changed: Notify,
    /// Tickets of this replica's own store calls, in the order they were
    /// asked, and the last ticket issued when the state held now was
    /// adopted: an answer to a question asked after that is authoritative.
    issued: AtomicU64,
    adopted_at: AtomicU64,
    /// A probe-permit request to the store is in flight from this process.
    probing: AtomicBool,
    /// The driver sleeps without ticking until a call wakes it.
    asleep: AtomicBool,
    /// Sweeps of a keyed registry since a call last used this breaker.
    idle_sweeps: AtomicU32,
    /// Wakes the driver for an early flush (a failure was counted).
    pub(crate) wake: Arc<Notify>,
    driver_started: AtomicBool,
    /// The "no tokio runtime" error was logged.
    no_runtime_logged: AtomicBool,
    /// Deciding alone while the store is unreachable.
    pub(crate) degraded: Degraded,
}

/// What the hub delivered and the driver has not handled yet.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// The latest transition announced for this breaker.
    pub(crate) transition: Option<Transition>,
    /// Announcements may have been missed: re-read the shared state.
    pub(crate) resync: bool,
    /// Transitions this replica's reports made (the fleet's events to tell).
    pub(crate) made: Vec<Transition>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        {
            let (state, _) = unpack(*self.snapshot.get_mut());
            let degraded = self.observer.is_degraded();
            crate::metrics::dropped(&self.observer.label, state, degraded);
        }
        self.hub.leave(&self.name);
        // A sleeping driver would never look again: let it see we are gone.
        self.wake.notify_one();
    }
}

impl Replica {
    /// A replica whose success counter is striped over `lanes` lanes (one
    /// for a keyed layer's many breakers, each lightly used; the cores for
    /// a layer's single breaker).
    pub(crate) fn new(
        name: BreakerName,
        policy: Policy,
        hub: Arc<Hub>,
        lanes: usize,
        observer: Observer,
    ) -> Self {
        Replica {
            name,
            policy,
            store: hub.store.clone(),
            hub,
            inbox: Mutex::new(Inbox::default()),
            mail: Arc::new(Notify::new()),
            snapshot: AtomicU64::new(pack(Snapshot::INITIAL.state, 0, false)),
            deadline: AtomicU64::new(0),
            writer: Mutex::new(()),
            epoch: Instant::now(),
            counters: Counters::new(lanes),
            window: LocalWindow::default(),
            local_opens: AtomicU32::new(0),
            trip_pending: AtomicBool::new(false),
            break_pending: AtomicBool::new(false),
            instance: (instance_id() & !ORIGIN_LOW).max(ORIGIN_LOW + 1),
            leases: AtomicU32::new(0),
            health_passed: AtomicU64::new(0),
            health_checked: AtomicBool::new(false),
            observer,
            synced: Notify::new(),
            changed: Notify::new(),
            issued: AtomicU64::new(0),
            adopted_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            asleep: AtomicBool::new(false),
            idle_sweeps: AtomicU32::new(0),
            wake: Arc::new(Notify::new()),
            driver_started: AtomicBool::new(false),
            no_runtime_logged: AtomicBool::new(false),
            degraded: Degraded::new(),
        }
    }

    /// A replica whose background task starts now (when a tokio runtime is at
    /// hand; otherwise on the first call), so it reads the shared state before
    /// its first call needs it.
    pub(crate) fn spawn(
        name: BreakerName,
        policy: Policy,
        hub: Arc<Hub>,
        listener: crate::sync::dispatch::Dispatcher,
    ) -> Arc<Self> {
        let observer = Observer::new(name.clone(), listener);
        let replica = Arc::new(Self::new(
            name,
            policy,
            hub,
            crate::lanes::count(),
            observer,
        ));
        replica.hub.join(&replica);
        crate::sync::driver::start(&replica);
        replica
    }

    /// The hot path's admission check.
    #[inline(always)]
    pub(crate) fn peek(self: &Arc<Self>) -> Peek {
        if !self.driver_started.load(Ordering::Relaxed) {
            crate::sync::driver::start(self);
        }
        let packed = self.snapshot.load(Ordering::Acquire);
        let (state, generation) = unpack(packed);
        let degraded = self.degraded.is_degraded();
        if degraded {
            match self.degraded.mode() {
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
            // Never heard from the store: ask it once before admitting
            // (bounded by `store_timeout`), unless it is known to be away.
            State::Closed if generation == 0 && !degraded => Peek::NeedsPermit,
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

    /// Whether the "no tokio runtime" error is still to be logged (once).
    pub(crate) fn warn_no_runtime(&self) -> bool {
        !self.no_runtime_logged.swap(true, Ordering::Relaxed)
    }

    /// Lets a later call try to start the driver again (no runtime was found).
    pub(crate) fn release_driver_claim(&self) {
        self.driver_started.store(false, Ordering::Release);
    }

    /// Counts one outcome observed under `generation`, and judges it.
    #[inline(always)]
    pub(crate) fn record(&self, generation: u64, outcome: Outcome, slow: bool) {
        let packed = self.snapshot.load(Ordering::Relaxed);
        let (_, current) = unpack(packed);
        // Counted under a state that is gone: the store would drop it. Calls
        // admitted before the first sync (generation 0, store unreachable)
        // count toward the first generation heard of.
        // The implicit breaker (the store holds no record) counts outcomes of
        // any generation, as the store does.
        if generation != current && generation != 0 && current != IMPLICIT_GENERATION {
            // Still a call the dependency answered.
            #[cfg(feature = "metrics")]
            self.observer.late(outcome, slow);
            return;
        }
        let c = &self.counters;
        match outcome {
            Outcome::Ignore => return,
            Outcome::Success => {
                c.successes.add(Ordering::SeqCst);
                if self.asleep.load(Ordering::SeqCst) {
                    self.rouse();
                }
                if c.run.load(Ordering::Relaxed) != 0 {
                    self.success_after_failure();
                }
            }
            Outcome::Failure => {
                c.failures.fetch_add(1, Ordering::Relaxed);
                let run = c.run.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                self.failed(run);
            }
        }
        if slow {
            c.slow.fetch_add(1, Ordering::Relaxed);
            if outcome != Outcome::Failure {
                self.judge_window();
                self.wake.notify_one();
            }
        }
    }

    /// A success that ends a run of failures.
    #[cold]
    fn success_after_failure(&self) {
        let c = &self.counters;
        if c.run.swap(0, Ordering::Relaxed) != 0 {
            c.run_broken.store(self.now_nanos(), Ordering::Relaxed);
            if c.counted.swap(0, Ordering::Relaxed) != 0 {
                // The fleet's run counted this run: say at once that it ended.
                self.break_pending.store(true, Ordering::Release);
            }
            self.wake.notify_one();
        }
    }

    /// The result of this replica's own probe (granted under `generation`):
    /// a success closes it again, a failure re-opens it (with backoff), and a
    /// cancelled or ignored probe lets the next call probe at once.
    pub(crate) fn own_probe_result(&self, generation: u64, result: ProbeResult) {
        let probing = pack(State::HalfOpen, generation, true);
        match result {
            ProbeResult::Success => {
                if self.publish_if(
                    probing,
                    pack(State::Closed, generation, false),
                    Duration::ZERO,
                    Why::Local(Cause::rule(Rule::ProbesSucceeded)),
                ) {
                    self.counters.run.store(0, Ordering::Relaxed);
                    self.counters.counted.store(0, Ordering::Relaxed);
                    self.local_opens.store(0, Ordering::Relaxed);
                    self.window.clear();
                }
            }
            ProbeResult::Failure => self.trip_locally(Cause::rule(Rule::ProbeFailed)),
            ProbeResult::Cancelled => {
                self.publish_if(
                    probing,
                    pack(State::Open, generation, true),
                    Duration::ZERO,
                    Why::Quiet,
                );
            }
        }
    }

    /// Judges a failure at once: the `run`-th in a row here.
    #[cold]
    fn failed(&self, run: u32) {
        let c = &self.counters;
        let now = self.now_nanos();
        c.last_failure.store(now, Ordering::Relaxed);
        if run == 1 {
            c.run_started.store(now, Ordering::Relaxed);
        }
        let p = self.policy.params();
        if p.consecutive > 0 && run >= p.consecutive {
            let mut cause = self.window.numbers(self.pending());
            cause.rule = Rule::ConsecutiveFailures;
            cause.run = run;
            self.trip_locally(cause);
        } else {
            self.judge_window();
        }
        if run == corroboration(p) {
            // The run now joins the fleet's run: report it without the gap.
            self.break_pending.store(true, Ordering::Release);
        }
        self.wake.notify_one();
    }

    /// Trips on the rate rules over the local window plus what is not folded yet.
    fn judge_window(&self) {
        if let Some(mut cause) = self.window.judge(self.policy.params(), self.pending()) {
            cause.run = self.counters.run.load(Ordering::Relaxed);
            self.trip_locally(cause);
        }
    }

    /// Outcomes counted and not folded into the window yet.
    fn pending(&self) -> Pending {
        let c = &self.counters;
        let failures = u64::from(c.failures.load(Ordering::Relaxed));
        Pending {
            calls: u64::from(c.successes.load(Ordering::Relaxed)) + failures,
            failures,
            slow: u64::from(c.slow.load(Ordering::Relaxed)),
        }
    }

    /// Opens this replica on its own judgement (a closed breaker, or a failed
    /// local probe) and has the trip reported to the store at once. Forced
    /// states and a breaker that is already open are left alone.
    fn trip_locally(&self, cause: Cause) {
        let packed = self.snapshot.load(Ordering::Acquire);
        let (state, generation) = unpack(packed);
        let trips = state == State::Closed || (state == State::HalfOpen && packed & LOCAL != 0);
        if !trips {
            return;
        }
        let opens = self
            .local_opens
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let open = pack(State::Open, generation, true);
        let remaining = Duration::from_millis(break_ms(self.policy.params(), opens, rand16()));
        if !self.publish_if(packed, open, remaining, Why::Local(cause)) {
            return; // the state moved meanwhile; whoever moved it decided
        }
        self.counters.run.store(0, Ordering::Relaxed);
        self.counters.counted.store(0, Ordering::Relaxed);
        self.window.clear();
        self.trip_pending.store(true, Ordering::Release);
        self.wake.notify_one();
        tracing::debug!(
            breaker = %self.name,
            generation,
            break_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
            "own break"
        );
    }

    /// Whether this replica is open or probing on its own judgement.
    pub(crate) fn is_local(&self) -> bool {
        self.snapshot.load(Ordering::Acquire) & LOCAL != 0
    }

    /// Hands an announcement to the driver (called by the hub).
    pub(crate) fn deliver(&self, transition: Transition) {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        if transition.origin != 0 && transition.origin & !ORIGIN_LOW == self.instance {
            // Made by this replica's report: the fleet's event is ours to tell.
            inbox.made.push(transition.clone());
        }
        inbox.transition = Some(transition);
        drop(inbox);
        self.mail.notify_one();
    }

    /// Reports a fleet-wide transition this replica made.
    pub(crate) fn made(&self, transition: &Transition) {
        let to = transition.snapshot.state;
        let from = transition.from.unwrap_or(State::Closed);
        let cause = match (from, to) {
            // Its own trip, or (merged counts) the batch of its that
            // tipped the fleet.
            (State::Closed, State::Open) => self
                .observer
                .last_trip()
                .or_else(|| self.observer.last_report())
                .unwrap_or(Cause::rule(Rule::FleetCounts)),
            (State::Open, State::HalfOpen)
                if self.health_passed.load(Ordering::Relaxed) == transition.snapshot.generation =>
            {
                Cause::rule(Rule::HealthCheckPassed)
            }
            (State::Open, State::HalfOpen) => Cause::rule(Rule::BreakEnded),
            (State::HalfOpen, State::Closed) => Cause::rule(Rule::ProbesSucceeded),
            (State::HalfOpen, State::Open) => Cause::rule(Rule::ProbeFailed),
            _ => Cause::rule(Rule::Learned),
        };
        self.observer.fleet_transition(
            &self.name,
            TransitionEvent {
                from,
                to,
                generation: transition.snapshot.generation,
                scope: Scope::Fleet,
                cause,
            },
        );
    }

    /// Marks the breaker as health-checked; `false` if it already was.
    pub(crate) fn claim_health_check(&self) -> bool {
        !self.health_checked.swap(true, Ordering::AcqRel)
    }

    /// This replica's id as the origin of what it asks the store.
    pub(crate) fn origin_id(&self) -> u64 {
        self.instance
    }

    /// The health check will report the open state of `generation - 1`
    /// healthy: the half-open `generation` is its doing.
    pub(crate) fn health_passed(&self, generation: u64) {
        self.health_passed.store(generation, Ordering::Relaxed);
    }

    /// The generation of the fleet's open state, if the breaker is open
    /// fleet-wide as far as this replica knows (not on its own judgement
    /// only, not forced, not while the store is away).
    pub(crate) fn fleet_open(&self) -> Option<u64> {
        let packed = self.snapshot.load(Ordering::Acquire);
        let (state, generation) = unpack(packed);
        (state == State::Open && packed & LOCAL == 0 && !self.degraded.is_degraded())
            .then_some(generation)
    }

    /// A new probe lease id: this replica's instance in the high bits, so
    /// that a transition the probe makes names this replica.
    fn lease_id(&self) -> u64 {
        let seq = u64::from(self.leases.fetch_add(1, Ordering::Relaxed)) % ORIGIN_LOW;
        self.instance | (seq + 1)
    }

    /// Tells the driver to re-read the shared state (called by the hub).
    pub(crate) fn deliver_resync(&self) {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .resync = true;
        self.mail.notify_one();
    }

    /// What the hub delivered since the last call.
    pub(crate) fn take_mail(&self) -> Inbox {
        std::mem::take(&mut *self.inbox.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The policy judges failures alone (no rate rule): successes matter to
    /// the store only to end runs of failures.
    fn counts_runs_only(&self) -> bool {
        let p = self.policy.params();
        !p.failure.is_on() && !p.slow.is_on()
    }

    /// This replica counted a failure within the last window.
    fn failed_lately(&self) -> bool {
        let last = self.counters.last_failure.load(Ordering::Relaxed);
        let window = u64::try_from(self.policy.window().as_nanos()).unwrap_or(u64::MAX);
        last != 0 && self.now_nanos().saturating_sub(last) < window
    }

    /// A call used this breaker (keyed registries drop breakers that go
    /// unused): a load, and a store only when a sweep went by since.
    #[inline(always)]
    pub(crate) fn touch(&self) {
        if self.idle_sweeps.load(Ordering::Relaxed) != 0 {
            self.idle_sweeps.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one more sweep without a call; returns how many in a row.
    pub(crate) fn idle_sweep(&self) -> u32 {
        self.idle_sweeps
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// After missed announcements: a breaker closed by the store's word (not
    /// tripped locally, not degraded) goes back to "never heard", so its
    /// next call asks the store first (as a newcomer's does). `false` for
    /// any other state, which must be read now.
    pub(crate) fn forget_closed(&self) -> bool {
        if self.degraded.is_degraded() {
            return false;
        }
        let _guard = self.write();
        let (state, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        if state != State::Closed || generation == 0 || self.is_local() {
            return false;
        }
        self.store_pair(pack(State::Closed, 0, false), Duration::ZERO, Why::Quiet);
        true
    }

    /// Claims the one request to the store a replica may have in flight
    /// for its first answer: calls that come meanwhile wait for this one's
    /// answer instead of asking too. `None` if a call is asking already.
    pub(crate) fn claim_first_read(&self) -> Option<ClearOnDrop<'_>> {
        if self.probing.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(ClearOnDrop(&self.probing))
    }

    /// Puts the driver to sleep if the breaker is idle: closed, in step with
    /// the store, no call since the last batch, nothing waiting, under a
    /// policy that needs no successes reported, and no failure within the
    /// window. An idle breaker costs neither the store nor this process
    /// anything; its next call wakes the driver ([`Self::record`]).
    pub(crate) fn fall_asleep(&self) -> bool {
        if !self.is_idle() {
            return false;
        }
        self.asleep.store(true, Ordering::SeqCst);
        // A call that counted before it could see the flag wakes us now.
        if self.counters.successes.load(Ordering::SeqCst) != 0 {
            self.asleep.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The driver ticks again.
    pub(crate) fn wake_up(&self) {
        self.asleep.store(false, Ordering::Relaxed);
    }

    /// The first call after the driver fell asleep wakes it.
    #[cold]
    fn rouse(&self) {
        if self.asleep.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    fn is_idle(&self) -> bool {
        let (state, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        state == State::Closed
            && generation != 0
            && !self.is_local()
            && !self.degraded.is_degraded()
            && self.counts_runs_only()
            && self.counters.failures.load(Ordering::Relaxed) == 0
            && self.counters.successes.load(Ordering::Relaxed) == 0
            && !self.trip_pending.load(Ordering::Relaxed)
            && !self.break_pending.load(Ordering::Relaxed)
            && !self.failed_lately()
    }

    /// A batch the store does not need: successes only, under a policy that
    /// counts runs only, from a replica that has not failed within the
    /// window (its successes end no run it took part in). Dropped instead
    /// of sent, so healthy traffic costs the store nothing.
    pub(crate) fn nothing_to_say(&self, batch: &OutcomeBatch) -> bool {
        batch.failures == 0
            && batch.slow == 0
            && batch.trailing_failures == 0
            && !batch.tripped
            && batch.generation != 0
            && self.counts_runs_only()
            && !self.failed_lately()
    }

    /// Whether something waits to be reported at once, without the gap
    /// between early flushes: a local trip, a run that joins the fleet's
    /// run, or the end of a run the fleet's run counted.
    pub(crate) fn urgent(&self) -> bool {
        self.trip_pending.load(Ordering::Relaxed) || self.break_pending.load(Ordering::Relaxed)
    }

    /// Takes the counted outcomes as a batch for the current generation, folds
    /// them into the local window, and judges the window once more (a success
    /// may have completed the minimum number of calls).
    pub(crate) fn take_batch(&self) -> OutcomeBatch {
        let (_, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        let c = &self.counters;
        let now = self.now_nanos();
        let previous = c.taken.swap(now, Ordering::Relaxed);
        self.break_pending.store(false, Ordering::Relaxed);
        let successes = c.successes.take();
        let failures = c.failures.swap(0, Ordering::Relaxed);
        let slow = c.slow.swap(0, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.observer
            .outcomes
            .add(u64::from(successes), u64::from(failures), u64::from(slow));
        // This replica's run joins the fleet's run only once it holds
        // `CORROBORATION` failures in a row (then whole, earlier batches'
        // failures included): one failure between successes is what any
        // healthy dependency shows now and then, and single failures from
        // many instances must not add up to a fleet-wide "run" whose
        // interleaved successes the store never heard of.
        let run = c.run.load(Ordering::Relaxed);
        let counted = c.counted.load(Ordering::Relaxed).min(run);
        let needed = corroboration(self.policy.params());
        let trailing_failures = if run >= needed {
            c.counted.store(run, Ordering::Relaxed);
            run - counted
        } else {
            0
        };
        // Every success of the batch came after the previous batch; the last
        // one came after the success that last broke a run, if that is later.
        let success_at = previous.max(c.run_broken.load(Ordering::Relaxed));
        // The uncounted part of the run starts where the run does, or (if
        // part of it was counted before) after the previous batch.
        let run_at = if counted == 0 {
            c.run_started.load(Ordering::Relaxed)
        } else {
            previous
        };
        let age = |at: u64| now.saturating_sub(at) / 1_000_000;
        let p = self.policy.params();
        // The batch's calls happened since the previous one: count them at
        // the middle of that span (at most half a sync interval off).
        let counted_age_ms = now.saturating_sub(previous) / 2 / 1_000_000;
        self.window.fold(
            p,
            (now / 1_000_000).saturating_sub(counted_age_ms),
            Pending {
                calls: u64::from(successes) + u64::from(failures),
                failures: u64::from(failures),
                slow: u64::from(slow),
            },
        );
        if let Some(mut cause) = self.window.judge(p, Pending::default()) {
            cause.run = c.run.load(Ordering::Relaxed);
            self.trip_locally(cause);
        }
        if failures > 0 {
            self.observer.reported(Cause {
                rule: Rule::FleetCounts,
                failures: u64::from(failures),
                slow: u64::from(slow),
                calls: u64::from(successes) + u64::from(failures),
                run,
            });
        }
        OutcomeBatch {
            generation,
            successes,
            failures,
            slow,
            trailing_failures,
            success_age_ms: age(success_at),
            run_age_ms: age(run_at),
            instance: self.instance,
            tripped: self.trip_pending.swap(false, Ordering::AcqRel),
            counted_age_ms,
        }
    }

    /// Drops the counted outcomes (they belong to a generation that is gone).
    fn discard_outcomes(&self) {
        let c = &self.counters;
        let _successes = c.successes.take();
        let _failures = c.failures.swap(0, Ordering::Relaxed);
        let _slow = c.slow.swap(0, Ordering::Relaxed);
        // Dropped for the store (another generation), still calls made.
        #[cfg(feature = "metrics")]
        self.observer.outcomes.add(
            u64::from(_successes),
            u64::from(_failures),
            u64::from(_slow),
        );
        c.run.store(0, Ordering::Relaxed);
        c.counted.store(0, Ordering::Relaxed);
        self.trip_pending.store(false, Ordering::Relaxed);
        self.local_opens.store(0, Ordering::Relaxed);
        self.window.clear();
    }

    /// Adopts a snapshot from the store unless it is older than the one held,
    /// or of the same generation while this replica is open on its own
    /// judgement (the store then still says closed: only a newer generation
    /// replaces a local trip). Counters of an older generation are discarded.
    pub(crate) fn apply(&self, snapshot: Snapshot) {
        let guard = self.write();
        let current = self.snapshot.load(Ordering::Acquire);
        let (_, generation) = unpack(current);
        if snapshot.generation < generation
            || (snapshot.generation == generation && current & LOCAL != 0)
        {
            return;
        }
        self.store_pair(
            pack(snapshot.state, snapshot.generation, false),
            snapshot.remaining,
            Why::Fleet(Cause::rule(Rule::Learned)),
        );
        drop(guard);
        if snapshot.generation != generation {
            if generation == 0 {
                self.synced.notify_waiters();
            } else {
                self.discard_outcomes();
            }
        }
    }

    /// Publishes `next` with its deadline if the snapshot is still `expected`.
    fn publish_if(&self, expected: u64, next: u64, remaining: Duration, why: Why) -> bool {
        let _guard = self.write();
        if self.snapshot.load(Ordering::Acquire) != expected {
            return false;
        }
        self.store_pair(next, remaining, why);
        true
    }

    /// Writes a deadline and then the snapshot it belongs to; the caller holds
    /// the writer lock.
    fn store_pair(&self, packed: u64, remaining: Duration, why: Why) {
        let deadline = self.now_nanos().saturating_add(nanos(remaining));
        self.deadline.store(deadline, Ordering::Release);
        let before = self.snapshot.swap(packed, Ordering::AcqRel);
        if before != packed {
            self.changed.notify_waiters();
            let ((from, _), (to, generation)) = (unpack(before), unpack(packed));
            let reported = match why {
                Why::Quiet => None,
                Why::Local(cause) => Some((Scope::Local, cause)),
                Why::Fleet(cause) => Some((Scope::Fleet, cause)),
            };
            let forced = |s: State| !matches!(s, State::Closed | State::Open | State::HalfOpen);
            let reported = reported.map(|(scope, mut cause)| {
                if cause.rule == Rule::Learned && (forced(from) || forced(to)) {
                    cause.rule = Rule::Operator;
                }
                (scope, cause)
            });
            if let Some((scope, cause)) = reported.filter(|_| from != to) {
                self.observer
                    .transition(&self.name, from, to, generation, scope, cause);
            }
        }
        self.adopted_at
            .store(self.issued.load(Ordering::Acquire), Ordering::Release);
    }

    fn write(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data, only the pairing of two atomic writes.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ticket for a store call about to be made; pass it to
    /// [`adopt`](Self::adopt) with the answer.
    pub(crate) fn ticket(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Adopts the store's answer to this replica's own call (asked with
    /// `ticket`). A newer generation is applied as any snapshot is. An older
    /// one means the store went back (a failover or restore lost writes, the
    /// key was re-created) or the state held now came from a false
    /// announcement: if the question was asked after that state was adopted,
    /// the answer is the truth and replaces it; an answer that is merely late
    /// (overtaken by a newer one) is ignored.
    pub(crate) fn adopt(&self, ticket: u64, snapshot: Snapshot) {
        let (held, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        if snapshot.generation >= generation {
            self.apply(snapshot);
            return;
        }
        if ticket <= self.adopted_at.load(Ordering::Acquire) {
            return;
        }
        if snapshot.generation == IMPLICIT_GENERATION
            && snapshot.state == State::Closed
            && held == State::Closed
            && !self.is_local()
        {
            // The store's record of this closed breaker expired (one window
            // without a write) or was deleted: same state, no record. Only
            // the generation changes; this replica's run, counts and window
            // stay (the store counts any batch against the implicit breaker).
            tracing::debug!(breaker = %self.name, held = generation, "the store no longer holds this closed breaker; following it");
            let _guard = self.write();
            // Unless a local trip came in between (it keeps its own state).
            if self.snapshot.load(Ordering::Acquire) == pack(State::Closed, generation, false) {
                self.store_pair(
                    pack(State::Closed, IMPLICIT_GENERATION, false),
                    Duration::ZERO,
                    Why::Quiet,
                );
            }
            return;
        }
        tracing::warn!(
            breaker = %self.name,
            held = generation,
            store = snapshot.generation,
            state = %snapshot.state,
            "the store's generation went back (failover, restore or re-created key); following the store"
        );
        self.overwrite(
            snapshot.state,
            snapshot.generation,
            snapshot.remaining,
            Why::Fleet(Cause::rule(Rule::Learned)),
        );
        self.discard_outcomes();
    }

    /// Applies an announcement of the store: a hint, not an answer. Only the
    /// next generation is applied directly; anything else (a gap after missed
    /// announcements, or a forged message) returns `false`, and the caller
    /// re-reads the shared state instead.
    pub(crate) fn apply_hint(&self, snapshot: Snapshot) -> bool {
        let (_, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        if (snapshot.generation == generation.saturating_add(1) && generation != 0)
            || (generation == IMPLICIT_GENERATION && plausible_first(snapshot.generation))
        {
            self.apply(snapshot);
            return true;
        }
        snapshot.generation <= generation
    }

    /// The snapshot the hot path works from.
    ///
    /// An open breaker whose break is over reads as half-open: the next call
    /// may be a probe (the store moves to half-open when one asks).
    pub(crate) fn current(&self) -> Snapshot {
        let (state, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        let remaining = self.time_left();
        let state = match state {
            State::Open if remaining.is_zero() => State::HalfOpen,
            state => state,
        };
        Snapshot {
            state,
            generation,
            remaining,
        }
    }

    /// Resolves when this replica's state changes or a probe permit it knew
    /// of was returned (calls waiting for the break to end ask again).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Wakes whoever waits in [`changed`](Self::changed).
    pub(crate) fn notify_changed(&self) {
        self.changed.notify_waiters();
    }

    /// Asks the store for a probe permit (or, never having heard from the
    /// store, for its state). At most one request per process is in flight;
    /// concurrent callers are rejected meanwhile, except before the first
    /// answer, when they wait for it (at most `store_timeout`).
    pub(crate) async fn acquire(self: Arc<Self>) -> Result<Admission, CircuitOpen> {
        if self.probing.swap(true, Ordering::AcqRel) {
            return self.wait_for_first_answer().await;
        }
        let _clear = ClearOnDrop(&self.probing);
        if tokio::runtime::Handle::try_current().is_err() {
            // The store cannot be reached without a runtime (and a tokio
            // timeout would panic): decide alone, as with the store down.
            crate::sync::driver::no_runtime(&self);
            self.store_lost(&"no tokio runtime");
        }
        if self.degraded.is_degraded() {
            if self.is_local() {
                // Tripped on its own outcomes: its own probe decides.
                let (_, generation) = unpack(self.snapshot.load(Ordering::Acquire));
                return Ok(self.probe_locally(generation));
            }
            return self.degraded_admission();
        }
        // The permit's id is ours before we ask: if the answer never reaches
        // us (timeout, cancelled call), the guard frees it blindly.
        // A first answer: one of many a new process may ask at once.
        let (_, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        let hub = self.hub.clone();
        let _turn = if generation == 0 {
            hub.crowd_read(self.policy.store_timeout()).await
        } else {
            None
        };
        let mut unanswered = Unanswered::new(self.clone(), self.lease_id());
        let ticket = self.ticket();
        let answer = tokio::time::timeout(
            self.policy.store_timeout(),
            self.store
                .acquire(&self.name, &self.policy, unanswered.lease),
        )
        .await;
        match answer {
            Ok(Ok(acquired)) => {
                unanswered.answered();
                let (_, generation) = unpack(self.snapshot.load(Ordering::Acquire));
                if self.is_local() && acquired.snapshot.generation == generation {
                    // The fleet is closed; this replica tripped alone and its
                    // break is over: one local probe decides. (A permit the
                    // store granted anyway goes back at once.)
                    if let Some(lease) = acquired.lease {
                        crate::sync::permit::release_in_background(
                            &self,
                            0,
                            lease,
                            ProbeResult::Cancelled,
                        );
                    }
                    return Ok(self.probe_locally(generation));
                }
                self.adopt(ticket, acquired.snapshot);
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

    /// Another call of this process is asking the store. Before the first
    /// answer, wait for it (bounded) and decide from it; otherwise this call
    /// is not the probe and is rejected.
    async fn wait_for_first_answer(&self) -> Result<Admission, CircuitOpen> {
        let deadline = Instant::now() + self.policy.store_timeout();
        let mut first = true;
        loop {
            let notified = self.synced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (state, generation) = unpack(self.snapshot.load(Ordering::Acquire));
            if generation != 0 {
                if first {
                    return Err(self.open_error(state, Duration::ZERO));
                }
                break;
            }
            first = false;
            // Woken without an answer (another waiter's reason, a breaker
            // that forgot): wait on, up to the deadline, unless degraded.
            if self.degraded.is_degraded()
                || tokio::time::timeout_at(deadline, notified).await.is_err()
            {
                break;
            }
        }
        let (state, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        match state {
            State::Closed | State::ForcedClosed if !self.is_local() => Ok(Admission::Pass {
                generation,
                count: true,
            }),
            State::Disabled => Ok(Admission::Pass {
                generation,
                count: false,
            }),
            _ => Err(self.open_error(state, self.time_left())),
        }
    }

    /// Lets one call through as this replica's own probe: other calls are
    /// rejected until it reports back (or is dropped), or until `probe_lease`
    /// if it never does.
    fn probe_locally(self: &Arc<Self>, generation: u64) -> Admission {
        let half_open = pack(State::HalfOpen, generation, true);
        {
            let _guard = self.write();
            self.store_pair(
                half_open,
                self.policy.probe_lease(),
                Why::Local(Cause::rule(Rule::BreakEnded)),
            );
        }
        Admission::Probe(Box::new(ProbePermit::own(self.clone(), generation)))
    }

    /// Admission while the store is unreachable, by the chosen [`StoreFailure`].
    fn degraded_admission(self: &Arc<Self>) -> Result<Admission, CircuitOpen> {
        let (state, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        let pass = Admission::Pass {
            generation,
            count: true,
        };
        match self.degraded.mode() {
            StoreFailure::FailOpen => Ok(pass),
            StoreFailure::FailClosed => {
                Err(self.open_error(State::ForcedOpen, self.policy.sync_interval()))
            }
            StoreFailure::Local => {
                let Some(acquired) = self.degraded.acquire(self.policy.params()) else {
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
        let entered = self.degraded.enter(self.current());
        // Calls waiting for a first answer decide without it now.
        self.synced.notify_waiters();
        if entered {
            self.observer.degraded(error.to_string());
            tracing::warn!(
                breaker = %self.name,
                %error,
                mode = ?self.degraded.mode(),
                "store unreachable; deciding alone until it answers"
            );
        }
    }

    /// The store answered a call asked with `ticket`: adopt its state (even
    /// over what was decided alone).
    pub(crate) fn store_back(&self, ticket: u64, snapshot: Snapshot) {
        if self.degraded.leave() {
            self.observer.recovered();
            tracing::info!(breaker = %self.name, state = %snapshot.state, "store reachable again; following the shared state");
            let (_, held) = unpack(self.snapshot.load(Ordering::Acquire));
            self.overwrite(
                snapshot.state,
                snapshot.generation,
                snapshot.remaining,
                Why::Fleet(Cause::rule(Rule::Learned)),
            );
            if held != snapshot.generation {
                // What was counted (or tripped on) alone belongs to a state
                // the fleet has left: it must not trip the one it is in.
                self.discard_outcomes();
            }
        } else {
            self.adopt(ticket, snapshot);
        }
    }

    /// Counts a batch in the private breaker (degraded `Local` mode).
    pub(crate) fn record_locally(&self, batch: &OutcomeBatch) {
        if let Some(snapshot) = self.degraded.record(self.policy.params(), batch) {
            self.apply_local(snapshot);
        }
    }

    /// Shows the private breaker's state under the generation last heard from
    /// the store, so that outcomes keep counting and the store's next answer
    /// (same generation or newer) replaces it.
    pub(crate) fn apply_local(&self, local: Snapshot) {
        let (_, generation) = unpack(self.snapshot.load(Ordering::Acquire));
        self.overwrite(
            local.state,
            generation,
            local.remaining,
            Why::Local(Cause::rule(Rule::Learned)),
        );
    }

    /// Publishes a state whatever the generation held (only degraded mode,
    /// entering or leaving, may do that).
    fn overwrite(&self, state: State, generation: u64, remaining: Duration, why: Why) {
        let _guard = self.write();
        self.store_pair(pack(state, generation, false), remaining, why);
    }

    /// The error of a call turned away (logged at `debug`; counted where
    /// the call is rejected).
    pub(crate) fn open_error(&self, state: State, retry_after: Duration) -> CircuitOpen {
        tracing::debug!(breaker = %self.name, state = state.as_str(), retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX), "call rejected");
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

/// A probe-permit request whose answer has not arrived: dropped so (timed
/// out, or the caller's future cancelled), it frees the permit blindly.
struct Unanswered {
    replica: Arc<Replica>,
    lease: u64,
    pending: bool,
}

impl Unanswered {
    fn new(replica: Arc<Replica>, lease: u64) -> Self {
        Self {
            replica,
            lease,
            pending: true,
        }
    }

    fn answered(&mut self) {
        self.pending = false;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.pending {
            crate::sync::permit::release_in_background(
                &self.replica,
                0,
                self.lease,
                crate::store::ProbeResult::Cancelled,
            );
        }
    }
}

pub(crate) struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How far a first transition's generation (the store's clock in
/// milliseconds when it happened) may be from this machine's clock for an
/// announcement of it to be taken on its word.
const PLAUSIBLE_SKEW_MS: u64 = 60 * 60 * 1000;
/// How far ahead of this machine's clock (the store's clock may run ahead a
/// little, never a forgery's half hour).
const PLAUSIBLE_AHEAD_MS: u64 = 5_000;

/// Whether `generation` looks like the first transition of a breaker the
/// store did not hold: it jumps from the implicit generation to the time it
/// happened. A forged or garbled generation far from now is read instead.
fn plausible_first(generation: u64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    generation <= now.saturating_add(PLAUSIBLE_AHEAD_MS)
        && generation >= now.saturating_sub(PLAUSIBLE_SKEW_MS)
}

/// The run a replica must see before it joins the fleet's run.
fn corroboration(p: &crate::policy::Params) -> u32 {
    if p.consecutive >= CORROBORATED_FROM {
        CORROBORATION
    } else {
        1
    }
}

fn pack(state: State, generation: u64, local: bool) -> u64 {
    (generation << FLAG_BITS) | if local { LOCAL } else { 0 } | state.code()
}

fn unpack(packed: u64) -> (State, u64) {
    // Only `pack` writes the word, so the code is always a valid state.
    let state = State::from_code(packed & STATE_MASK).unwrap_or(State::Closed);
    (state, packed >> FLAG_BITS)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
