//! Local-first judgement against real redis-server processes, at the default
//! policy: a fleet warmed up by healthy traffic trips on few failures, a busy
//! instance stops at its threshold, newcomers never call a dependency the
//! fleet holds open, and a quorum keeps one bad instance from opening the
//! fleet.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::{
    Breaker, DistributedCircuitBreaker, DistributedCircuitBreakerLayer, ErrorsAsFailures, Force,
    Policy, RedisStore, State,
};
use support::dependency::Dependency;
use support::redis::RedisServer;
use tokio::time::{Instant, MissedTickBehavior};
use tower::{Layer, Service, ServiceExt};

const INSTANCES: usize = 10;
/// One call every 10 ms per instance: 100 calls/s each, 1,000 for the fleet.
const CALL_EVERY: Duration = Duration::from_millis(10);
/// Healthy traffic before the outage: longer than the default sync interval.
const WARM_UP: Duration = Duration::from_millis(1_500);

type Svc = DistributedCircuitBreaker<Dependency, ErrorsAsFailures>;

/// The fleet tests run one at a time: ten instances at 100 calls/s each are
/// what they measure, and two such fleets on two cores would measure the
/// machine instead.
static FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Instance {
    svc: Svc,
    breaker: Breaker,
}

/// An instance with its own `RedisStore` (its own connections), as a separate
/// process has.
async fn instance(url: &str, name: &str, policy: Policy, dependency: &Dependency) -> Instance {
    let store = RedisStore::connect(url).await.unwrap();
    let layer = DistributedCircuitBreakerLayer::new(name, policy, store).unwrap();
    Instance {
        breaker: layer.breaker(),
        svc: layer.layer(dependency.clone()),
    }
}

/// One call through `svc`; whether it succeeded.
async fn call(svc: &mut Svc) -> bool {
    match ServiceExt::<()>::ready(svc).await {
        Ok(ready) => ready.call(()).await.is_ok(),
        Err(_) => false,
    }
}

fn is_open(breaker: &Breaker) -> bool {
    breaker.snapshot().state != State::Closed
}

/// Every instance calls its dependency every `CALL_EVERY` until `stop`.
fn traffic(instances: &[Instance], stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    instances
        .iter()
        .enumerate()
        .map(|(i, instance)| {
            let mut svc = instance.svc.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                // Spread the instances over the interval, as real ones are.
                tokio::time::sleep(CALL_EVERY * i as u32 / INSTANCES as u32).await;
                let mut tick = tokio::time::interval(CALL_EVERY);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    call(&mut svc).await;
                }
            })
        })
        .collect()
}

