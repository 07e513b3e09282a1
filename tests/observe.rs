//! Events and active health checks from real traffic through real
//! redis-server fleets: every instance with its own RedisStore (its own
//! connections), the default policy, healthy traffic before any fault.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::events::{Event, Rule, Scope};
use distributed_circuit_breaker::{
    DistributedCircuitBreakerLayer, Force, MemoryStore, Policy, RedisStore, State,
};
use support::dependency::Dependency;
use support::members::{eventually, fleet, fleet_opened, opened, traffic, Member};
use support::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_trip_is_one_fleet_event_and_one_local_event_per_instance() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let members = fleet(&redis, "observe-trip", 5, &dependency).await;
    // Healthy first, for more than a sync interval.
    traffic(&members, Duration::from_millis(1_500)).await;
    dependency.set_down(true);
    for _ in 0..300 {
        if members.iter().all(|m| m.state() == State::Open) {
            break;
        }
        traffic(&members, Duration::from_millis(10)).await;
    }
    eventually("every member heard its own transition to open", || {
        members.iter().all(|m| m.count(opened) >= 1)
    })
    .await;
    eventually("one member heard the fleet's transition", || {
        members.iter().map(|m| m.count(fleet_opened)).sum::<usize>() >= 1
    })
    .await;
    // Give duplicates time to show up, if any would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fleet: usize = members.iter().map(|m| m.count(fleet_opened)).sum();
    assert_eq!(fleet, 1, "one fleet event in total");
    for m in &members {
        assert_eq!(m.count(opened), 1, "one local event per instance");
    }
    // The fleet event names the rule and the numbers that tripped it.
    let origin = members.iter().find(|m| m.count(fleet_opened) == 1).unwrap();
    let event = origin
        .events
        .lock()
        .unwrap()
        .iter()
        .find(|e| fleet_opened(e))
        .cloned();
    let Some(Event::FleetTransition(t)) = event else {
        unreachable!()
    };
    assert_eq!(t.scope, Scope::Fleet);
    // Its own run of five, or its share of the fleet's merged run.
    match t.cause.rule {
        Rule::ConsecutiveFailures => assert!(t.cause.run >= 5, "{t:?}"),
        Rule::FleetCounts => assert!(t.cause.failures >= 1 || t.cause.run >= 1, "{t:?}"),
        _ => panic!("{t:?}"),
    }
    // Rejections are counted, not one event per call.
    traffic(&members, Duration::from_millis(300)).await;
    eventually("rejections reported", || {
        members
            .iter()
            .any(|m| m.count(|e| matches!(e, Event::Rejected { count, .. } if *count > 1)) > 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_the_fleet_closing_are_told_once() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let mut members = Vec::new();
    let policy = Policy::builder()
        .break_duration(Duration::from_millis(500))
        .build()
        .unwrap();
    for _ in 0..3 {
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let layer =
            DistributedCircuitBreakerLayer::new("observe-probe", policy.clone(), store).unwrap();
        members.push(Member::new(layer, &dependency));
    }
    traffic(&members, Duration::from_millis(1_200)).await;
    dependency.set_down(true);
    for _ in 0..300 {
        if members.iter().all(|m| m.state() == State::Open) {
            break;
        }
        traffic(&members, Duration::from_millis(10)).await;
    }
    dependency.set_down(false);
    for _ in 0..500 {
        if members.iter().all(|m| m.state() == State::Closed) {
            break;
        }
        traffic(&members, Duration::from_millis(10)).await;
    }
    let closed = |e: &Event| matches!(e, Event::FleetTransition(t) if t.to == State::Closed && t.cause.rule == Rule::ProbesSucceeded);
    eventually("the fleet's closing told", || {
        members.iter().map(|m| m.count(closed)).sum::<usize>() >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(members.iter().map(|m| m.count(closed)).sum::<usize>(), 1);
    let started: usize = members
        .iter()
        .map(|m| m.count(|e| matches!(e, Event::ProbeStarted { .. })))
        .sum();
    let finished: usize = members
        .iter()
        .map(|m| m.count(|e| matches!(e, Event::ProbeFinished { .. })))
        .sum();
    assert!(started >= 1, "a probe ran");
    assert_eq!(started, finished, "every probe ended");
}

/// Ten instances with a check each; the breaker forced open for a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_runs_the_health_check_and_hands_it_on_when_it_dies() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let interval = Duration::from_millis(200);
    let mut members = Vec::new();
    let mut checks = Vec::new();
    for _ in 0..10 {
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        let layer = DistributedCircuitBreakerLayer::new("observe-health", Policy::default(), store)
            .unwrap()
            .health_check(interval, move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { false }
            })
            .unwrap();
        members.push(Some(Member::new(layer, &dependency)));
        checks.push(count);
    }
    let first = members[0].as_ref().unwrap();
    first
        .layer
        .breaker()
        .force(Force::OpenThenProbe(Duration::from_secs(60)))
        .await
        .unwrap();
    eventually("every instance sees the break", || {
        members.iter().flatten().all(|m| m.state() == State::Open)
    })
    .await;
    tokio::time::sleep(interval * 8).await;
    let runners: Vec<usize> = (0..10)
        .filter(|i| checks[*i].load(Ordering::SeqCst) > 0)
        .collect();
    assert_eq!(runners.len(), 1, "exactly one instance checks: {runners:?}");
    let holder = runners[0];
    let ran = checks[holder].load(Ordering::SeqCst);
    assert!((3..=10).contains(&ran), "one check per interval: {ran}");
    // Failing checks keep the breaker open (60 s break, never half-open).
    assert!(members.iter().flatten().all(|m| m.state() == State::Open));
    // The holder dies: another takes the turn within the lease (three
    // intervals) and only one does.
    members[holder] = None;
    let before: Vec<usize> = checks.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    tokio::time::sleep(interval * 3 + interval * 3).await;
    let next: Vec<usize> = (0..10)
        .filter(|i| *i != holder && checks[*i].load(Ordering::SeqCst) > before[*i])
        .collect();
    assert_eq!(next.len(), 1, "one new holder: {next:?}");
    assert_eq!(
        checks[holder].load(Ordering::SeqCst),
        before[holder],
        "the dead holder checks no more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_check_ends_a_minute_long_break_within_an_interval_on_redis() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let interval = Duration::from_millis(300);
    let mut members = Vec::new();
    for _ in 0..3 {
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let layer =
            DistributedCircuitBreakerLayer::new("observe-healthy", Policy::default(), store)
                .unwrap()
                .health_check(interval, || async { true })
                .unwrap();
        members.push(Member::new(layer, &dependency));
    }
    members[0]
        .layer
        .breaker()
        .force(Force::OpenThenProbe(Duration::from_secs(60)))
        .await
        .unwrap();
    // Calls bring the probes once the check moved the breaker to half-open.
    for _ in 0..500 {
        if members.iter().all(|m| m.state() == State::Closed) {
            break;
        }
        traffic(&members, Duration::from_millis(10)).await;
    }
    assert!(members.iter().all(|m| m.state() == State::Closed));
    let passed = |e: &Event| matches!(e, Event::FleetTransition(t) if t.to == State::HalfOpen && t.cause.rule == Rule::HealthCheckPassed);
    eventually("the check's success told", || {
        members.iter().map(|m| m.count(passed)).sum::<usize>() == 1
    })
    .await;
}

/// The same on a paused clock, exactly: the break of a minute ends at the
/// first check, one interval after it began.
#[tokio::test(start_paused = true)]
async fn a_healthy_check_ends_the_break_at_the_first_interval() {
    let store = MemoryStore::new();
    let interval = Duration::from_secs(2);
    let layer = DistributedCircuitBreakerLayer::new("paused-health", Policy::default(), store)
        .unwrap()
        .health_check(interval, || async { true })
        .unwrap();
    let breaker = layer.breaker();
    breaker
        .force(Force::OpenThenProbe(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(breaker.snapshot().state, State::Open);
    support::settle(interval).await;
    assert_eq!(
        breaker.snapshot().state,
        State::HalfOpen,
        "half-open after one interval"
    );
    // A second health check for the same breaker is a configuration error.
    let again = layer.health_check(interval, || async { true });
    assert_eq!(again.unwrap_err().field(), "health_check");
}

#[tokio::test]
async fn a_bad_health_check_interval_is_refused_naming_the_field() {
    let layer =
        DistributedCircuitBreakerLayer::new("bad-health", Policy::default(), MemoryStore::new())
            .unwrap();
    let error = layer
        .health_check(Duration::ZERO, || async { true })
        .unwrap_err();
    assert_eq!(error.field(), "health_check.interval");
}
