//! What a process does while its store cannot be reached: by default it keeps
//! a private breaker with the same policy, so the breaker never becomes the
//! outage and never stops protecting the dependency either.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use crate::machine::Machine;
use crate::policy::Params;
use crate::rand::rand16;
use crate::store::{Acquired, OutcomeBatch, ProbeResult};
use crate::{Snapshot, State};

/// How a breaker decides while its store is unreachable, slow or refusing.
///
/// In every mode, a request waits on the store at most the policy's
/// `store_timeout`, the breaker logs once when the store is lost and once when
/// it is back, retries every `sync_interval`, and on recovery hands the store
/// what it counted meanwhile and adopts the shared state again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreFailure {
    /// Decide alone, from this process's own counts, with the same policy: a
    /// plain local circuit breaker until the store answers again (the default).
    #[default]
    Local,
    /// Let every call through while the store is unreachable.
    FailOpen,
    /// Reject every call while the store is unreachable (the
    /// [`CircuitOpen`](crate::CircuitOpen) says [`State::ForcedOpen`] and
    /// retry after one sync interval).
    FailClosed,
}

impl StoreFailure {
    fn code(self) -> u8 {
        match self {
            StoreFailure::Local => 0,
            StoreFailure::FailOpen => 1,
            StoreFailure::FailClosed => 2,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => StoreFailure::FailOpen,
            2 => StoreFailure::FailClosed,
            _ => StoreFailure::Local,
        }
    }
}

/// The degraded-mode state of one replica.
#[derive(Debug)]
pub(crate) struct Degraded {
    degraded: AtomicBool,
    mode: AtomicU8,
    /// The private breaker, present while degraded in `Local` mode. Locked only
    /// off the closed hot path (flushes, probe permits).
    local: Mutex<Option<Machine>>,
    /// Outcomes counted while the store could not take them, and when the
    /// oldest of them was kept.
    backlog: Mutex<(OutcomeBatch, Option<Instant>)>,
    /// Lease ids of the private breaker's permits.
    next_lease: AtomicU64,
    epoch: Instant,
}

