//! The background task of a replica: flushes counted outcomes to the store in
//! batches, applies transitions the store announces, and refreshes the shared
//! state as a backstop for missed announcements.
//!
//! It holds only a weak reference between wake-ups, so it ends by itself once
//! every layer and service of its breaker is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::machine::IMPLICIT_GENERATION;
use crate::store::OutcomeBatch;
use crate::sync::degraded::merge;
use crate::sync::replica::Replica;
use crate::{Snapshot, State};

/// Early flushes (a failure, or a success that ended a run of failures) are
/// spaced by a gap that starts at `FIRST_GAP` and doubles with each early
/// flush within one sync interval, up to `sync_interval / MAX_GAP_DIVISOR`:
/// the first failures of an outage reach the store within milliseconds, while
/// a steady trickle of failures costs about as few store calls as a fixed gap
/// of `sync_interval / 20` would. A local trip is reported at once.
const FIRST_GAP: Duration = Duration::from_millis(2);
const MAX_GAP_DIVISOR: u32 = 20;

/// A closed breaker with traffic but no failures re-reads the shared state
/// every this many ticks (a backstop for changes nobody announced, like a
/// restored key); one without traffic never does.
const QUIET_REFRESH_TICKS: u32 = 10;

/// While the store is unreachable, tries are spaced out up to this many ticks.
const MAX_RETRY_TICKS: u32 = 8;

/// Starts the driver of `replica` if it is not running and a tokio runtime is
/// at hand; otherwise a later call tries again.
pub(crate) fn start(replica: &Arc<Replica>) {
    if !replica.claim_driver() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        replica.release_driver_claim();
        no_runtime(replica);
        return;
    };
    runtime.spawn(run(Arc::downgrade(replica)));
}

/// Says, once per breaker, that it is used outside a tokio runtime: it then
/// judges its own outcomes (it still trips at its threshold) but cannot reach
/// its store, and runs calls without their call timeout.
pub(crate) fn no_runtime(replica: &Replica) {
    if replica.warn_no_runtime() {
        tracing::error!(
            breaker = %replica.name,
            "used outside a tokio runtime: deciding from this process's outcomes only, without the store and without call timeouts; run it inside a tokio runtime with the time driver enabled"
        );
    }
}

enum Wake {
    Tick,
    Flush,
    Mail,
}

async fn run(weak: Weak<Replica>) {
    let (wake, mail, sync) = match weak.upgrade() {
        Some(r) => {
            r.hub.start();
            (r.wake.clone(), r.mail.clone(), r.policy.sync_interval())
        }
        None => return,
    };
    let mut tick = tokio::time::interval(sync);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let max_gap = (sync / MAX_GAP_DIVISOR).max(FIRST_GAP);
    let mut early_flushes = 0u32;
    let mut last_flush: Option<Instant> = None;
    // An idle breaker does not tick: a call, a failure or an announcement
    // wakes it.
    let mut idle = false;
    let mut quiet_ticks = 0u32;
    // Ticks between tries while the store is unreachable, and ticks to go.
    let mut retry_wait = 1u32;
    let mut retry_in = 0u32;
    loop {
        // Biased (announcements, then the tick, then early flushes) rather
        // than tokio's random pick among ready branches: one order, so that a
        // simulation seed replays exactly; announcements are rare and cheap.
        let why = tokio::select! {
            biased;
            () = mail.notified() => Wake::Mail,
            _ = tick.tick(), if !idle => Wake::Tick,
            () = wake.notified() => Wake::Flush,
        };
        let Some(replica) = weak.upgrade() else {
            return;
        };
        deliver_events(&replica);
        // A call or a failure means activity: tick again.
        if idle && matches!(why, Wake::Flush) {
            idle = false;
            replica.wake_up();
        }
        match why {
            Wake::Tick if replica.degraded.is_degraded() && retry_in > 0 => {
                // Backing off from an unreachable store; decide locally meanwhile.
                retry_in -= 1;
                decide_locally(&replica, replica.take_batch());
            }
            Wake::Tick => {
                // A closed breaker without failures relies on announcements
                // (and a resync whenever they may have been missed): idle
                // breakers cost the store nothing. Any other state re-reads
                // every tick; a replica that never heard from the store asks
                // at once.
                early_flushes = 0;
                let current = replica.current();
                let busy = current.state != State::Closed
                    || current.generation == 0
                    || replica.is_local()
                    || replica.degraded.is_degraded();
                quiet_ticks = if busy { 0 } else { quiet_ticks + 1 };
                let refresh = busy || quiet_ticks >= QUIET_REFRESH_TICKS;
                if refresh {
                    quiet_ticks = 0;
                }
                // No call since the last tick: sleep until one comes.
                if !refresh && replica.fall_asleep() {
                    idle = true;
                    continue;
                }
                // A replica without a first answer asks once: a call asking
                // already will bring it; calls that come while this one asks
                // wait for it.
                let first = if current.generation == 0 && !replica.degraded.is_degraded() {
                    match replica.claim_first_read() {
                        Some(claim) => Some(claim),
                        None => continue,
                    }
                } else {
                    None
                };
                let hub = replica.hub.clone();
                let _turn = match first {
                    Some(_) => hub.crowd_read(replica.policy.store_timeout()).await,
                    None => None,
                };
                // While a degraded replica waits on the store, failures are
                // still decided locally at once.
                let attempt = sync_once(&replica, refresh);
                tokio::pin!(attempt);
                loop {
                    tokio::select! {
                        biased;
                        _ = &mut attempt => break,
                        () = wake.notified(), if replica.degraded.is_degraded() => {
                            decide_locally(&replica, replica.take_batch());
                        }
                    }
                }
                drop(first);
                // Still unreachable: wait twice as many ticks before the next
                // try (up to MAX_RETRY_TICKS), so a struggling store is not
                // hammered by a whole fleet.
                if replica.degraded.is_degraded() {
                    retry_wait = (retry_wait * 2).min(MAX_RETRY_TICKS);
                    retry_in = retry_wait - 1;
                } else {
                    retry_wait = 1;
                }
            }
            Wake::Flush => {
                if !replica.urgent() {
                    let gap = FIRST_GAP
                        .saturating_mul(1 << early_flushes.min(16))
                        .min(max_gap);
                    early_flushes = early_flushes.saturating_add(1);
                    if let Some(at) = last_flush {
                        wait_unless_tripped(&replica, &wake, at + gap).await;
                    }
                }
                sync_once(&replica, false).await;
            }
            Wake::Mail => {
                let inbox = replica.take_mail();
                for made in &inbox.made {
                    replica.made(made);
                }
                deliver_events(&replica);
                // Announcements were missed: a closed breaker forgets what
                // it knew and asks again with its next call (asleep or not);
                // thousands of idle keyed breakers cost nothing.
                if inbox.resync && replica.forget_closed() {
                    continue;
                }
                if idle {
                    idle = false;
                    replica.wake_up();
                }
                if inbox.resync {
                    resync(&replica).await;
                } else if inbox
                    .transition
                    .is_some_and(|transition| !hinted(&replica, transition))
                {
                    sync_once(&replica, true).await;
                } else {
                    continue;
                }
            }
        }
        deliver_events(&replica);
        last_flush = Some(Instant::now());
    }
}

