//! The tower layer on the in-memory store, with tokio's paused clock.

mod support;

use std::time::Duration;

use distributed_circuit_breaker::{
    BoxError, BreakerError, DistributedCircuitBreakerLayer, Force, HttpClassifier, MemoryStore,
    Outcome, Policy, Rejection, State,
};
use support::dependency::{Dependency, DependencyDown};
use support::settle;
use tower::{Service, ServiceExt};

const BREAK: Duration = Duration::from_secs(5);

fn policy(threshold: u32) -> Policy {
    Policy::builder()
        .consecutive_failures(threshold)
        .break_duration(BREAK)
        .probe_lease(Duration::from_secs(2))
        .sync_interval(Duration::from_millis(200))
        .build()
        .unwrap()
}

fn layer(threshold: u32, store: &MemoryStore) -> DistributedCircuitBreakerLayer {
    DistributedCircuitBreakerLayer::new("dep", policy(threshold), store.clone()).unwrap()
}

async fn call<S>(svc: &mut S) -> Result<&'static str, BreakerError>
where
    S: Service<(), Response = &'static str, Error = BoxError>,
{
    svc.ready().await.map_err(BreakerError::from)?;
    svc.call(()).await.map_err(BreakerError::from)
}

type Svc = distributed_circuit_breaker::DistributedCircuitBreaker<
    Dependency,
    distributed_circuit_breaker::ErrorsAsFailures,
>;

/// A dependency behind a fresh breaker tripping after `threshold` failures.
fn guarded(threshold: u32) -> (Dependency, distributed_circuit_breaker::Breaker, Svc) {
    let dep = Dependency::new();
    let layer = layer(threshold, &MemoryStore::new());
    let breaker = layer.breaker();
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(dep.clone());
    (dep, breaker, svc)
}

/// A breaker that tripped on one failure and whose break is over: the next
/// call is a probe. The dependency is still down.
async fn tripped_and_broken() -> (Dependency, distributed_circuit_breaker::Breaker, Svc) {
    let (dep, breaker, mut svc) = guarded(1);
    dep.set_down(true);
    let _ = call(&mut svc).await;
    settle(Duration::from_millis(50)).await;
    assert_eq!(breaker.snapshot().state, State::Open);
    tokio::time::advance(BREAK).await;
    (dep, breaker, svc)
}

