//! Active health checks: while the fleet's breaker is open, one process
//! (whichever holds the turn in the store) runs the user's check on an
//! interval. A healthy answer moves the breaker to half-open at once, so the
//! break ends as soon as the dependency is back instead of when the timer
//! says; an unhealthy one keeps it open until the next check at least.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::events::Event;
use crate::store::HealthCheck;
use crate::sync::replica::Replica;

/// The user's check, boxed.
pub(crate) type CheckFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// A holder that stops asking hands the turn on after this many intervals.
const LEASE_INTERVALS: u32 = 3;

/// Runs `check` every `interval` while `replica`'s breaker is open
/// fleet-wide and this process holds the turn. Needs a tokio runtime.
pub(crate) fn start(replica: &Arc<Replica>, check: CheckFn, interval: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::error!(breaker = %replica.name, "a health check needs a tokio runtime: build the layer inside one; the check will not run");
        return;
    };
    runtime.spawn(run(Arc::downgrade(replica), check, interval));
}

async fn run(weak: Weak<Replica>, check: CheckFn, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(replica) = weak.upgrade() else {
            return;
        };
        let Some(generation) = replica.fleet_open() else {
            continue;
        };
        let ask = |report: Option<bool>| HealthCheck {
            holder: replica.origin_id(),
            lease: interval * LEASE_INTERVALS,
            report,
            generation,
            extend: interval,
        };
        // Whose turn is it?
        if !turn(&replica, ask(None)).await {
            continue;
        }
        let healthy = run_check(&replica, &check, interval).await;
        tracing::debug!(breaker = %replica.name, healthy, generation, "health check");
        replica.observer.push(Event::HealthChecked {
            healthy,
            generation,
        });
        replica.mail.notify_one();
        if healthy {
            // The half-open state this report brings is the next generation:
            // marked first, so that the announcement names the cause.
            replica.health_passed(generation + 1);
        }
        turn(&replica, ask(Some(healthy))).await;
    }
}

/// Runs the user's check on a task of its own, so that a check that panics
/// or hangs costs one check (counted unhealthy), never the checking: a
/// panic is caught (and logged once), a check still running after
/// `interval` is aborted.
async fn run_check(replica: &Replica, check: &CheckFn, interval: Duration) -> bool {
    let mut task = tokio::spawn(check());
    match tokio::time::timeout(interval, &mut task).await {
        Ok(Ok(healthy)) => healthy,
        Ok(Err(error)) => {
            if error.is_panic() && replica.observer.first_check_panic() {
                tracing::error!(breaker = %replica.name, "the health check panicked; counted unhealthy, checks go on (logged once)");
            }
            false
        }
        Err(_) => {
            task.abort();
            false
        }
    }
}

/// Asks the store for the turn (with a report); whether this process holds it.
async fn turn(replica: &Replica, check: HealthCheck) -> bool {
    let ticket = replica.ticket();
    let ask = replica.store.health(&replica.name, &replica.policy, check);
    match tokio::time::timeout(replica.policy.store_timeout(), ask).await {
        Ok(Ok(turn)) => {
            replica.adopt(ticket, turn.snapshot);
            turn.holder
        }
        Ok(Err(error)) => {
            tracing::debug!(breaker = %replica.name, %error, "health-check turn not granted");
            false
        }
        Err(_) => false,
    }
}