/// Hands what happened to the breaker to its listener and metrics.
fn deliver_events(replica: &Replica) {
    replica.observer.deliver(&replica.name);
}

/// Applies an announcement if it is the next generation; `false` when the
/// shared state must be read instead. While degraded only our own
/// connection's answers count. The break counts from when the announcement
/// arrived, however long it waited here.
/// A degraded replica reads instead: an announcement proves the store is
/// back. A first transition's jump from the implicit generation is applied
/// at once and checked with a read.
fn hinted(replica: &Replica, transition: crate::Transition) -> bool {
    let waited = transition.received.elapsed();
    let snapshot = Snapshot {
        remaining: transition.snapshot.remaining.saturating_sub(waited),
        ..transition.snapshot
    };
    if replica.degraded.is_degraded() {
        return false;
    }
    let first = replica.current().generation == IMPLICIT_GENERATION;
    replica.apply_hint(snapshot) && !first
}

/// Re-reads after announcements may have been missed, for a breaker that is
/// not simply closed (those forget instead): waits its turn among the
/// process's crowd of reads, so that they do not queue behind each other
/// past `store_timeout`.
async fn resync(replica: &Replica) {
    let hub = replica.hub.clone();
    let _turn = hub.crowd_read(replica.policy.store_timeout()).await;
    sync_once(replica, true).await;
}

/// Waits until `until`, or less if something must be reported at once.
async fn wait_unless_tripped(replica: &Replica, wake: &tokio::sync::Notify, until: Instant) {
    if until <= Instant::now() {
        return;
    }
    let sleep = tokio::time::sleep_until(until);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            () = &mut sleep => return,
            () = wake.notified() => {
                if replica.urgent() {
                    return;
                }
            }
        }
    }
}

/// Hands the counted outcomes (and any left from an outage) to the store, or
/// (with nothing to hand over and `refresh` set) reads the shared state.
/// Returns whether the store answered. While the store is unreachable the
/// outcomes go to the private breaker at once and are kept for the store,
/// which is retried on `refresh` only.
pub(crate) async fn sync_once(replica: &Replica, refresh: bool) -> bool {
    let mut batch = replica.take_batch();
    if replica.degraded.is_degraded() {
        decide_locally(replica, batch);
        if !refresh {
            return false;
        }
        batch = OutcomeBatch::default(); // kept in the backlog already
    }
    let send = merge(
        replica.degraded.take_backlog(replica.policy.window()),
        batch,
    );
    // Healthy traffic under a runs-only policy: nothing the store needs.
    let send = if replica.nothing_to_say(&send) {
        OutcomeBatch::default()
    } else {
        send
    };
    if send.is_empty() && !refresh {
        return true;
    }
    let timeout = replica.policy.store_timeout();
    let ticket = replica.ticket();
    let answer = if send.is_empty() {
        let read = replica.store.snapshot(&replica.name, &replica.policy);
        tokio::time::timeout(timeout, read).await
    } else {
        let record = replica.store.record(&replica.name, &replica.policy, send);
        tokio::time::timeout(timeout, record).await
    };
    let error: &dyn std::fmt::Display = match &answer {
        Ok(Ok(snapshot)) => {
            replica.store_back(ticket, *snapshot);
            return true;
        }
        Ok(Err(error)) => error,
        Err(_) => &"timed out",
    };
    replica.degraded.keep_backlog(send);
    if !replica.degraded.is_degraded() {
        replica.store_lost(error);
        replica.record_locally(&batch);
    }
    false
}

/// Counts a batch in the private breaker and keeps it for the store.
fn decide_locally(replica: &Replica, batch: OutcomeBatch) {
    replica.record_locally(&batch);
    replica.degraded.keep_backlog(batch);
}
