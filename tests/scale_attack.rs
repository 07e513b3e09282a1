//! Outside attack on the scaling work (idle breakers, implicit generation,
//! lazy records, the hub, the quick_cache registry), against real
//! redis-server processes on loopback, production-like: every instance has
//! its own `RedisStore`, healthy traffic comes first, default policy unless a
//! test says why not.
//!
//! The attacks that found defects run with the suite (all fixed): a
//! replica's run discarded when the store's closed record expired (a busy
//! instance overshot its threshold, the fleet too); a resubscription that
//! made every idle breaker read at once and degraded most of them (which
//! then ignored the fleet's trips); a newcomer's burst of first calls
//! timing out in its own queue and passing open breakers; a forged
//! first-transition generation half an hour ahead taken on its word. The
//! longer ones that passed from the start run with
//! `cargo test --all-features --test scale_attack -- --include-ignored`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::{
    Breaker, DistributedCircuitBreaker, DistributedCircuitBreakerLayer, ErrorsAsFailures, Force,
    KeyExtractor, KeyedCircuitBreakerLayer, Policy, RedisStore, State,
};
use support::dependency::Dependency;
use support::redis::RedisServer;
use tokio::time::{Instant, MissedTickBehavior};
use tower::{Layer, Service, ServiceExt};

type Svc = DistributedCircuitBreaker<Dependency, ErrorsAsFailures>;

/// Fleet tests measure timing: one at a time.
static FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const INSTANCES: usize = 10;
const CALL_EVERY: Duration = Duration::from_millis(10);
const WARM_UP: Duration = Duration::from_millis(1_500);

struct Instance {
    svc: Svc,
    breaker: Breaker,
}

async fn instance(url: &str, name: &str, policy: Policy, dependency: &Dependency) -> Instance {
    let store = RedisStore::connect(url).await.unwrap();
    let layer = DistributedCircuitBreakerLayer::new(name, policy, store).unwrap();
    Instance {
        breaker: layer.breaker(),
        svc: layer.layer(dependency.clone()),
    }
}

