//! The rules users bring from other breakers, on the in-memory store with
//! tokio's paused clock: breaks last what they say, waiters wake when they
//! may go, forcing a state twice announces it once, an open breaker whose
//! break is over reads as half-open, and a rate rule alone trips on rates.

mod support;

use std::time::Duration;

use distributed_circuit_breaker::store::{Acquired, OutcomeBatch, ProbeResult, StoreFuture};
use distributed_circuit_breaker::{
    BreakerError, BreakerName, DistributedCircuitBreakerLayer, Force, MemoryStore, Policy,
    Rejection, Snapshot, State, Store, StoreEvent,
};
use support::dependency::Dependency;
use support::settle;
use tokio::sync::broadcast;
use tower::{Layer, Service, ServiceExt};

const BREAK: Duration = Duration::from_secs(5);

fn policy() -> Policy {
    Policy::builder()
        .consecutive_failures(1)
        .break_duration(BREAK)
        .sync_interval(Duration::from_millis(200))
        .build()
        .unwrap()
}

/// A store whose announcements reach this process `delay` late (a busy
/// event loop, a slow network): what a breaker does with them must not depend
/// on when it gets round to them.
#[derive(Debug)]
struct LateAnnouncements {
    inner: MemoryStore,
    events: broadcast::Sender<StoreEvent>,
}

impl LateAnnouncements {
    fn new(inner: MemoryStore, delay: Duration) -> Self {
        let (events, _) = broadcast::channel(1024);
        let mut from = inner.subscribe();
        let to = events.clone();
        tokio::spawn(async move {
            while let Ok(event) = from.recv().await {
                let to = to.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = to.send(event);
                });
            }
        });
        Self { inner, events }
    }
}

impl Store for LateAnnouncements {
    fn record<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        batch: OutcomeBatch,
    ) -> StoreFuture<'a, Snapshot> {
        self.inner.record(name, policy, batch)
    }
    fn acquire<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        lease: u64,
    ) -> StoreFuture<'a, Acquired> {
        self.inner.acquire(name, policy, lease)
    }
    fn release<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        generation: u64,
        lease: u64,
        result: ProbeResult,
    ) -> StoreFuture<'a, Snapshot> {
        self.inner.release(name, policy, generation, lease, result)
    }
    fn force<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        force: Force,
    ) -> StoreFuture<'a, Snapshot> {
        self.inner.force(name, policy, force)
    }
    fn snapshot<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
    ) -> StoreFuture<'a, Snapshot> {
        self.inner.snapshot(name, policy)
    }
    fn list(&self) -> StoreFuture<'_, Vec<(String, Snapshot)>> {
        self.inner.list()
    }
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}

