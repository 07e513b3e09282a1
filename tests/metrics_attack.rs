//! Attacks on the metrics promises (issue 11). Metrics from real traffic through a real redis-server fleet, read with
//! metrics-util's debugging recorder: the counts match the dependency's own.

#![cfg(feature = "metrics")]
#![allow(dead_code, unused_imports)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use distributed_circuit_breaker::{
    BreakerError, DistributedCircuitBreaker, DistributedCircuitBreakerLayer, ErrorsAsFailures,
    Policy, RedisStore,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
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

/// `dcb_calls_total` must equal the calls that reached the dependency,
/// exactly, after a sync interval: also while Redis is gone (degraded mode,
/// killed) and while it hangs (paused: store timeouts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_calls_total_while_the_store_is_away() {
    let snapshotter = snapshotter();

    let mut redis = RedisServer::start();
    let dependency = Dependency::new();
    let name = "metrics-attack-degraded";
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let layer = DistributedCircuitBreakerLayer::new(name, Policy::default(), store).unwrap();
    let svc = layer.layer(dependency.clone());
    let mut tally = Tally::default();
    // Healthy for 1.2 s at ~100 calls/s, a failure in ten.
    for round in 0..120 {
        dependency.set_down(round % 10 == 5);
        call(&svc, &mut tally).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Redis paused (hangs): 1.5 s of the same traffic.
    redis.pause();
    for round in 0..150 {
        dependency.set_down(round % 10 == 5);
        call(&svc, &mut tally).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.resume();
    // Redis killed: 1.5 s of the same traffic.
    redis.kill();
    for round in 0..150 {
        dependency.set_down(round % 10 == 5);
        call(&svc, &mut tally).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dependency.set_down(false);
    let mut seen = Seen::default();
    let breaker = [("breaker", name)];
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen.take(snapshotter);
    }
    let reached = dependency.calls() as u64;
    let failed = dependency.failures() as u64;
    let calls = seen.counter("dcb_calls_total", &breaker);
    let probes = seen.counter("dcb_probes_total", &breaker);
    eprintln!(
        "reached {reached} failed {failed} tally ok {} failed {} rejected {} | calls_total {calls} (success {}, failure {}) probes {probes} rejections {}",
        tally.ok,
        tally.failed,
        tally.rejected,
        seen.counter("dcb_calls_total", &[("breaker", name), ("outcome", "success")]),
        seen.counter("dcb_calls_total", &[("breaker", name), ("outcome", "failure")]),
        seen.counter("dcb_rejections_total", &breaker),
    );
    assert_eq!(
        calls + probes,
        reached,
        "calls + probes vs calls that reached the dependency"
    );
    assert_eq!(
        seen.counter(
            "dcb_calls_total",
            &[("breaker", name), ("outcome", "failure")]
        ),
        failed,
        "failures"
    );
}

fn snapshotter() -> &'static Snapshotter {
    static SNAP: std::sync::OnceLock<Snapshotter> = std::sync::OnceLock::new();
    SNAP.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    })
}

/// Inner calls that panic, time out (the layer's call_timeout) or fail,
/// among successes: `dcb_calls_total` must equal the calls that reached the
/// dependency, exactly, and its failures the calls the clients saw fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_calls_total_with_panics_and_timeouts() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let snapshotter = snapshotter();
    let redis = RedisServer::start();
    let name = "metrics-attack-panics";
    let reached = Arc::new(AtomicUsize::new(0));
    let r = reached.clone();
    let inner = tower::service_fn(move |_: ()| {
        let n = r.fetch_add(1, Ordering::SeqCst);
        async move {
            match n % 7 {
                3 => panic!("inner service panics"),
                5 => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, std::io::Error>(())
                }
                6 => Err(std::io::Error::other("failed")),
                _ => Ok(()),
            }
        }
    });
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let layer = DistributedCircuitBreakerLayer::new(name, Policy::default(), store)
        .unwrap()
        .call_timeout(Duration::from_millis(50));
    let svc = layer.layer(inner);
    let (mut ok, mut failed, mut rejected) = (0u64, 0u64, 0u64);
    for _ in 0..280 {
        let mut svc = svc.clone();
        let call = tokio::spawn(async move {
            let ready = ServiceExt::<()>::ready(&mut svc).await?;
            ready.call(()).await
        });
        match call.await {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => match BreakerError::from(e) {
                BreakerError::Open(_) => rejected += 1,
                _ => failed += 1,
            },
            Err(_panicked) => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seen = Seen::default();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen.take(snapshotter);
    }
    let reached = reached.load(Ordering::SeqCst) as u64;
    let success = seen.counter(
        "dcb_calls_total",
        &[("breaker", name), ("outcome", "success")],
    );
    let failure = seen.counter(
        "dcb_calls_total",
        &[("breaker", name), ("outcome", "failure")],
    );
    let probes = seen.counter("dcb_probes_total", &[("breaker", name)]);
    eprintln!("reached {reached}: client ok {ok} failed {failed} rejected {rejected} | metrics success {success} failure {failure} probes {probes}");
    assert_eq!(
        success + failure + probes,
        reached,
        "calls + probes vs reached"
    );
    assert_eq!(failure, failed, "failures vs failures the clients saw");
    assert_eq!(success, ok, "successes");
}

