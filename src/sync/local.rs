//! Local judgement: each replica holds its own outcomes against the policy at
//! once, so a process never lets more failures through than a private breaker
//! would, whatever its call rate and however late the store answers.
//!
//! The run of consecutive failures is one atomic counter, judged on the failing
//! call itself. The rate rules need a window: the background task folds each
//! batch it hands to the store into a small ring of buckets and publishes the
//! window's sums; a failing (or slow) call adds the outcomes not folded yet and
//! judges at once. Successes cost nothing extra: a success can only lower a
//! rate (it is judged when folded, for the case where it completes the minimum
//! number of calls).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::events::{Cause, Rule};
use crate::machine::Bucket;
use crate::policy::Params;

/// The window of one replica's own outcomes.
#[derive(Debug, Default)]
pub(crate) struct LocalWindow {
    /// Written by whoever folds a batch (the background task, `Breaker::sync`).
    ring: Mutex<Vec<Bucket>>,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// Outcomes counted but not folded into the window yet.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pending {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl LocalWindow {
    /// Adds a batch's counts at `now_ms` and drops buckets that left the window.
    pub(crate) fn fold(&self, p: &Params, now_ms: u64, batch: Pending) {
        if !p.failure.is_on() && !p.slow.is_on() {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() != p.buckets as usize {
            *ring = vec![Bucket::default(); p.buckets as usize];
        }
        let index = now_ms / p.bucket_ms;
        let slot = &mut ring[(index % u64::from(p.buckets)) as usize];
        if slot.index != index {
            *slot = Bucket {
                index,
                ..Bucket::default()
            };
        }
        slot.calls += batch.calls;
        slot.failures += batch.failures;
        slot.slow += batch.slow;
        let oldest = (index + 1).saturating_sub(u64::from(p.buckets));
        let (mut calls, mut failures, mut slow) = (0, 0, 0);
        for b in ring
            .iter()
            .filter(|b| b.index >= oldest && b.index <= index)
        {
            calls += b.calls;
            failures += b.failures;
            slow += b.slow;
        }
        self.calls.store(calls, Ordering::Relaxed);
        self.failures.store(failures, Ordering::Relaxed);
        self.slow.store(slow, Ordering::Relaxed);
    }

    /// Starts the window over (the breaker changed state).
    pub(crate) fn clear(&self) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter_mut().for_each(|b| *b = Bucket::default());
        self.calls.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.slow.store(0, Ordering::Relaxed);
    }

    /// Whether a rate rule fires on the window plus `pending`.
    #[cfg(test)]
    pub(crate) fn over(&self, p: &Params, pending: Pending) -> bool {
        self.judge(p, pending).is_some()
    }

    /// The rate rule that fires on the window plus `pending`, if one does,
    /// with the numbers it saw.
    pub(crate) fn judge(&self, p: &Params, pending: Pending) -> Option<Cause> {
        if !p.failure.is_on() && !p.slow.is_on() {
            return None;
        }
        let cause = self.numbers(pending);
        if cause.calls < u64::from(p.minimum_calls) || cause.calls == 0 {
            return None;
        }
        let rule = if p.failure.reached(cause.failures, cause.calls) {
            Rule::FailureRate
        } else if p.slow.reached(cause.slow, cause.calls) {
            Rule::SlowCallRate
        } else {
            return None;
        };
        Some(Cause { rule, ..cause })
    }

    /// The window's numbers plus `pending`.
    pub(crate) fn numbers(&self, pending: Pending) -> Cause {
        Cause {
            calls: self.calls.load(Ordering::Relaxed) + pending.calls,
            failures: self.failures.load(Ordering::Relaxed) + pending.failures,
            slow: self.slow.load(Ordering::Relaxed) + pending.slow,
            ..Cause::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Policy;

    #[test]
    fn the_window_judges_folded_and_pending_outcomes() {
        let p = *Policy::builder()
            .failure_rate(0.5)
            .minimum_calls(10)
            .window(Duration::from_secs(10))
            .window_buckets(10)
            .build()
            .unwrap()
            .params();
        let w = LocalWindow::default();
        w.fold(
            &p,
            0,
            Pending {
                calls: 6,
                failures: 2,
                slow: 0,
            },
        );
        assert!(
            !w.over(
                &p,
                Pending {
                    calls: 3,
                    failures: 2,
                    slow: 0
                }
            ),
            "9 calls"
        );
        assert!(
            w.over(
                &p,
                Pending {
                    calls: 4,
                    failures: 3,
                    slow: 0
                }
            ),
            "5 of 10"
        );
        // Ten seconds later the first batch has left the window.
        w.fold(
            &p,
            10_000,
            Pending {
                calls: 1,
                failures: 1,
                slow: 0,
            },
        );
        assert!(
            !w.over(
                &p,
                Pending {
                    calls: 4,
                    failures: 4,
                    slow: 0
                }
            ),
            "5 calls"
        );
        w.clear();
        assert!(!w.over(
            &p,
            Pending {
                calls: 9,
                failures: 9,
                slow: 0
            }
        ));
    }
}