impl Degraded {
    pub(crate) fn new() -> Self {
        Degraded {
            degraded: AtomicBool::new(false),
            mode: AtomicU8::new(StoreFailure::Local.code()),
            local: Mutex::new(None),
            backlog: Mutex::new((OutcomeBatch::default(), None)),
            next_lease: AtomicU64::new(1),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn set_mode(&self, mode: StoreFailure) {
        self.mode.store(mode.code(), Ordering::Relaxed);
    }

    pub(crate) fn mode(&self) -> StoreFailure {
        StoreFailure::from_code(self.mode.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Starts deciding alone from `current`; `false` if already degraded.
    pub(crate) fn enter(&self, current: Snapshot) -> bool {
        if self.degraded.swap(true, Ordering::AcqRel) {
            return false;
        }
        let now = self.now();
        let mut machine = Machine::new(now);
        match current.state {
            State::Closed => {}
            // An open or half-open breaker stays open locally until its break
            // ends; then one local probe decides.
            State::Open | State::HalfOpen => {
                machine.state = State::Open;
                machine.open_until = now + millis(current.remaining);
                machine.opens = 1;
            }
            // An operator's command stands until the store is back.
            forced => machine.state = forced,
        }
        *self.lock() = Some(machine);
        true
    }

    /// Stops deciding alone; `false` if it was not degraded.
    pub(crate) fn leave(&self) -> bool {
        if !self.degraded.swap(false, Ordering::AcqRel) {
            return false;
        }
        *self.lock() = None;
        true
    }

    /// Counts a batch in the private breaker; its state after, if degraded.
    pub(crate) fn record(&self, p: &Params, batch: &OutcomeBatch) -> Option<Snapshot> {
        let now = self.now();
        let mut guard = self.lock();
        let machine = guard.as_mut()?;
        let batch = OutcomeBatch {
            generation: machine.generation,
            ..*batch
        };
        machine.record(p, now, &batch, rand16());
        Some(machine.snapshot(p, now))
    }

    /// Asks the private breaker for a probe permit, if degraded.
    pub(crate) fn acquire(&self, p: &Params) -> Option<Acquired> {
        let now = self.now();
        let mut guard = self.lock();
        let machine = guard.as_mut()?;
        let lease = self.next_lease.fetch_add(1, Ordering::Relaxed);
        Some(machine.acquire(p, now, lease))
    }

    /// Returns a private probe permit granted under `generation` (of the
    /// private breaker), if still degraded.
    pub(crate) fn release(
        &self,
        p: &Params,
        generation: u64,
        lease: u64,
        result: ProbeResult,
    ) -> Option<Snapshot> {
        let now = self.now();
        let mut guard = self.lock();
        let machine = guard.as_mut()?;
        machine.release(p, now, generation, lease, result, rand16());
        Some(machine.snapshot(p, now))
    }

    /// Takes the outcomes the store has not taken yet, unless they are older
    /// than `window`: outcomes that left the window must not trip a breaker
    /// that has recovered meanwhile.
    pub(crate) fn take_backlog(&self, window: std::time::Duration) -> OutcomeBatch {
        let (batch, since) = std::mem::take(&mut *self.backlog());
        match since {
            Some(since) if since.elapsed() >= window => {
                tracing::debug!(
                    outcomes = batch.successes + batch.failures,
                    "dropping outcomes kept for longer than the window"
                );
                OutcomeBatch::default()
            }
            _ => batch,
        }
    }

    /// Keeps outcomes the store could not take, to hand over on recovery.
    /// They keep the generation they were counted under (the store drops
    /// them if the breaker moved on; outcomes of another generation kept
    /// earlier are dropped here), count toward the window but neither extend
    /// nor break the fleet's run of failures (their times are not known any
    /// more), and a local trip in them is not replayed.
    pub(crate) fn keep_backlog(&self, batch: OutcomeBatch) {
        if batch.is_empty() {
            return;
        }
        let mut guard = self.backlog();
        let (backlog, since) = &mut *guard;
        if backlog.generation != batch.generation {
            *backlog = OutcomeBatch::default();
            *since = None;
        }
        let merged = merge(*backlog, batch);
        *backlog = OutcomeBatch {
            generation: batch.generation,
            success_age_ms: OutcomeBatch::UNKNOWN_AGE,
            run_age_ms: OutcomeBatch::UNKNOWN_AGE,
            tripped: false,
            counted_age_ms: 0,
            ..merged
        };
        since.get_or_insert_with(Instant::now);
    }

    fn backlog(&self) -> MutexGuard<'_, (OutcomeBatch, Option<Instant>)> {
        self.backlog.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Machine>> {
        // Nothing panics while the lock is held; a poisoned lock still holds a
        // consistent machine.
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Two batches as one, `later` after `earlier`. Outcomes of another
/// generation than `later`'s are dropped: the store would drop them.
pub(crate) fn merge(earlier: OutcomeBatch, later: OutcomeBatch) -> OutcomeBatch {
    if later.is_empty() {
        return earlier;
    }
    if earlier.is_empty() || earlier.generation != later.generation {
        return later;
    }
    OutcomeBatch {
        generation: later.generation,
        successes: earlier.successes.saturating_add(later.successes),
        failures: earlier.failures.saturating_add(later.failures),
        slow: earlier.slow.saturating_add(later.slow),
        trailing_failures: if later.successes > 0 {
            later.trailing_failures
        } else {
            earlier.trailing_failures.saturating_add(later.failures)
        },
        success_age_ms: OutcomeBatch::UNKNOWN_AGE,
        run_age_ms: OutcomeBatch::UNKNOWN_AGE,
        instance: later.instance,
        tripped: false,
        counted_age_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::tests::batch;

    #[test]
    fn merged_batches_keep_the_run_of_failures() {
        let empty = OutcomeBatch::default();
        assert_eq!(merge(empty, batch(7, 1, 2, 2)), batch(7, 1, 2, 2));
        let counts = |b: OutcomeBatch| (b.generation, b.successes, b.failures, b.trailing_failures);
        assert_eq!(
            counts(merge(batch(7, 1, 2, 2), batch(7, 0, 3, 3))),
            (7, 1, 5, 5)
        );
        assert_eq!(
            counts(merge(batch(7, 1, 2, 2), batch(7, 2, 3, 1))),
            (7, 3, 5, 1)
        );
        assert_eq!(
            counts(merge(batch(6, 1, 2, 2), batch(7, 2, 3, 1))),
            (7, 2, 3, 1),
            "another generation's outcomes are dropped"
        );
        // Merged outcomes no longer know when they happened.
        let merged = merge(batch(7, 1, 2, 2), batch(7, 2, 3, 1));
        assert_eq!(merged.success_age_ms, OutcomeBatch::UNKNOWN_AGE);
        assert_eq!(merged.run_age_ms, OutcomeBatch::UNKNOWN_AGE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_keeps_its_generation_and_expires_with_the_window() {
        let f = Degraded::new();
        let window = std::time::Duration::from_secs(10);
        f.keep_backlog(batch(7, 1, 2, 2));
        f.keep_backlog(batch(8, 0, 1, 1));
        let kept = f.take_backlog(window);
        assert_eq!(
            (kept.generation, kept.failures),
            (8, 1),
            "generation 7 was dropped"
        );
        assert_eq!(kept.run_age_ms, OutcomeBatch::UNKNOWN_AGE);
        f.keep_backlog(batch(8, 0, 3, 3));
        tokio::time::advance(window).await;
        assert!(f.take_backlog(window).is_empty(), "older than the window");
    }

    #[test]
    fn a_private_breaker_trips_and_probes_alone() {
        let p = *crate::Policy::builder()
            .consecutive_failures(2)
            .build()
            .unwrap()
            .params();
        let f = Degraded::new();
        assert!(
            f.record(&p, &batch(0, 0, 2, 2)).is_none(),
            "not degraded yet"
        );
        assert!(f.enter(Snapshot::INITIAL));
        assert!(!f.enter(Snapshot::INITIAL), "entering twice is one episode");
        let s = f.record(&p, &batch(0, 0, 2, 2)).unwrap();
        assert_eq!(s.state, State::Open);
        assert!(f.leave());
        assert!(!f.leave());
    }
}
