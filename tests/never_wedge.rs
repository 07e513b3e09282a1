//! Nothing wedges: orphaned half-open permits, a store whose generation went
//! back, forged announcements and stale backlogs, each against real
//! redis-server processes. Every test here failed on 0.1.

mod support;

use std::time::Duration;

use distributed_circuit_breaker::{
    Breaker, DistributedCircuitBreaker, DistributedCircuitBreakerLayer, ErrorsAsFailures, Force,
    Policy, RedisStore, State,
};
use support::dependency::Dependency;
use support::proxy::FaultProxy;
use support::redis::RedisServer;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// The default policy with a short break (so that tests reach half-open
/// quickly); the probe lease (10 s) and sync interval (1 s) are the defaults.
fn policy() -> Policy {
    Policy::builder()
        .break_duration(Duration::from_millis(300))
        .build()
        .unwrap()
}

const SYNC: Duration = Duration::from_secs(1);

struct Instance {
    svc: DistributedCircuitBreaker<Dependency, ErrorsAsFailures>,
    breaker: Breaker,
}

async fn instance(url: &str, name: &str, dependency: &Dependency) -> Instance {
    let store = RedisStore::connect(url).await.unwrap();
    let layer = DistributedCircuitBreakerLayer::new(name, policy(), store).unwrap();
    Instance {
        breaker: layer.breaker(),
        svc: layer.layer(dependency.clone()),
    }
}

impl Instance {
    /// One call; whether it reached the dependency and succeeded.
    async fn call(&self) -> bool {
        let mut svc = self.svc.clone();
        match ServiceExt::<()>::ready(&mut svc).await {
            Ok(ready) => ready.call(()).await.is_ok(),
            Err(_) => false,
        }
    }

    fn state(&self) -> State {
        self.breaker.snapshot().state
    }
}

/// Trips the shared breaker through `instance` and waits for its break to end.
async fn trip(instance: &Instance, dependency: &Dependency) {
    dependency.set_down(true);
    for _ in 0..5 {
        instance.call().await;
    }
    assert!(instance.breaker.sync().await);
    assert_eq!(instance.state(), State::Open);
    // The local trip's report may still be on its way to the store.
    tokio::time::sleep(Duration::from_millis(50)).await;
    dependency.set_down(false);
}

