//! A fleet of ten instances, each with its own RedisStore (its own
//! connections), sharing one breaker in a real redis-server.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::{
    Breaker, BreakerError, DistributedCircuitBreaker, DistributedCircuitBreakerLayer, Policy,
    RedisStore, State,
};
use support::dependency::Dependency;
use support::redis::RedisServer;
use tower::{Layer, Service, ServiceExt};

const INSTANCES: usize = 10;
const THRESHOLD: u32 = 5;
const BREAK: Duration = Duration::from_millis(600);

fn policy() -> Policy {
    Policy::builder()
        .consecutive_failures(THRESHOLD)
        .break_duration(BREAK)
        .half_open_permits(1)
        .probe_lease(Duration::from_secs(2))
        .sync_interval(Duration::from_millis(50))
        .store_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
}

struct Fleet {
    services:
        Vec<DistributedCircuitBreaker<Dependency, distributed_circuit_breaker::ErrorsAsFailures>>,
    breakers: Vec<Breaker>,
}

async fn fleet(url: &str, name: &str, dependency: &Dependency) -> Fleet {
    let mut services = Vec::new();
    let mut breakers = Vec::new();
    for _ in 0..INSTANCES {
        let store = RedisStore::connect(url).await.unwrap();
        let layer = DistributedCircuitBreakerLayer::new(name, policy(), store).unwrap();
        breakers.push(layer.breaker());
        services.push(layer.layer(dependency.clone()));
    }
    Fleet { services, breakers }
}

async fn wait_all(breakers: &[Breaker], state: State) {
    for _ in 0..500 {
        if breakers.iter().all(|b| b.snapshot().state == state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let states: Vec<_> = breakers.iter().map(|b| b.snapshot().state).collect();
    panic!("not every instance reached {state}: {states:?}");
}

/// Every instance calls every 10 ms until `stop`; returns (succeeded, rejected, failed).
async fn traffic(
    fleet: &Fleet,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, usize, usize)>> {
    fleet
        .services
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, mut svc)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i as u64)).await;
                let (mut ok, mut rejected, mut failed) = (0, 0, 0);
                while !stop.load(Ordering::SeqCst) {
                    let result = match ServiceExt::<()>::ready(&mut svc).await {
                        Ok(s) => s.call(()).await,
                        Err(e) => Err(e),
                    };
                    match result.map_err(BreakerError::from) {
                        Ok(_) => ok += 1,
                        Err(BreakerError::Open(_)) => rejected += 1,
                        Err(_) => failed += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (ok, rejected, failed)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_trips_once_probes_once_and_closes_everywhere() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let fleet = fleet(&redis.url(), "payments", &dependency).await;
    dependency.set_down(true);

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = traffic(&fleet, stop.clone()).await;
    wait_all(&fleet.breakers, State::Open).await;
    let failed_before_open = dependency.failures();
    assert!(
        failed_before_open <= THRESHOLD as usize + INSTANCES,
        "{failed_before_open} failures reached the dependency before the fleet opened"
    );
    assert!(failed_before_open >= THRESHOLD as usize);

    // The break ends: one probe for the whole fleet, it fails, the breaker re-opens.
    let opened_at = dependency.failures();
    let open_gen = fleet.breakers[0].snapshot().generation;
    for _ in 0..300 {
        if fleet.breakers[0].snapshot().generation >= open_gen + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fleet.breakers[0].snapshot().generation,
        open_gen + 2,
        "open -> half-open -> open"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        dependency.failures() - opened_at,
        1,
        "one probe fleet-wide, not one per instance"
    );

    // The dependency recovers: the next probe succeeds and every instance closes.
    dependency.set_down(false);
    wait_all(&fleet.breakers, State::Closed).await;
    stop.store(true, Ordering::SeqCst);
    let mut rejected = 0;
    for task in tasks {
        rejected += task.await.unwrap().1;
    }
    assert!(rejected > 0, "open instances rejected calls fast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_with_different_names_never_affect_each_other() {
    let redis = RedisServer::start();
    let sick = Dependency::new();
    sick.set_down(true);
    let healthy = Dependency::new();
    let a = fleet(&redis.url(), "sick", &sick).await;
    let b = fleet(&redis.url(), "healthy", &healthy).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ta = traffic(&a, stop.clone()).await;
    let tb = traffic(&b, stop.clone()).await;
    wait_all(&a.breakers, State::Open).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for t in ta {
        t.await.unwrap();
    }
    for t in tb {
        let (_, rejected, failed) = t.await.unwrap();
        assert_eq!((rejected, failed), (0, 0));
    }
    assert!(b
        .breakers
        .iter()
        .all(|b| b.snapshot().state == State::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_traffic_costs_a_handful_of_commands_per_sync_interval() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let fleet = fleet(&redis.url(), "steady", &dependency).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let before = redis.command_calls("evalsha");
    let mut tasks = Vec::new();
    for svc in &fleet.services {
        let svc = svc.clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..500 {
                svc.clone().oneshot(()).await.unwrap();
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(120)).await; // let the last flush land
    let evalsha = redis.command_calls("evalsha") - before;
    let calls = calls.load(Ordering::SeqCst) as u64;
    assert_eq!(calls, 5_000);
    // No per-call round trip: a flush or refresh per instance per interval.
    assert!(evalsha * 10 < calls, "{evalsha} EVALSHA for {calls} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_breakers_cost_nothing_and_busy_ones_reread_every_tenth_interval() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let fleet = fleet(&redis.url(), "idle", &dependency).await;
    for svc in &fleet.services {
        svc.clone().oneshot(()).await.unwrap(); // starts each background task
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scripts = || redis.command_calls("evalsha") + redis.command_calls("evalsha_ro");
    let before = scripts();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = scripts() - before;
    assert_eq!(idle, 0, "10 idle closed breakers cost Redis nothing");

    // Healthy traffic for 20 intervals of 50 ms: every tenth interval each
    // instance re-reads (a backstop for changes nobody announced).
    let before = scripts();
    let end = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < end {
        for svc in &fleet.services {
            svc.clone().oneshot(()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let busy = scripts() - before;
    assert!(
        busy <= 40,
        "{busy} EVALSHA from 10 healthy instances in 1 s"
    );
    assert!(
        busy >= 10,
        "healthy breakers still re-read as a backstop: {busy}"
    );
}