#[tokio::test(start_paused = true)]
async fn a_break_ends_when_the_store_said_even_if_heard_of_late() {
    let store = MemoryStore::new();
    let dep = Dependency::new();
    // 100 breakers, each with a replica that trips it and one that hears of
    // the trip 1 s late (before its first periodic re-read, 2 s).
    let mut late = Vec::new();
    for i in 0..100 {
        let name = format!("b{i}");
        let tripper = DistributedCircuitBreakerLayer::new(&name, policy(), store.clone()).unwrap();
        let slow = LateAnnouncements::new(store.clone(), Duration::from_secs(1));
        let listener = DistributedCircuitBreakerLayer::new(&name, policy(), slow).unwrap();
        listener.breaker().sync().await;
        dep.set_down(true);
        let _ = tripper.layer(dep.clone()).oneshot(()).await;
        assert!(tripper.breaker().sync().await);
        assert_eq!(tripper.breaker().snapshot().state, State::Open);
        late.push(listener);
    }
    dep.set_down(false);
    settle(Duration::from_secs(1) + Duration::from_millis(50)).await;
    for l in &late {
        let s = l.breaker().snapshot();
        assert_eq!(s.state, State::Open);
        assert!(
            s.remaining <= BREAK - Duration::from_secs(1),
            "{:?}",
            s.remaining
        );
    }
    // At the end of the break every one of them lets its probe through
    // (0.1: 32 of 100 still refused, their break counted from receipt).
    settle(BREAK - Duration::from_secs(1)).await;
    for l in &late {
        let out = l.layer(dep.clone()).oneshot(()).await;
        assert!(out.is_ok(), "refused the probe at the end of the break");
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiter_goes_as_soon_as_the_probe_frees_its_permit() {
    let dep = Dependency::new();
    let layer = DistributedCircuitBreakerLayer::new("wait", policy(), MemoryStore::new())
        .unwrap()
        .rejection(Rejection::Backpressure);
    let breaker = layer.breaker();
    breaker.sync().await;
    dep.set_down(true);
    let _ = layer.layer(dep.clone()).oneshot(()).await;
    dep.set_down(false);
    settle(BREAK).await;
    // The probe takes 1 s; a second caller waits in poll_ready meanwhile.
    dep.set_delay(Duration::from_secs(1));
    let probe = tokio::spawn(layer.layer(dep.clone()).oneshot(()));
    settle(Duration::from_millis(10)).await;
    dep.set_delay(Duration::ZERO);
    let waiter = tokio::spawn(layer.layer(dep.clone()).oneshot(()));
    probe.await.unwrap().unwrap();
    let closed_at = tokio::time::Instant::now();
    waiter.await.unwrap().unwrap();
    // Woken when the breaker closed, not after sleeping out its retry time.
    assert!(
        closed_at.elapsed() < Duration::from_millis(10),
        "the waiter went {:?} after the close",
        closed_at.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn forcing_the_state_a_breaker_is_in_announces_nothing() {
    let store = MemoryStore::new();
    let mut events = store.subscribe();
    let layer = DistributedCircuitBreakerLayer::new("twice", policy(), store.clone()).unwrap();
    let breaker = layer.breaker();
    let first = breaker
        .force(Force::Open(Some(Duration::from_secs(60))))
        .await
        .unwrap();
    let again = breaker
        .force(Force::Open(Some(Duration::from_secs(600))))
        .await
        .unwrap();
    assert_eq!(again.generation, first.generation);
    assert_eq!(
        again.remaining,
        Duration::from_secs(600),
        "the expiry moved"
    );
    let mut transitions = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event, StoreEvent::Transition(t) if t.name == "twice") {
            transitions += 1;
        }
    }
    assert_eq!(transitions, 1);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_whose_break_is_over_reads_half_open() {
    let dep = Dependency::new();
    let layer = DistributedCircuitBreakerLayer::new("over", policy(), MemoryStore::new()).unwrap();
    let breaker = layer.breaker();
    breaker.sync().await;
    dep.set_down(true);
    let _ = layer.layer(dep.clone()).oneshot(()).await;
    assert_eq!(breaker.snapshot().state, State::Open);
    settle(BREAK).await;
    assert_eq!(breaker.snapshot().state, State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_rate_rule_alone_trips_on_the_rate_not_on_five_in_a_row() {
    let dep = Dependency::new();
    let policy = Policy::builder()
        .failure_rate(0.5)
        .minimum_calls(10)
        .build()
        .unwrap();
    let layer = DistributedCircuitBreakerLayer::new("rate", policy, MemoryStore::new()).unwrap();
    let breaker = layer.breaker();
    breaker.sync().await;
    let mut svc = layer.layer(dep.clone());
    dep.set_down(true);
    for _ in 0..8 {
        let _ = ServiceExt::<()>::ready(&mut svc)
            .await
            .unwrap()
            .call(())
            .await;
    }
    assert_eq!(
        breaker.snapshot().state,
        State::Closed,
        "8 calls < minimum 10"
    );
    for _ in 0..2 {
        let _ = ServiceExt::<()>::ready(&mut svc)
            .await
            .unwrap()
            .call(())
            .await;
    }
    assert_eq!(breaker.snapshot().state, State::Open, "10 of 10 failed");
    let err = ServiceExt::<()>::ready(&mut svc)
        .await
        .unwrap()
        .call(())
        .await
        .unwrap_err();
    assert!(matches!(BreakerError::from(err), BreakerError::Open(_)));
}

#[tokio::test(start_paused = true)]
async fn a_timed_open_ends_half_open_with_a_probe() {
    let dep = Dependency::new();
    let layer = DistributedCircuitBreakerLayer::new("timed", policy(), MemoryStore::new()).unwrap();
    let breaker = layer.breaker();
    breaker
        .force(Force::OpenThenProbe(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(breaker.snapshot().state, State::Open);
    assert!(layer.layer(dep.clone()).oneshot(()).await.is_err());
    settle(Duration::from_secs(60)).await;
    assert_eq!(breaker.snapshot().state, State::HalfOpen);
    // One probe; the dependency is still down, so the breaker opens again.
    dep.set_down(true);
    assert!(layer.layer(dep.clone()).oneshot(()).await.is_err());
    assert_eq!(dep.calls(), 1);
    settle(Duration::from_millis(50)).await;
    assert_eq!(breaker.snapshot().state, State::Open);
    assert!(layer.layer(dep.clone()).oneshot(()).await.is_err());
    assert_eq!(dep.calls(), 1, "no second probe during the new break");
    // The named forms mean the old variants.
    assert_eq!(Force::isolate(None), Force::Open(None));
    assert_eq!(Force::metrics_only(None), Force::Closed(None));
}
