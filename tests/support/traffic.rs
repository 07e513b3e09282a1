//! Steady traffic from every instance of a fleet during a fault, tallied,
//! and the checks every failover test ends with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::State;
use tokio::time::Instant;

use super::dependency::Dependency;
use super::fleet::{Call, Instance};

/// Calls per second per instance.
pub const RATE: u64 = 200;
/// No call may wait on the store longer than `store_timeout` (50 ms by
/// default); this adds room for a busy 2-core machine.
pub const SLOWEST_CALL: Duration = Duration::from_millis(300);

/// Every instance calling the dependency at `RATE` until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub ok: usize,
    pub rejected: usize,
    pub failed: usize,
    pub slowest: Duration,
}

impl Traffic {
    pub fn start(fleet: &[Instance]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = fleet
            .iter()
            .cloned()
            .map(|instance| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let started = Instant::now();
                        match instance.call().await {
                            Call::Ok => tally.ok += 1,
                            Call::Rejected => tally.rejected += 1,
                            Call::Failed => tally.failed += 1,
                        }
                        tally.slowest = tally.slowest.max(started.elapsed());
                    }
                    tally
                })
            })
            .collect();
        Traffic { stop, tasks }
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Tally::default();
        for task in self.tasks {
            let t = task.await.expect("a traffic task panicked");
            all.ok += t.ok;
            all.rejected += t.rejected;
            all.failed += t.failed;
            all.slowest = all.slowest.max(t.slowest);
        }
        all
    }
}

/// Waits until every instance follows the store again (not degraded) and
/// all hold one generation in `state`; returns how long it took.
pub async fn converge(fleet: &[Instance], state: State, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let snapshots: Vec<_> = fleet.iter().map(|i| i.breaker.snapshot()).collect();
        let one = snapshots
            .iter()
            .all(|s| s.state == state && s.generation == snapshots[0].generation);
        if one && fleet.iter().all(|i| !i.breaker.is_degraded()) {
            return start.elapsed();
        }
        let states: Vec<_> = fleet
            .iter()
            .map(|i| {
                (
                    i.state(),
                    i.breaker.snapshot().generation,
                    i.breaker.is_degraded(),
                )
            })
            .collect();
        assert!(
            start.elapsed() < within,
            "the fleet did not share one {state} state within {within:?}: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every failed call is one the dependency failed, and none waited long.
pub fn assert_nothing_failed_by_the_store(tally: Tally, dependency: &Dependency) {
    assert_failed_only(tally, dependency.failures());
}

/// `failures`: what the dependency failed while this traffic ran.
pub fn assert_failed_only(tally: Tally, failures: usize) {
    println!("calls: {tally:?}");
    assert_eq!(
        tally.failed, failures,
        "every failed call is one the dependency failed: none failed because of the store"
    );
    assert!(
        tally.slowest <= SLOWEST_CALL,
        "a call took {:?}",
        tally.slowest
    );
}
