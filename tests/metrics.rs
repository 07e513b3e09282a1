//! Metrics from real traffic through a real redis-server fleet, read with
//! metrics-util's debugging recorder: the counts match the dependency's own.

#![cfg(feature = "metrics")]

mod support;

use std::time::Duration;

use distributed_circuit_breaker::{
    BreakerError, DistributedCircuitBreaker, DistributedCircuitBreakerLayer, ErrorsAsFailures,
    Policy, RedisStore,
};
use metrics_util::debugging::DebuggingRecorder;
use support::dependency::Dependency;
use support::redis::RedisServer;
use support::seen::Seen;
use tower::{Layer, Service, ServiceExt};

type Svc = DistributedCircuitBreaker<Dependency, ErrorsAsFailures>;

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    rejected: u64,
}

async fn call(svc: &Svc, tally: &mut Tally) {
    let mut svc = svc.clone();
    let result = match ServiceExt::<()>::ready(&mut svc).await {
        Ok(ready) => ready.call(()).await,
        Err(e) => Err(e),
    };
    match result.map_err(BreakerError::from) {
        Ok(_) => tally.ok += 1,
        Err(BreakerError::Open(_)) => tally.rejected += 1,
        Err(_) => tally.failed += 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_dependency_s_own_counts() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let name = "metrics-fleet";
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let layer = DistributedCircuitBreakerLayer::new(name, Policy::default(), store).unwrap();
        fleet.push(layer.layer(dependency.clone()));
    }
    let mut tally = Tally::default();
    // Healthy traffic with a failure now and then, for more than a sync
    // interval: nothing trips.
    for round in 0..150 {
        dependency.set_down(round % 10 == 5);
        for svc in &fleet {
            call(svc, &mut tally).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tally.rejected, 0);
    // The dependency goes down: the fleet trips and rejects.
    dependency.set_down(true);
    for _ in 0..60 {
        for svc in &fleet {
            call(svc, &mut tally).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(tally.rejected > 0);
    // Counts reach the metrics with the next batches (a sync interval).
    let mut seen = Seen::default();
    let breaker = [("breaker", name)];
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen.take(&snapshotter);
        let counted = seen.counter("dcb_calls_total", &breaker);
        let rejected = seen.counter("dcb_rejections_total", &breaker);
        if counted == tally.ok + tally.failed && rejected == tally.rejected {
            break;
        }
    }
    let reached = dependency.calls() as u64;
    let failed = dependency.failures() as u64;
    assert_eq!(reached, tally.ok + tally.failed);
    assert_eq!(
        seen.counter(
            "dcb_calls_total",
            &[("breaker", name), ("outcome", "success")]
        ),
        reached - failed,
        "successes"
    );
    assert_eq!(
        seen.counter(
            "dcb_calls_total",
            &[("breaker", name), ("outcome", "failure")]
        ),
        failed,
        "failures"
    );
    assert_eq!(
        seen.counter("dcb_rejections_total", &breaker),
        tally.rejected,
        "rejections"
    );
    // Three instances, each open now: the state gauge counts them.
    assert_eq!(
        seen.gauge("dcb_state", &[("breaker", name), ("state", "open")]),
        3.0
    );
    assert_eq!(
        seen.gauge("dcb_state", &[("breaker", name), ("state", "closed")]),
        0.0
    );
    assert_eq!(
        seen.counter(
            "dcb_transitions_total",
            &[("breaker", name), ("to", "open")]
        ),
        3,
        "one transition to open per instance"
    );
    assert_eq!(
        seen.counter(
            "dcb_fleet_transitions_total",
            &[("breaker", name), ("to", "open")]
        ),
        1,
        "one fleet transition"
    );
    assert!(seen.counter("dcb_store_calls_total", &[("result", "ok")]) > 0);
    assert!(
        seen.histograms
            .get("dcb_store_call_seconds")
            .copied()
            .unwrap_or(0)
            > 0
    );
}