#[tokio::test(start_paused = true)]
async fn trips_after_threshold_and_rejects_without_calling_inner() {
    let (dep, breaker, mut svc) = guarded(3);

    assert_eq!(call(&mut svc).await.unwrap(), "ok");
    dep.set_down(true);
    for _ in 0..3 {
        assert!(
            matches!(call(&mut svc).await, Err(BreakerError::Inner(e)) if e.is::<DependencyDown>())
        );
    }
    settle(Duration::from_millis(50)).await; // the driver flushes at once on failure
    assert_eq!(breaker.snapshot().state, State::Open);

    for _ in 0..100 {
        match call(&mut svc).await {
            Err(BreakerError::Open(open)) => {
                assert_eq!(open.name().as_str(), "dep");
                assert_eq!(open.state(), State::Open);
                assert!(open.retry_after() <= BREAK && open.retry_after() > Duration::from_secs(4));
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(dep.calls(), 4, "rejected calls never reach the dependency");
}

#[tokio::test(start_paused = true)]
async fn one_probe_after_the_break_and_success_closes() {
    let dep = Dependency::new();
    let layer = layer(1, &MemoryStore::new());
    let breaker = layer.breaker();
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(dep.clone());
    dep.set_down(true);
    let _ = call(&mut svc.clone()).await;
    settle(Duration::from_millis(50)).await;
    assert_eq!(breaker.snapshot().state, State::Open);

    tokio::time::advance(BREAK).await;
    dep.set_down(false);
    dep.set_delay(Duration::from_millis(100));
    // Twenty concurrent callers race for the one permit.
    let before = dep.calls();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(()).await.map_err(BreakerError::from) })
        })
        .collect();
    let mut passed = 0;
    let mut rejected = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => passed += 1,
            Err(BreakerError::Open(_)) => rejected += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((passed, rejected), (1, 19));
    assert_eq!(
        dep.calls() - before,
        1,
        "exactly one probe reached the dependency"
    );
    settle(Duration::from_millis(10)).await;
    assert_eq!(breaker.snapshot().state, State::Closed);
    assert_eq!(call(&mut svc.clone()).await.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens() {
    let (_dep, breaker, mut svc) = tripped_and_broken().await;
    let opened = breaker.snapshot().generation;
    assert!(
        matches!(call(&mut svc).await, Err(BreakerError::Inner(_))),
        "the probe reaches the dependency"
    );
    settle(Duration::from_millis(10)).await;
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, State::Open);
    assert_eq!(snapshot.generation, opened + 2, "open -> half-open -> open");
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_returns_its_permit() {
    let (dep, breaker, mut svc) = tripped_and_broken().await;
    dep.set_down(false);
    dep.set_delay(Duration::from_secs(60));
    ServiceExt::<()>::ready(&mut svc).await.unwrap();
    let probe = svc.call(());
    // Cancel the probe: its future is dropped before it completes.
    assert!(tokio::time::timeout(Duration::from_millis(100), probe)
        .await
        .is_err());
    settle(Duration::from_millis(10)).await;
    assert_eq!(breaker.snapshot().state, State::HalfOpen);

    // Well before the 2s lease would have run out, another probe may go.
    dep.set_delay(Duration::ZERO);
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(call(&mut svc).await.unwrap(), "ok");
    settle(Duration::from_millis(10)).await;
    assert_eq!(breaker.snapshot().state, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_service_dropped_after_poll_ready_returns_its_permit() {
    let (dep, breaker, mut svc) = tripped_and_broken().await;
    dep.set_down(false);

    let mut holder = svc.clone();
    ServiceExt::<()>::ready(&mut holder).await.unwrap(); // holds the permit
    assert!(matches!(
        call(&mut svc.clone()).await,
        Err(BreakerError::Open(_))
    ));
    drop(holder);
    settle(Duration::from_millis(300)).await; // past the sync interval the denial waits for
    assert_eq!(call(&mut svc).await.unwrap(), "ok");
    settle(Duration::from_millis(10)).await;
    assert_eq!(breaker.snapshot().state, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn call_timeout_fails_the_call_and_counts_as_failure() {
    let dep = Dependency::new();
    dep.set_delay(Duration::from_secs(10));
    let layer = layer(2, &MemoryStore::new()).call_timeout(Duration::from_secs(1));
    let breaker = layer.breaker();
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(dep.clone());
    for _ in 0..2 {
        match call(&mut svc).await {
            Err(BreakerError::Timeout(t)) => assert_eq!(t.timeout(), Duration::from_secs(1)),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    settle(Duration::from_millis(50)).await;
    assert_eq!(breaker.snapshot().state, State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_slow_call_rate() {
    let dep = Dependency::new();
    dep.set_delay(Duration::from_millis(300));
    let policy = Policy::builder()
        .no_consecutive_failures()
        .slow_call_rate(0.5)
        .slow_call_duration(Duration::from_millis(250))
        .minimum_calls(4)
        .build()
        .unwrap();
    let layer = DistributedCircuitBreakerLayer::new("slow", policy, MemoryStore::new()).unwrap();
    let breaker = layer.breaker();
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(dep.clone());
    for _ in 0..4 {
        assert_eq!(call(&mut svc).await.unwrap(), "ok");
    }
    settle(Duration::from_millis(100)).await;
    assert_eq!(breaker.snapshot().state, State::Open);
}

#[tokio::test(start_paused = true)]
async fn http_classifier_counts_5xx_not_4xx_and_closures_classify() {
    let dep = Dependency::new();
    let layer = layer(2, &MemoryStore::new()).classifier(HttpClassifier::default());
    let breaker = layer.breaker();
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(dep.http());
    dep.set_down(true); // answers 503
    for _ in 0..2 {
        let response = ServiceExt::<()>::ready(&mut svc)
            .await
            .unwrap()
            .call(())
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
    }
    settle(Duration::from_millis(50)).await;
    assert_eq!(breaker.snapshot().state, State::Open);

    // A closure that ignores every error: the breaker never trips.
    let ignoring = DistributedCircuitBreakerLayer::new("ignoring", policy(1), MemoryStore::new())
        .unwrap()
        .classifier(|r: Result<&&str, &DependencyDown>, _| {
            if r.is_ok() {
                Outcome::Success
            } else {
                Outcome::Ignore
            }
        });
    let breaker = ignoring.breaker();
    let mut svc = tower::ServiceBuilder::new()
        .layer(ignoring)
        .service(dep.clone());
    for _ in 0..10 {
        assert!(call(&mut svc).await.is_err());
    }
    settle(Duration::from_millis(50)).await;
    assert_eq!(breaker.snapshot().state, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn clones_share_a_breaker_and_separate_layers_share_the_store() {
    let store = MemoryStore::new();
    let dep = Dependency::new();
    dep.set_down(true);
    let a = layer(4, &store);
    let b = layer(4, &store); // another "process" with the same breaker name
    let a2 = a.clone();
    let mut sa = tower::ServiceBuilder::new()
        .layer(a.clone())
        .service(dep.clone());
    let mut sa2 = tower::ServiceBuilder::new().layer(a2).service(dep.clone());
    let mut sb = tower::ServiceBuilder::new()
        .layer(b.clone())
        .service(dep.clone());
    let _ = call(&mut sa).await;
    let _ = call(&mut sa2).await;
    let _ = call(&mut sb).await;
    let _ = call(&mut sb).await;
    settle(Duration::from_millis(50)).await;
    assert_eq!(
        a.breaker().snapshot().state,
        State::Open,
        "4 failures across 3 services"
    );
    assert_eq!(
        b.breaker().snapshot().state,
        State::Open,
        "the transition reached the other replica"
    );
    assert!(matches!(call(&mut sb).await, Err(BreakerError::Open(_))));
    assert_eq!(dep.calls(), 4);

    // Another name on the same store is untouched.
    let other = DistributedCircuitBreakerLayer::new("other", policy(4), store.clone()).unwrap();
    let mut so = tower::ServiceBuilder::new()
        .layer(other)
        .service(Dependency::new());
    assert_eq!(call(&mut so).await.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn backpressure_mode_waits_in_poll_ready_until_the_break_ends() {
    let dep = Dependency::new();
    let layer = layer(1, &MemoryStore::new()).rejection(Rejection::Backpressure);
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(dep.clone());
    dep.set_down(true);
    let _ = call(&mut svc).await;
    settle(Duration::from_millis(50)).await;
    dep.set_down(false);
    let start = tokio::time::Instant::now();
    // Ready only once the break is over; the call is then the probe.
    assert_eq!(call(&mut svc).await.unwrap(), "ok");
    let waited = start.elapsed();
    assert!(
        waited >= BREAK - Duration::from_millis(100),
        "waited {waited:?}"
    );
    assert_eq!(dep.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn operators_force_states_fleet_wide() {
    let store = MemoryStore::new();
    let dep = Dependency::new();
    let a = layer(1, &store);
    let b = layer(1, &store);
    let mut sb = tower::ServiceBuilder::new()
        .layer(b.clone())
        .service(dep.clone());
    assert_eq!(call(&mut sb).await.unwrap(), "ok");

    a.breaker()
        .force(Force::Open(Some(Duration::from_secs(30))))
        .await
        .unwrap();
    settle(Duration::from_millis(10)).await;
    assert_eq!(b.breaker().snapshot().state, State::ForcedOpen);
    assert!(
        matches!(call(&mut sb).await, Err(BreakerError::Open(o)) if o.state() == State::ForcedOpen)
    );

    a.breaker().force(Force::Disabled(None)).await.unwrap();
    settle(Duration::from_millis(10)).await;
    dep.set_down(true);
    for _ in 0..5 {
        assert!(matches!(call(&mut sb).await, Err(BreakerError::Inner(_))));
    }
    settle(Duration::from_millis(50)).await;
    assert_eq!(
        b.breaker().snapshot().state,
        State::Disabled,
        "disabled never trips"
    );

    a.breaker().force(Force::Reset).await.unwrap();
    settle(Duration::from_millis(10)).await;
    assert_eq!(b.breaker().snapshot().state, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn forced_open_expires_back_to_closed() {
    let (_dep, breaker, mut svc) = guarded(1);
    breaker
        .force(Force::Open(Some(Duration::from_secs(3))))
        .await
        .unwrap();
    assert!(matches!(call(&mut svc).await, Err(BreakerError::Open(_))));
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(call(&mut svc).await.unwrap(), "ok");
    assert_eq!(breaker.snapshot().state, State::Closed);
}

#[test]
fn services_are_send_sync_clone_for_axum_and_hyper() {
    fn assert_bounds<T: Send + Sync + Clone + 'static>() {}
    assert_bounds::<
        distributed_circuit_breaker::DistributedCircuitBreaker<Dependency, HttpClassifier>,
    >();
    assert_bounds::<DistributedCircuitBreakerLayer>();
}

#[tokio::test(start_paused = true)]
async fn readiness_is_decided_again_when_the_inner_service_was_not_ready() {
    let (mock, mut handle) = tower_test::mock::pair::<(), &'static str>();
    let layer = layer(5, &MemoryStore::new());
    let breaker = layer.breaker();
    breaker.sync().await;
    let mut svc = tower_test::mock::Spawn::new(tower::Layer::layer(&layer, mock));
    handle.allow(0);
    assert!(
        svc.poll_ready().is_pending(),
        "the inner service is not ready"
    );
    // The breaker opens while the caller waits for the inner service.
    breaker.force(Force::Open(None)).await.unwrap();
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let err = svc.call(()).await.unwrap_err();
    assert!(matches!(BreakerError::from(err), BreakerError::Open(_)));
    assert!(
        handle.poll_request().is_pending(),
        "nothing reached the inner service"
    );
}

/// Used outside any tokio runtime (a plain executor): nothing panics, the
/// breaker still trips at its threshold on its own outcomes, and a call
/// timeout that cannot be armed does not take the call down.
#[test]
fn without_a_tokio_runtime_it_never_panics_and_still_trips() {
    let dep = Dependency::new();
    let layer = DistributedCircuitBreakerLayer::new("no-runtime", policy(3), MemoryStore::new())
        .unwrap()
        .call_timeout(Duration::from_secs(1));
    let breaker = layer.breaker();
    let mut svc = tower::Layer::layer(&layer, dep.clone());
    dep.set_down(true);
    futures::executor::block_on(async {
        for _ in 0..10 {
            let _ = call(&mut svc).await;
        }
    });
    assert_eq!(dep.failures(), 3, "tripped at the threshold");
    assert_eq!(breaker.snapshot().state, State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_panics_counts_as_a_failure() {
    let layer = layer(3, &MemoryStore::new());
    let breaker = layer.breaker();
    breaker.sync().await;
    let svc = tower::Layer::layer(
        &layer,
        tower::service_fn(|fail: bool| async move {
            if fail {
                panic!("the dependency client panicked");
            }
            Ok::<_, BoxError>("ok")
        }),
    );
    for _ in 0..3 {
        let call = tokio::spawn(svc.clone().oneshot(true));
        assert!(call.await.unwrap_err().is_panic());
    }
    assert_eq!(breaker.snapshot().state, State::Open, "three panics trip");
    let err = svc.clone().oneshot(false).await.unwrap_err();
    assert!(matches!(BreakerError::from(err), BreakerError::Open(_)));
}