/// Calls from every instance every 10 ms until the dependency has been
/// reached `calls` more times; returns how long that took.
async fn until_the_dependency_is_reached(fleet: &[&Instance], dependency: &Dependency) -> Duration {
    let start = Instant::now();
    let before = dependency.calls();
    while dependency.calls() == before {
        assert!(start.elapsed() < Duration::from_secs(15), "never probed");
        for i in fleet {
            i.call().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_while_acquiring_does_not_hold_the_permit() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let a = instance(&redis.url(), "orphan", &dependency).await;
    let b = instance(&redis.url(), "orphan", &dependency).await;
    trip(&a, &dependency).await;
    tokio::time::sleep(policy().break_duration() + Duration::from_millis(50)).await;

    // The break is over. A asks for the permit while Redis is stopped, and
    // its caller gives up 10 ms later (a client timeout, a dropped request).
    redis.pause();
    let svc = a.svc.clone();
    let asking = tokio::spawn(async move { ServiceExt::<()>::oneshot(svc, ()).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    asking.abort();
    let _ = asking.await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    redis.resume();

    // Redis then granted the permit to nobody; the blind release frees it,
    // and the next probe happens within a sync interval (0.1: the lease, 10 s).
    let took = until_the_dependency_is_reached(&[&b], &dependency).await;
    assert!(took < SYNC, "the next probe came after {took:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(b.call().await);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_as_the_break_ends_does_not_wedge_a_healthy_fleet() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(instance(&redis.url(), "paused", &dependency).await);
    }
    for i in &fleet {
        i.breaker.sync().await;
    }
    trip(&fleet[0], &dependency).await;
    for i in &fleet {
        i.breaker.sync().await;
        assert_eq!(i.state(), State::Open);
    }
    // Redis stops 30 ms before the break ends, for twice the store timeout,
    // while every instance keeps calling: the permit requests time out.
    tokio::time::sleep(policy().break_duration() - Duration::from_millis(30)).await;
    redis.pause();
    let paused_until = Instant::now() + Duration::from_millis(100);
    while Instant::now() < paused_until {
        for i in &fleet {
            i.call().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.resume();
    let resumed = Instant::now();
    let refs: Vec<&Instance> = fleet.iter().collect();
    until_the_dependency_is_reached(&refs, &dependency).await;
    // The healthy dependency is called again, and the whole fleet follows the
    // shared state closed within two sync intervals (0.1: rejected for 5 s).
    while !fleet
        .iter()
        .all(|i| i.state() == State::Closed && !i.breaker.is_degraded())
    {
        assert!(
            resumed.elapsed() < 3 * SYNC,
            "not every instance closed: {:?}",
            fleet.iter().map(Instance::state).collect::<Vec<_>>()
        );
        for i in &fleet {
            i.call().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_older_breaker_is_followed_and_counted() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let a = instance(&redis.url(), "restored", &dependency).await;
    let b = instance(&redis.url(), "restored", &dependency).await;
    assert!(a.call().await);
    // A breaker with a record of its own (a healthy one has none to back up).
    a.breaker.force(Force::Reset).await.unwrap();
    assert!(a.breaker.sync().await);
    let key = "dcb:{restored}";
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let dump: Vec<u8> = redis::cmd("DUMP")
        .arg(key)
        .query_async(&mut admin)
        .await
        .unwrap();
    let old = a.breaker.snapshot().generation;

    // The breaker opens, then a restore from backup (or a failover that lost
    // the last writes) brings back the older, closed breaker.
    trip(&a, &dependency).await;
    b.breaker.sync().await;
    assert_eq!(b.state(), State::Open);
    let _: () = redis::cmd("RESTORE")
        .arg(key)
        .arg(0)
        .arg(dump)
        .arg("REPLACE")
        .query_async(&mut admin)
        .await
        .unwrap();

    // Every process follows the store within a sync interval...
    let restored = Instant::now();
    while !(a.state() == State::Closed && b.state() == State::Closed) {
        assert!(
            restored.elapsed() < SYNC + Duration::from_millis(500),
            "never followed the store"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.breaker.snapshot().generation, old);
    // ...counts again (0.1 dropped every batch as stale)...
    dependency.set_down(true);
    for _ in 0..5 {
        a.call().await;
    }
    assert!(a.breaker.sync().await);
    b.breaker.sync().await;
    assert_eq!(b.state(), State::Open, "the fleet tripped again");
    // ...and operators' commands take effect.
    b.breaker.force(Force::Reset).await.unwrap();
    a.breaker.sync().await;
    assert_eq!(a.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_announcements_do_not_take_the_fleet_over() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    let a = instance(&redis.url(), "forged", &dependency).await;
    let b = instance(&redis.url(), "forged", &dependency).await;
    assert!(a.call().await);
    a.breaker.sync().await;
    let g = a.breaker.snapshot().generation;

    // A huge generation (0.1 adopted it and then ignored the store forever)
    // and one far ahead are checked against the store, not adopted.
    for generation in [9_007_199_254_740_990u64, g + 1_000] {
        redis.cli(&[
            "PUBLISH",
            "dcb:events",
            &format!("v1 3 {generation} 60000 forged"),
        ]);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.state(), State::Closed);
    assert_eq!(a.breaker.snapshot().generation, g);

    // The very next generation looks like a real transition and is applied
    // (from the implicit generation it is checked with a read at once), but
    // the store's next answer replaces it within a sync interval.
    redis.cli(&[
        "PUBLISH",
        "dcb:events",
        &format!("v1 3 {} 60000 forged", g + 1),
    ]);
    let forged = Instant::now();
    while a.state() != State::Closed {
        assert!(
            forged.elapsed() < SYNC + Duration::from_millis(500),
            "never corrected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A real command still reaches every process.
    b.breaker.force(Force::Open(None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.state(), State::ForcedOpen);
    assert!(a.breaker.snapshot().generation > g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_from_before_a_partition_does_not_retrip_a_recovered_fleet() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port()).await;
    let dependency = Dependency::new();
    // A reaches Redis through the proxy; B directly.
    let a = instance(&proxy.url(), "backlog", &dependency).await;
    let b = instance(&redis.url(), "backlog", &dependency).await;
    assert!(a.call().await && b.call().await);
    a.breaker.sync().await;

    // A is cut off and sees the dependency fail: it trips alone and keeps
    // the outcomes for the store.
    proxy.blackhole();
    dependency.set_down(true);
    for _ in 0..10 {
        a.call().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.breaker.is_degraded());
    // Meanwhile the fleet trips, probes and recovers without A.
    for _ in 0..5 {
        b.call().await;
    }
    b.breaker.sync().await;
    assert_eq!(b.state(), State::Open);
    dependency.set_down(false);
    tokio::time::sleep(policy().break_duration() + Duration::from_millis(50)).await;
    assert!(b.call().await, "the probe");
    // The probe's result goes back in the background.
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.breaker.sync().await;
    assert_eq!(b.state(), State::Closed);
    let recovered = b.breaker.snapshot().generation;

    // The partition heals: A's old failures must not re-trip the fleet.
    proxy.pass();
    let healed = Instant::now();
    while a.breaker.is_degraded() {
        assert!(healed.elapsed() < 10 * SYNC, "A never came back");
        a.call().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.breaker.sync().await;
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.breaker.snapshot().generation, recovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_in_a_rolling_deploy_count_together() {
    let redis = RedisServer::start();
    let dependency = Dependency::new();
    dependency.set_down(true);
    let policy = |window: u64, buckets: u32| {
        Policy::builder()
            .no_consecutive_failures()
            .failure_rate(0.5)
            .minimum_calls(100)
            .window(Duration::from_secs(window))
            .window_buckets(buckets)
            .build()
            .unwrap()
    };
    let mut fleet = Vec::new();
    for p in [policy(10, 10), policy(60, 12)] {
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let layer = DistributedCircuitBreakerLayer::new("deploy", p, store).unwrap();
        fleet.push(Instance {
            breaker: layer.breaker(),
            svc: layer.layer(dependency.clone()),
        });
    }
    // 100 failed calls, 10 at a time from each version in turn: neither
    // reaches the minimum alone, and neither may wipe the other's window
    // (0.1: still closed after 100 calls at 100 % failure).
    for round in 0..10 {
        let i = &fleet[round % 2];
        for _ in 0..10 {
            i.call().await;
        }
        assert!(i.breaker.sync().await);
    }
    for i in &fleet {
        i.breaker.sync().await;
        assert_eq!(i.state(), State::Open);
    }
    assert_eq!(dependency.failures(), 100);
}