/// Runs the fleet scenario and returns the failed calls that reached the
/// dependency before every instance was open.
async fn failures_before_all_open(warm_up: Duration) -> usize {
    let _one_at_a_time = FLEET.lock().await;
    let redis = RedisServer::start();
    let dependencies: Vec<Dependency> = (0..INSTANCES).map(|_| Dependency::new()).collect();
    let mut fleet = Vec::new();
    for dependency in &dependencies {
        fleet.push(instance(&redis.url(), "inventory", Policy::default(), dependency).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = traffic(&fleet, &stop);
    tokio::time::sleep(warm_up).await;
    assert!(
        fleet.iter().all(|i| !is_open(&i.breaker)),
        "healthy traffic opened a breaker"
    );
    for d in &dependencies {
        d.set_down(true);
    }
    let failures = || dependencies.iter().map(Dependency::failures).sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fleet.iter().all(|i| is_open(&i.breaker)) {
        assert!(Instant::now() < deadline, "the fleet never opened");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let counted = failures();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    counted
}

/// Three outages: the promise (threshold + instances, 15; ten private
/// breakers let 50 through) holds for the median, and no run is worse than
/// twice it. One run alone depends on how the machine schedules the trip's
/// way through Redis: on this shared 2-core machine, 13 to 15.
async fn fleet_trips_within_threshold_plus_instances(warm_up: Duration, what: &str) {
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(failures_before_all_open(warm_up).await);
    }
    println!("{what} fleet: {runs:?} failed calls before every instance was open");
    runs.sort_unstable();
    assert!(
        runs[1] <= 15,
        "median {} failures before the fleet was open: {runs:?}",
        runs[1]
    );
    assert!(runs[2] <= 30, "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_fleet_trips_within_threshold_plus_instances() {
    fleet_trips_within_threshold_plus_instances(WARM_UP, "warm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_fleet_trips_within_threshold_plus_instances() {
    fleet_trips_within_threshold_plus_instances(Duration::from_millis(50), "cold").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_stops_exactly_at_its_threshold() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let one = instance(&redis.url(), "busy", Policy::default(), &dependency).await;
    let mut svc = one.svc.clone();
    // 1,000 calls/s, one at a time, warmed up for longer than a sync interval.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let warm_until = Instant::now() + WARM_UP;
    while Instant::now() < warm_until {
        tick.tick().await;
        call(&mut svc).await;
    }
    assert_eq!(one.breaker.snapshot().state, State::Closed);
    dependency.set_down(true);
    for _ in 0..200 {
        tick.tick().await;
        call(&mut svc).await;
    }
    assert_eq!(
        dependency.failures(),
        5,
        "a private breaker stops at exactly the threshold; so must we"
    );
    assert!(is_open(&one.breaker));

    // With 8 calls in flight at once, at most the 7 others get through too.
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    dependency.set_delay(Duration::from_millis(2));
    let one = instance(&redis.url(), "busy", Policy::default(), &dependency).await;
    one.breaker.sync().await;
    dependency.set_down(true);
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let mut svc = one.svc.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    call(&mut svc).await;
                }
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    assert!(
        (5..=5 + 7).contains(&dependency.failures()),
        "{} failures with 8 calls in flight",
        dependency.failures()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_rate_trips_on_the_fleets_counts() {
    let redis = RedisServer::start();
    let policy = Policy::builder()
        .no_consecutive_failures()
        .failure_rate(0.5)
        .minimum_calls(40)
        .build()
        .unwrap();
    let dependency = Dependency::new();
    dependency.set_down(true);
    let mut fleet = Vec::new();
    for _ in 0..INSTANCES {
        fleet.push(instance(&redis.url(), "rate", policy.clone(), &dependency).await);
    }
    for (n, i) in fleet.iter().enumerate() {
        let mut svc = i.svc.clone();
        for _ in 0..8 {
            call(&mut svc).await;
        }
        assert!(i.breaker.sync().await);
        let calls = (n + 1) * 8;
        let open = is_open(&i.breaker);
        // No instance alone reaches the minimum; the fleet does at 40 calls.
        assert_eq!(open, calls >= 40, "after {calls} calls fleet-wide");
        if open {
            break;
        }
    }
    assert_eq!(dependency.failures(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_never_calls_a_dependency_the_fleet_holds_open() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let first = instance(&redis.url(), "payments", Policy::default(), &dependency).await;
    first.breaker.force(Force::Open(None)).await.unwrap();

    // A new process joins mid-outage and sends at once.
    let newcomer = instance(&redis.url(), "payments", Policy::default(), &dependency).await;
    let mut rejected = 0;
    for _ in 0..50 {
        let mut svc = newcomer.svc.clone();
        if !call(&mut svc).await {
            rejected += 1;
        }
    }
    assert_eq!(
        dependency.calls(),
        0,
        "the newcomer called a forced-open dependency"
    );
    assert_eq!(rejected, 50);

    // The same for a burst of concurrent first calls, with a tripped (not
    // forced) breaker.
    first.breaker.force(Force::Reset).await.unwrap();
    dependency.set_down(true);
    let mut svc = first.svc.clone();
    for _ in 0..5 {
        call(&mut svc).await;
    }
    let failed = dependency.failures();
    assert!(first.breaker.sync().await);
    assert_eq!(first.breaker.snapshot().state, State::Open);
    let newcomer = instance(&redis.url(), "payments", Policy::default(), &dependency).await;
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let svc = newcomer.svc.clone();
            tokio::spawn(async move { ServiceExt::<()>::oneshot(svc, ()).await.is_err() })
        })
        .collect();
    for call in burst {
        assert!(
            call.await.unwrap(),
            "a newcomer's call passed an open breaker"
        );
    }
    assert_eq!(dependency.failures(), failed);
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_breaker_recreated_after_eviction_remembers_the_fleet() {
    use distributed_circuit_breaker::ByHeader;

    let redis = RedisServer::start();
    let dependency = Dependency::new();
    dependency.set_down(true);
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let layer = DistributedCircuitBreakerLayer::new("tenants", Policy::default(), store)
        .unwrap()
        .key_by(ByHeader::new(http::HeaderName::from_static("x-tenant")))
        .limits(2, Duration::from_secs(3600))
        .unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(tower::service_fn({
            let dependency = dependency.clone();
            move |_: http::Request<()>| {
                let mut dependency = dependency.clone();
                async move { dependency.call(()).await }
            }
        }));
    let request = |tenant: &str| {
        http::Request::builder()
            .header("x-tenant", tenant)
            .body(())
            .unwrap()
    };
    for _ in 0..5 {
        let _ = svc.clone().oneshot(request("acme")).await;
    }
    let acme = layer.breaker("acme").unwrap();
    assert!(acme.sync().await);
    assert_eq!(acme.snapshot().state, State::Open);
    // The trip reached the store (not only this replica's own view).
    let opened = Instant::now();
    while redis.cli(&["HGET", "dcb:{tenants/acme}", "st"]) != "1" {
        assert!(
            opened.elapsed() < Duration::from_secs(2),
            "the trip never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let failed = dependency.failures();
    // Other tenants in steady use push "acme" out of the registry of two
    // (one-off keys alone would not: the eviction is scan-resistant).
    dependency.set_down(false);
    let mut tenant = 0;
    while layer.breaker("acme").is_some() {
        assert!(tenant < 100, "acme was never evicted");
        for _ in 0..3 {
            let _ = svc.clone().oneshot(request(&format!("t{tenant}"))).await;
        }
        tenant += 1;
    }
    dependency.set_down(true);
    for _ in 0..20 {
        assert!(svc.clone().oneshot(request("acme")).await.is_err());
    }
    assert_eq!(
        dependency.failures(),
        failed,
        "the re-created breaker called a dependency the fleet holds open"
    );
}

/// Nine healthy instances and one whose own calls all fail (its own network
/// path is broken).
async fn one_bad_instance(quorum: u32) -> Vec<bool> {
    let _one_at_a_time = FLEET.lock().await;
    let redis = RedisServer::start();
    let policy = Policy::builder().fleet_quorum(quorum).build().unwrap();
    let dependencies: Vec<Dependency> = (0..INSTANCES).map(|_| Dependency::new()).collect();
    let mut fleet = Vec::new();
    for d in &dependencies {
        fleet.push(instance(&redis.url(), "quorum", policy.clone(), d).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = traffic(&fleet, &stop);
    tokio::time::sleep(WARM_UP).await;
    dependencies[0].set_down(true);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    for i in &fleet {
        i.breaker.sync().await;
    }
    fleet.iter().map(|i| is_open(&i.breaker)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_quorum_of_two_one_bad_instance_opens_only_itself() {
    let open = one_bad_instance(2).await;
    assert!(open[0], "the bad instance opened itself");
    assert_eq!(
        open.iter().filter(|o| **o).count(),
        1,
        "only the bad instance is open: {open:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_quorum_of_one_a_trip_anywhere_opens_the_fleet() {
    let open = one_bad_instance(1).await;
    assert!(open.iter().all(|o| *o), "every instance is open: {open:?}");
}

/// A dependency that fails one call in `every`, at deterministic pseudo-random
/// places (xorshift), never more than `max_run` times in a row for any one
/// instance over the test (checked).
#[derive(Clone)]
struct Scattered {
    state: Arc<std::sync::atomic::AtomicU64>,
    every: u64,
    run: Arc<std::sync::atomic::AtomicU64>,
    longest: Arc<std::sync::atomic::AtomicU64>,
}

impl Scattered {
    fn new(seed: u64, every: u64) -> Self {
        Scattered {
            state: Arc::new(std::sync::atomic::AtomicU64::new(seed | 1)),
            every,
            run: Arc::default(),
            longest: Arc::default(),
        }
    }
}

impl Service<()> for Scattered {
    type Response = ();
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<(), std::io::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        let mut x = self.state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, Ordering::Relaxed);
        if x % self.every == 0 {
            let run = self.run.fetch_add(1, Ordering::Relaxed) + 1;
            self.longest.fetch_max(run, Ordering::Relaxed);
            std::future::ready(Err(std::io::Error::other("scattered failure")))
        } else {
            self.run.store(0, Ordering::Relaxed);
            std::future::ready(Ok(()))
        }
    }
}

/// Ten healthy instances whose dependency fails now and then (one call in
/// `every`), never five times in a row for any instance: no private breaker
/// would open, and the shared one must not either.
async fn scattered_failures_keep_the_fleet_closed(every: u64) {
    let _one_at_a_time = FLEET.lock().await;
    let redis = RedisServer::start();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut breakers = Vec::new();
    let mut deps = Vec::new();
    for i in 0..INSTANCES {
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let layer =
            DistributedCircuitBreakerLayer::new("scattered", Policy::default(), store).unwrap();
        breakers.push(layer.breaker());
        let dep = Scattered::new(0x9E37_79B9_7F4A_7C15 ^ (i as u64 * 7919 + 1), every);
        deps.push(dep.clone());
        let svc = layer.layer(dep);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(CALL_EVERY * i as u32 / INSTANCES as u32).await;
            let mut tick = tokio::time::interval(CALL_EVERY);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let _ = ServiceExt::<()>::oneshot(svc.clone(), ()).await;
            }
        }));
    }
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for b in &breakers {
            assert_eq!(
                b.snapshot().state,
                State::Closed,
                "one call in {every} failing opened the fleet"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let longest = deps
        .iter()
        .map(|d| d.longest.load(Ordering::Relaxed))
        .max()
        .unwrap();
    assert!(longest < 5, "the pattern itself held a run of {longest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_failures_at_5_percent_keep_a_healthy_fleet_closed() {
    scattered_failures_keep_the_fleet_closed(20).await;
}