/// One call; whether it succeeded. Panics if it hangs.
async fn call(svc: &mut Svc) -> bool {
    let fut = async {
        match ServiceExt::<()>::ready(svc).await {
            Ok(ready) => ready.call(()).await.is_ok(),
            Err(_) => false,
        }
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .expect("a call hung")
}

fn is_open(b: &Breaker) -> bool {
    b.snapshot().state != State::Closed
}

fn exists(redis: &RedisServer, key: &str) -> bool {
    redis.cli(&["EXISTS", key]) == "1"
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "never reached: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every instance calls every `CALL_EVERY` until `stop`.
fn traffic(instances: &[Instance], stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    instances
        .iter()
        .enumerate()
        .map(|(i, instance)| {
            let mut svc = instance.svc.clone();
            let stop = stop.clone();
            let n = instances.len() as u32;
            tokio::spawn(async move {
                tokio::time::sleep(CALL_EVERY * i as u32 / n).await;
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

async fn stop_traffic(stop: &Arc<AtomicBool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(false, Ordering::SeqCst);
}

/// A policy whose closed records expire after 5 s (the default window is
/// 10 s; shorter only to keep the test short) and whose break is 1 s (so the
/// test can recover); everything else is the default: consecutive_failures(5),
/// sync every second.
fn short_window() -> Policy {
    Policy::builder()
        .window(Duration::from_secs(5))
        .break_duration(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// One busy instance (1,000 calls/s, one at a time) trips, recovers, sits
/// idle long enough for the closed record to expire in Redis (as designed:
/// a closed record lives one window), warms up again and then sees an
/// outage. Promise: "A single busy instance stops at exactly its threshold
/// at any rate" and "sharing never makes an instance trip later than a
/// private breaker".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_stops_at_its_threshold_after_its_record_expired() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let one = instance(&redis.url(), "busy", short_window(), &dependency).await;
    let mut svc = one.svc.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut outages = Vec::new();
    for round in 0..2 {
        // Healthy warm-up, longer than a sync interval.
        let warm_until = Instant::now() + WARM_UP;
        while Instant::now() < warm_until {
            tick.tick().await;
            call(&mut svc).await;
        }
        assert_eq!(one.breaker.snapshot().state, State::Closed);
        println!(
            "round {round}: generation held {}, record in Redis: {}",
            one.breaker.snapshot().generation,
            exists(&redis, "dcb:{busy}")
        );
        let before = dependency.failures();
        dependency.set_down(true);
        for _ in 0..200 {
            tick.tick().await;
            call(&mut svc).await;
        }
        outages.push(dependency.failures() - before);
        assert!(is_open(&one.breaker));
        if round == 1 {
            break;
        }
        // Recovery: the probe succeeds and the breaker closes again.
        dependency.set_down(false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while one.breaker.snapshot().state != State::Closed {
            assert!(Instant::now() < deadline, "never recovered");
            tick.tick().await;
            call(&mut svc).await;
        }
        // A quiet spell: the closed record expires one window after its
        // last write (nothing is sent while idle).
        wait_for("the closed record expired", Duration::from_secs(15), || {
            !exists(&redis, "dcb:{busy}")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "failures before open: first outage {}, after the record expired {}",
        outages[0], outages[1]
    );
    assert_eq!(outages[0], 5, "the first outage");
    assert_eq!(
        outages[1], 5,
        "after its closed record expired, the busy instance let {} failures through (a private breaker: 5)",
        outages[1]
    );
}

/// Ten instances at 100 calls/s each: the promise (threshold + instances,
/// never 2x) after the fleet's record expired during a quiet spell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_trips_together_after_its_record_expired() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    let deps: Vec<Dependency> = (0..INSTANCES).map(|_| Dependency::new()).collect();
    let mut fleet = Vec::new();
    for d in &deps {
        fleet.push(instance(&redis.url(), "inventory", short_window(), d).await);
    }
    let failures = || deps.iter().map(Dependency::failures).sum::<usize>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut outages = Vec::new();
    for round in 0..3 {
        let tasks = traffic(&fleet, &stop);
        tokio::time::sleep(WARM_UP).await;
        assert!(
            fleet.iter().all(|i| !is_open(&i.breaker)),
            "healthy traffic opened a breaker"
        );
        let before = failures();
        for d in &deps {
            d.set_down(true);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fleet.iter().all(|i| is_open(&i.breaker)) {
            assert!(Instant::now() < deadline, "the fleet never opened");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        outages.push(failures() - before);
        for d in &deps {
            d.set_down(false);
        }
        if round == 2 {
            stop_traffic(&stop, tasks).await;
            break;
        }
        let deadline = Instant::now() + Duration::from_secs(8);
        while !fleet
            .iter()
            .all(|i| i.breaker.snapshot().state == State::Closed)
        {
            assert!(Instant::now() < deadline, "the fleet never recovered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_traffic(&stop, tasks).await;
        wait_for("the closed record expired", Duration::from_secs(15), || {
            !exists(&redis, "dcb:{inventory}")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("failures before every instance was open: {outages:?} (first: fresh record; later: expired record)");
    // The README's promise for a fleet outage: a median of at most
    // threshold + instances (15) over three outages, none above twice that
    // (before the fix: 23 to 28 after the record expired).
    let mut sorted = outages.clone();
    sorted.sort_unstable();
    assert!(
        sorted[1] <= 15 && sorted[2] <= 30,
        "after the record expired the fleet let {outages:?} failures through"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Trips the fleet through `instances` (their dependencies down), then
/// waits until each of them is open.
async fn trip_through(instances: &[&Instance], deps: &[&Dependency]) {
    for d in deps {
        d.set_down(true);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !instances.iter().all(|i| is_open(&i.breaker)) {
        assert!(Instant::now() < deadline, "never tripped");
        for i in instances {
            let mut svc = i.svc.clone();
            call(&mut svc).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// An instance whose driver fell asleep (no call for a whole sync interval)
/// while the rest of the fleet tripped: its first call must not reach the
/// dependency. Twice: with the breaker never written before, and after a
/// trip, a recovery and an expired closed record (the sleeper then holds a
/// generation the store has forgotten).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended scale attack run: --include-ignored"]
async fn an_asleep_instance_never_calls_a_dependency_the_fleet_opened_meanwhile() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    let deps: Vec<Dependency> = (0..INSTANCES).map(|_| Dependency::new()).collect();
    let mut fleet = Vec::new();
    for d in &deps {
        fleet.push(instance(&redis.url(), "sleepy", short_window(), d).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for round in 0..2 {
        // Everyone warms up; then the sleeper (instance 0) goes quiet.
        let tasks = traffic(&fleet, &stop);
        tokio::time::sleep(WARM_UP).await;
        stop_traffic(&stop, tasks).await;
        let tasks = traffic(&fleet[1..], &stop);
        tokio::time::sleep(Duration::from_millis(2_500)).await; // asleep by now
        let awake: Vec<&Instance> = fleet[1..].iter().collect();
        let down: Vec<&Dependency> = deps.iter().collect();
        trip_through(&awake, &down).await;
        stop_traffic(&stop, tasks).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reached = deps[0].calls();
        let mut svc = fleet[0].svc.clone();
        let passed = call(&mut svc).await || deps[0].calls() > reached;
        assert!(
            !passed && deps[0].calls() == reached,
            "round {round}: the asleep instance's first call reached a dependency the fleet holds open (state {:?})",
            fleet[0].breaker.snapshot()
        );
        // Recover and let the closed record expire.
        for d in &deps {
            d.set_down(false);
        }
        let tasks = traffic(&fleet, &stop);
        let deadline = Instant::now() + Duration::from_secs(8);
        while !fleet
            .iter()
            .all(|i| i.breaker.snapshot().state == State::Closed)
        {
            assert!(Instant::now() < deadline, "the fleet never recovered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_traffic(&stop, tasks).await;
        wait_for("the closed record expired", Duration::from_secs(15), || {
            !exists(&redis, "dcb:{sleepy}")
        })
        .await;
    }
}

/// An operator's Force::Open while every instance is asleep reaches them
/// all at once; Force::Reset too. Once with a fresh breaker, once after the
/// record expired (announcement generation far ahead of the one held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended scale attack run: --include-ignored"]
async fn a_force_announced_while_the_fleet_sleeps_reaches_every_instance() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    let deps: Vec<Dependency> = (0..INSTANCES).map(|_| Dependency::new()).collect();
    let mut fleet = Vec::new();
    for d in &deps {
        fleet.push(instance(&redis.url(), "forced", short_window(), d).await);
    }
    let operator = instance(&redis.url(), "forced", short_window(), &Dependency::new()).await;
    let stop = Arc::new(AtomicBool::new(false));
    for round in 0..2 {
        let tasks = traffic(&fleet, &stop);
        tokio::time::sleep(WARM_UP).await;
        stop_traffic(&stop, tasks).await;
        tokio::time::sleep(Duration::from_millis(2_500)).await; // all asleep
        let calls_before: Vec<usize> = deps.iter().map(Dependency::calls).collect();
        operator.breaker.force(Force::Open(None)).await.unwrap();
        wait_for("Force::Open everywhere", Duration::from_millis(500), || {
            fleet
                .iter()
                .all(|i| i.breaker.snapshot().state == State::ForcedOpen)
        })
        .await;
        for i in &fleet {
            let mut svc = i.svc.clone();
            assert!(!call(&mut svc).await);
        }
        let calls_after: Vec<usize> = deps.iter().map(Dependency::calls).collect();
        assert_eq!(
            calls_before, calls_after,
            "round {round}: a forced-open call reached the dependency"
        );
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        operator.breaker.force(Force::Reset).await.unwrap();
        wait_for(
            "Force::Reset everywhere",
            Duration::from_millis(500),
            || {
                fleet
                    .iter()
                    .all(|i| i.breaker.snapshot().state == State::Closed)
            },
        )
        .await;
        for i in &fleet {
            let mut svc = i.svc.clone();
            assert!(call(&mut svc).await, "round {round}: closed after reset");
        }
        // Let the reset's closed record expire: the next force jumps ahead.
        wait_for("the closed record expired", Duration::from_secs(15), || {
            !exists(&redis, "dcb:{forced}")
        })
        .await;
    }
}

/// FLUSHALL while the fleet is open and the dependency still down: the
/// fleet follows the store (implicit closed), trips again within the
/// promise, never hangs, and recovers once the dependency is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended scale attack run: --include-ignored"]
async fn flushall_while_open_then_immediate_failures() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    let deps: Vec<Dependency> = (0..INSTANCES).map(|_| Dependency::new()).collect();
    let mut fleet = Vec::new();
    let policy = Policy::builder()
        .break_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    for d in &deps {
        fleet.push(instance(&redis.url(), "flushed", policy.clone(), d).await);
    }
    let failures = || deps.iter().map(Dependency::failures).sum::<usize>();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = traffic(&fleet, &stop);
    tokio::time::sleep(WARM_UP).await;
    for d in &deps {
        d.set_down(true);
    }
    wait_for("the fleet opened", Duration::from_secs(5), || {
        fleet.iter().all(|i| is_open(&i.breaker))
    })
    .await;
    let before = failures();
    redis.cli(&["FLUSHALL"]);
    // Every instance learns the store lost the breaker and trips again.
    let flushed = Instant::now();
    let mut reclosed = false;
    loop {
        assert!(
            flushed.elapsed() < Duration::from_secs(10),
            "the fleet never re-opened after FLUSHALL"
        );
        if fleet
            .iter()
            .any(|i| i.breaker.snapshot().state == State::Closed)
        {
            reclosed = true;
        }
        if reclosed && fleet.iter().all(|i| is_open(&i.breaker)) && exists(&redis, "dcb:{flushed}")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let after_flush = failures() - before;
    println!("failures between FLUSHALL and the fleet open again: {after_flush}");
    assert!(after_flush <= 30, "{after_flush} failures after FLUSHALL");
    // Recovery.
    for d in &deps {
        d.set_down(false);
    }
    wait_for("recovered after FLUSHALL", Duration::from_secs(10), || {
        fleet
            .iter()
            .all(|i| i.breaker.snapshot().state == State::Closed)
    })
    .await;
    stop_traffic(&stop, tasks).await;
    assert!(fleet.iter().all(|i| !i.breaker.is_degraded()));
}

/// A rate-rule fleet (failure_rate 0.5, minimum_calls 20) with thousands
/// of successes: one instance sees a burst of 20 failures in a row. The
/// fleet's rate is ~1 %: nothing may open (no instance alone has a partial
/// window either: each holds hundreds of its own successes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended scale attack run: --include-ignored"]
async fn a_rate_rule_fleet_does_not_trip_on_one_instances_burst() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    let policy = Policy::builder()
        .failure_rate(0.5)
        .minimum_calls(20)
        .build()
        .unwrap();
    let deps: Vec<Dependency> = (0..INSTANCES).map(|_| Dependency::new()).collect();
    let mut fleet = Vec::new();
    for d in &deps {
        fleet.push(instance(&redis.url(), "rated", policy.clone(), d).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = traffic(&fleet, &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w: String = redis.cli(&["HGET", "dcb:{rated}", "w"]);
    println!("window before the burst: {w}");
    // A burst of 20 failures on instance 0, straight in a row.
    deps[0].set_down(true);
    let mut svc = fleet[0].svc.clone();
    for _ in 0..20 {
        call(&mut svc).await;
    }
    deps[0].set_down(false);
    let until = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < until {
        let open: Vec<bool> = fleet.iter().map(|i| is_open(&i.breaker)).collect();
        assert!(
            !open.iter().any(|o| *o),
            "20 failures among thousands of successes opened {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // And the fleet's real rate still trips it: everyone fails.
    for d in &deps {
        d.set_down(true);
    }
    wait_for(
        "the fleet opened on its rate",
        Duration::from_secs(15),
        || fleet.iter().all(|i| is_open(&i.breaker)),
    )
    .await;
    stop_traffic(&stop, tasks).await;
}

// The request type is `String`, so the extractor takes `&String`.
#[allow(clippy::ptr_arg)]
fn key_of(k: &String) -> Option<String> {
    Some(k.clone())
}

/// A keyed breaker that the registry evicted while the fleet held its key
/// open is re-created and must read the store before its first call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended scale attack run: --include-ignored"]
async fn a_keyed_breaker_evicted_and_recreated_while_the_fleet_is_open() {
    let redis = RedisServer::start();
    let store_a = RedisStore::connect(&redis.url()).await.unwrap();
    let store_b = RedisStore::connect(&redis.url()).await.unwrap();
    let a = DistributedCircuitBreakerLayer::new("tenants", Policy::default(), store_a)
        .unwrap()
        .key_by(key_of as fn(&String) -> Option<String>)
        .limits(64, Duration::from_secs(3600))
        .unwrap();
    let b = DistributedCircuitBreakerLayer::new("tenants", Policy::default(), store_b)
        .unwrap()
        .key_by(key_of as fn(&String) -> Option<String>)
        .limits(8, Duration::from_secs(3600))
        .unwrap();
    // Healthy traffic on "acme" in both processes.
    for _ in 0..50 {
        for layer in [&a, &b] {
            let permit = layer.breaker_for("acme").admit().await.unwrap();
            permit.finish(distributed_circuit_breaker::Outcome::Success);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Process B sees acme fail: the fleet opens.
    for _ in 0..5 {
        if let Ok(p) = b.breaker_for("acme").admit().await {
            p.finish(distributed_circuit_breaker::Outcome::Failure);
        }
    }
    wait_for("acme open in A", Duration::from_secs(2), || {
        is_open(&a.breaker("acme").unwrap())
    })
    .await;
    // A's steady traffic on other tenants evicts acme (checked only now and
    // then: looking a breaker up counts as a use in the cache).
    let mut t = 0;
    loop {
        if t % 200 == 0 && a.breaker("acme").is_none() {
            break;
        }
        assert!(t < 20_000, "acme never evicted");
        for _ in 0..3 {
            let p = a.breaker_for(&format!("t{t}")).admit().await.unwrap();
            p.finish(distributed_circuit_breaker::Outcome::Success);
        }
        t += 1;
    }
    println!("acme evicted after {t} other tenants");
    // Re-created in A: a burst of concurrent first calls; none admitted.
    let breaker = a.breaker_for("acme");
    let admitted: Vec<_> = (0..20)
        .map(|_| {
            let b = breaker.clone();
            tokio::spawn(async move { b.admit().await.is_ok() })
        })
        .collect();
    for x in admitted {
        assert!(
            !x.await.unwrap(),
            "a re-created breaker admitted a call the fleet holds open"
        );
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 100,000 keyed breakers, idle: no Redis command while idle, no record;
/// then every layer and store dropped: every background task ends, and a
/// second round does not grow the process (nothing leaked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended scale attack run: --include-ignored"]
async fn a_hundred_thousand_keys_then_drop_everything() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline_tasks = metrics.num_alive_tasks();
    let mut rss_after = Vec::new();
    for round in 0..2 {
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let layer = DistributedCircuitBreakerLayer::new("flood", Policy::default(), store)
            .unwrap()
            .key_by(|k: &u32| Some(format!("k{k}")))
            .limits(120_000, Duration::from_secs(3600))
            .unwrap();
        one_call_per_key(&layer, 100_000).await;
        assert_eq!(layer.breakers(), 100_000);
        tokio::time::sleep(Duration::from_secs(3)).await; // everyone asleep
        let before = redis.command_calls("evalsha");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = redis.command_calls("evalsha") - before;
        println!(
            "round {round}: {idle} EVALSHA in 2 s idle, tasks alive {}",
            metrics.num_alive_tasks()
        );
        assert!(idle < 100, "idle breakers cost {idle} EVALSHA in 2 s");
        assert_eq!(redis.cli(&["DBSIZE"]), "0");
        drop(layer);
        let dropped = Instant::now();
        while metrics.num_alive_tasks() > baseline_tasks {
            assert!(
                dropped.elapsed() < Duration::from_secs(5),
                "round {round}: {} tasks still alive after every layer was dropped (baseline {baseline_tasks})",
                metrics.num_alive_tasks()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rss_after.push(rss_kb());
        println!("round {round}: rss after drop {} kB", rss_kb());
    }
    assert!(
        rss_after[1] < rss_after[0] + 100_000,
        "the second round grew the process: {rss_after:?} kB"
    );
}

/// One healthy call for each key `0..keys` through `layer`, 128 at a time.
async fn one_call_per_key<K>(layer: &KeyedCircuitBreakerLayer<K, ErrorsAsFailures>, keys: u32)
where
    K: KeyExtractor<u32> + Clone + Send + Sync + 'static,
{
    let svc = layer.layer(tower::service_fn(|_: u32| async {
        Ok::<_, std::io::Error>(())
    }));
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..128)
        .map(|_| {
            let (svc, next) = (svc.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= u64::from(keys) {
                        return;
                    }
                    svc.clone().oneshot(i as u32).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
}

/// Idle keyed breakers and a blip of the announcement subscription (a
/// network hiccup, a proxy restart, `CLIENT KILL TYPE pubsub`): the
/// resubscription tells every breaker to re-read at once. Promise: cost
/// follows activity, and nothing degrades while Redis is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_blip_with_many_idle_breakers() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    const KEYS: u32 = 50_000;
    let layer = DistributedCircuitBreakerLayer::new("blip", Policy::default(), store)
        .unwrap()
        .key_by(|k: &u32| Some(format!("k{k}")))
        .limits(120_000, Duration::from_secs(3600))
        .unwrap();
    one_call_per_key(&layer, KEYS).await;
    let degraded = |layer: &distributed_circuit_breaker::KeyedCircuitBreakerLayer<_, _>| {
        (0..KEYS)
            .filter(|k| {
                layer
                    .breaker(&format!("k{k}"))
                    .is_some_and(|b| b.is_degraded())
            })
            .count()
    };
    assert_eq!(degraded(&layer), 0, "creation burst");
    tokio::time::sleep(Duration::from_secs(3)).await; // asleep
    let before = redis.command_calls("evalsha") + redis.command_calls("evalsha_ro");
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let mut worst = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        worst = worst.max(degraded(&layer));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let storm = redis.command_calls("evalsha") + redis.command_calls("evalsha_ro") - before;
    let mut timeline = vec![worst];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let now = degraded(&layer);
        timeline.push(now);
        if now == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("after one subscription blip: {storm} EVALSHA in 4 s, up to {worst} of {KEYS} idle breakers degraded; degraded each second after: {timeline:?}");
    assert_eq!(
        worst, 0,
        "{worst} of {KEYS} breakers degraded with Redis healthy ({storm} EVALSHA)"
    );
}

/// The consequence: while a breaker is degraded by that self-inflicted
/// storm it ignores announcements, so a trip by the rest of the fleet does
/// not stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_blip_lets_calls_through_a_breaker_the_fleet_opened() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    const KEYS: u32 = 50_000;
    let a = DistributedCircuitBreakerLayer::new(
        "blip",
        Policy::default(),
        RedisStore::connect(&redis.url()).await.unwrap(),
    )
    .unwrap()
    .key_by(|k: &u32| Some(format!("k{k}")))
    .limits(120_000, Duration::from_secs(3600))
    .unwrap();
    let b = DistributedCircuitBreakerLayer::new(
        "blip",
        Policy::default(),
        RedisStore::connect(&redis.url()).await.unwrap(),
    )
    .unwrap()
    .key_by(|k: &u32| Some(format!("k{k}")))
    .limits(1024, Duration::from_secs(3600))
    .unwrap();
    one_call_per_key(&a, KEYS).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // asleep
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Pick ten keys that process A now holds degraded; the fleet (process B)
    // trips each of them.
    let mut victims: Vec<String> = (0..KEYS)
        .map(|k| format!("k{k}"))
        .filter(|k| a.breaker(k).is_some_and(|b| b.is_degraded()))
        .take(10)
        .collect();
    println!("{} degraded victims found", victims.len());
    if victims.is_empty() {
        // No storm (the fix): any ten idle breakers that lived through the
        // blip must still follow the fleet.
        victims = (0..10).map(|k| format!("k{k}")).collect();
    }
    // (An operator's command from process B: it waits for the store as
    // long as it takes, where a trip's report would be subject to this
    // one test process's own starved runtime.)
    for k in &victims {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match b.breaker_for(k).force(Force::Open(None)).await {
                Ok(opened) => {
                    assert_eq!(opened.state, State::ForcedOpen);
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "B could not force: {e}"),
            }
        }
    }
    let still = victims
        .iter()
        .filter(|k| a.breaker(k).unwrap().is_degraded())
        .count();
    println!("{still} victims still degraded in A as the fleet forced them open");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut admitted = 0;
    for k in &victims {
        if a.breaker(k).unwrap().admit().await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 0,
        "{admitted} of {} breakers the fleet opened 200 ms earlier still admitted calls in process A",
        victims.len()
    );
}

/// A new process (or a restarted one) joins a fleet that holds many keys
/// open (a shared dependency is down) and gets a burst of concurrent first
/// calls over those keys. "A new process joining mid-outage ... never calls a
/// dependency the fleet holds open."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_with_a_burst_of_first_calls_over_open_keys() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    let keys: u32 = std::env::var("NEWCOMER_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let fleet = DistributedCircuitBreakerLayer::new(
        "mass",
        Policy::default(),
        RedisStore::connect(&redis.url()).await.unwrap(),
    )
    .unwrap()
    .key_by(|k: &u32| Some(format!("k{k}")))
    .limits(10_000, Duration::from_secs(3600))
    .unwrap();
    for k in 0..keys {
        fleet
            .breaker_for(&format!("k{k}"))
            .force(Force::Open(None))
            .await
            .unwrap();
    }
    let newcomer = DistributedCircuitBreakerLayer::new(
        "mass",
        Policy::default(),
        RedisStore::connect(&redis.url()).await.unwrap(),
    )
    .unwrap()
    .key_by(|k: &u32| Some(format!("k{k}")))
    .limits(10_000, Duration::from_secs(3600))
    .unwrap();
    let reached = Arc::new(AtomicU64::new(0));
    let svc = newcomer.layer(tower::service_fn({
        let reached = reached.clone();
        move |_: u32| {
            reached.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, std::io::Error>(()) }
        }
    }));
    let calls: Vec<_> = (0..keys)
        .map(|k| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(k).await.is_ok() })
        })
        .collect();
    let mut passed = 0;
    for c in calls {
        if c.await.unwrap() {
            passed += 1;
        }
    }
    let degraded = (0..keys)
        .filter(|k| {
            newcomer
                .breaker(&format!("k{k}"))
                .is_some_and(|b| b.is_degraded())
        })
        .count();
    println!(
        "{passed} of {keys} first calls passed a forced-open breaker; {degraded} breakers degraded"
    );
    assert_eq!(reached.load(Ordering::SeqCst), 0, "{passed} calls reached dependencies the fleet holds open ({degraded} breakers degraded, Redis healthy)");
}

/// Redis paused (SIGSTOP) while the fleet sleeps, the dependency fails
/// meanwhile: no call hangs, each instance stops on its own threshold, and
/// after SIGCONT and recovery everyone is closed and in step again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended scale attack run: --include-ignored"]
async fn redis_paused_while_the_fleet_sleeps() {
    let _one = FLEET.lock().await;
    let redis = RedisServer::start();
    let deps: Vec<Dependency> = (0..INSTANCES).map(|_| Dependency::new()).collect();
    let policy = Policy::builder()
        .break_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut fleet = Vec::new();
    for d in &deps {
        fleet.push(instance(&redis.url(), "paused", policy.clone(), d).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = traffic(&fleet, &stop);
    tokio::time::sleep(WARM_UP).await;
    stop_traffic(&stop, tasks).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await; // asleep
    redis.pause();
    for d in &deps {
        d.set_down(true);
    }
    let tasks = traffic(&fleet, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, d) in deps.iter().enumerate() {
        assert!(
            d.failures() <= 5 + 2,
            "instance {i}: {} failures with Redis paused",
            d.failures()
        );
    }
    assert!(fleet.iter().all(|i| is_open(&i.breaker)));
    redis.resume();
    for d in &deps {
        d.set_down(false);
    }
    wait_for(
        "closed and in step after SIGCONT",
        Duration::from_secs(15),
        || {
            fleet
                .iter()
                .all(|i| i.breaker.snapshot().state == State::Closed && !i.breaker.is_degraded())
        },
    )
    .await;
    stop_traffic(&stop, tasks).await;
    // Still one breaker: a trip anywhere reaches everyone.
    for d in &deps {
        d.set_down(true);
    }
    let mut svc = fleet[0].svc.clone();
    for _ in 0..5 {
        call(&mut svc).await;
    }
    wait_for("the fleet opened together", Duration::from_secs(1), || {
        fleet.iter().all(|i| is_open(&i.breaker))
    })
    .await;
}

/// Two layers with the same name on one store (two services in one process
/// calling the same dependency): each has its own hub; trips, forces and
/// resets reach both, and dropping one leaves the other routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended scale attack run: --include-ignored"]
async fn two_layers_with_the_same_name_on_one_store() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let dep = Dependency::new();
    let first =
        DistributedCircuitBreakerLayer::new("twin", Policy::default(), store.clone()).unwrap();
    let second =
        DistributedCircuitBreakerLayer::new("twin", Policy::default(), store.clone()).unwrap();
    let other = instance(&redis.url(), "twin", Policy::default(), &Dependency::new()).await;
    let (mut s1, mut s2) = (first.layer(dep.clone()), second.layer(dep.clone()));
    for _ in 0..100 {
        assert!(call(&mut s1).await && call(&mut s2).await);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await; // asleep
                                                            // The first layer trips: the second learns at once.
    dep.set_down(true);
    for _ in 0..5 {
        call(&mut s1).await;
    }
    let failed = dep.failures();
    wait_for("the twin opened", Duration::from_millis(500), || {
        is_open(&second.breaker()) && is_open(&other.breaker)
    })
    .await;
    assert!(!call(&mut s2).await);
    assert_eq!(dep.failures(), failed, "the twin called an open dependency");
    // Reset from another process; then drop the first layer entirely.
    dep.set_down(false);
    other.breaker.force(Force::Reset).await.unwrap();
    wait_for("both closed", Duration::from_millis(500), || {
        !is_open(&first.breaker()) && !is_open(&second.breaker())
    })
    .await;
    drop(s1);
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    other.breaker.force(Force::Open(None)).await.unwrap();
    wait_for(
        "the survivor forced open",
        Duration::from_millis(500),
        || second.breaker().snapshot().state == State::ForcedOpen,
    )
    .await;
    assert!(!call(&mut s2).await);
}

/// A forged announcement (anyone with PUBLISH rights on `dcb:events`) of a
/// closed breaker whose generation is a plausible time, a little ahead of
/// the clock, for a breaker the store holds at the implicit generation.
/// Documented: "a plausible forgery lasts until the next answer of the
/// store (within a sync interval)". The instance is idle, as most are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_future_generation_outlives_a_sync_interval() {
    let redis = RedisServer::start();
    let dep_a = Dependency::new();
    let dep_b = Dependency::new();
    let a = instance(&redis.url(), "forgery", Policy::default(), &dep_a).await;
    let b = instance(&redis.url(), "forgery", Policy::default(), &dep_b).await;
    for _ in 0..100 {
        let (mut sa, mut sb) = (a.svc.clone(), b.svc.clone());
        assert!(call(&mut sa).await && call(&mut sb).await);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await; // a is asleep
    assert_eq!(a.breaker.snapshot().generation, 1);
    let forged = now_ms() + 30 * 60 * 1000;
    redis.cli(&["PUBLISH", "dcb:events", &format!("v1 0 {forged} 0 forgery")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("after the forgery a holds {:?}", a.breaker.snapshot());
    // The fleet trips for real (through b) a moment later.
    trip_through(&[&b], &[&dep_b, &dep_a]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await; // > a sync interval
    let reached = dep_a.calls();
    let mut sa = a.svc.clone();
    call(&mut sa).await;
    assert_eq!(
        dep_a.calls(),
        reached,
        "1.5 s after the real trip the forged state still let a call through to the open dependency (a holds {:?})",
        a.breaker.snapshot()
    );
}