/// `dcb_degraded` ("breakers deciding alone because the store is away") and
/// `dcb_state` ("how many of this process's breakers ... in each state")
/// after the breaker is dropped while degraded (a keyed breaker evicted, a
/// layer dropped on reconfiguration): nothing is left, both must read 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_gauges_after_a_degraded_breaker_is_dropped() {
    let snapshotter = snapshotter();
    let mut redis = RedisServer::start();
    let dependency = Dependency::new();
    let name = "metrics-attack-drop-degraded";
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let layer = DistributedCircuitBreakerLayer::new(name, Policy::default(), store).unwrap();
    let svc = layer.layer(dependency.clone());
    let mut tally = Tally::default();
    let mut seen = Seen::default();
    for _ in 0..110 {
        call(&svc, &mut tally).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.kill();
    for round in 0..300 {
        // A failure now and then: the breaker talks to the store.
        dependency.set_down(round % 10 == 5);
        call(&svc, &mut tally).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        seen.take(snapshotter);
        if seen.gauge("dcb_degraded", &[("breaker", name)]) >= 1.0 {
            break;
        }
    }
    assert_eq!(
        seen.gauge("dcb_degraded", &[("breaker", name)]),
        1.0,
        "degraded while Redis is gone"
    );
    drop(svc);
    drop(layer);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    seen.take(snapshotter);
    let states: f64 = [
        "closed",
        "open",
        "half_open",
        "forced_open",
        "forced_closed",
        "disabled",
    ]
    .iter()
    .map(|s| seen.gauge("dcb_state", &[("breaker", name), ("state", s)]))
    .sum();
    let degraded = seen.gauge("dcb_degraded", &[("breaker", name)]);
    eprintln!("after the drop: dcb_state sum {states}, dcb_degraded {degraded}");
    assert_eq!(states, 0.0, "dcb_state after the drop");
    assert_eq!(degraded, 0.0, "dcb_degraded after the drop");
}

/// A listener slow once (3 s, a synchronous pager call) while the breaker
/// flaps on a short break: events beyond 256 are dropped (documented), but
/// `dcb_state` must still count the breaker in the state it is in once it
/// settles: closed 1, every other state 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_state_gauge_after_dropped_events() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let snapshotter = snapshotter();
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let name = "metrics-attack-overflow";
    let policy = Policy::builder()
        .break_duration(Duration::from_millis(20))
        .build()
        .unwrap();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let heard = Arc::new(AtomicUsize::new(0));
    let h = heard.clone();
    let layer = DistributedCircuitBreakerLayer::new(name, policy, store)
        .unwrap()
        .on_event(
            move |_: &distributed_circuit_breaker::BreakerName,
                  _: &distributed_circuit_breaker::events::Event| {
                if h.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_secs(3));
                }
            },
        );
    let svc = layer.layer(dependency.clone());
    let mut tally = Tally::default();
    for _ in 0..110 {
        call(&svc, &mut tally).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dependency.set_down(true);
    let until = tokio::time::Instant::now() + Duration::from_millis(3_000);
    while tokio::time::Instant::now() < until {
        call(&svc, &mut tally).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    dependency.set_down(false);
    for _ in 0..500 {
        call(&svc, &mut tally).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        if layer.breaker().snapshot().state == distributed_circuit_breaker::State::Closed {
            break;
        }
    }
    for _ in 0..150 {
        call(&svc, &mut tally).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut seen = Seen::default();
    seen.take(snapshotter);
    let per: Vec<(&str, f64)> = [
        "closed",
        "open",
        "half_open",
        "forced_open",
        "forced_closed",
        "disabled",
    ]
    .iter()
    .map(|s| {
        (
            *s,
            seen.gauge("dcb_state", &[("breaker", name), ("state", s)]),
        )
    })
    .collect();
    eprintln!(
        "state {:?}; listener calls {}; dcb_state {per:?}",
        layer.breaker().snapshot().state,
        heard.load(Ordering::SeqCst)
    );
    assert_eq!(
        layer.breaker().snapshot().state,
        distributed_circuit_breaker::State::Closed
    );
    assert_eq!(per[0].1, 1.0, "{per:?}");
    assert!(per[1..].iter().all(|(_, v)| *v == 0.0), "{per:?}");
}
