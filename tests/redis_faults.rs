//! Redis misbehaving must not hurt the service: every test runs real
//! `redis-server` processes and asserts no panic, no hung request (each call is
//! bounded by `support::fleet::HANG`), no call failed because of Redis, and
//! convergence after recovery.

mod support;

use std::time::Duration;

use distributed_circuit_breaker::{State, StoreFailure};
use support::dependency::Dependency;
use support::fleet::{
    call_until, drive_until, wait_until, Call, Instance, BREAK, LEASE, THRESHOLD,
};
use support::proxy::FaultProxy;
use support::redis::RedisServer;

async fn fleet(url: &str, name: &str, dependency: &Dependency, n: usize) -> Vec<Instance> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Instance::connect(url, name, dependency).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_then_restarted_redis() {
    let mut redis = RedisServer::start();
    let dep = Dependency::new();
    let fleet = fleet(&redis.url(), "killed", &dep, 3).await;
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok);
    }

    redis.kill();
    // A healthy dependency stays reachable: nothing fails because of Redis.
    for _ in 0..20 {
        for i in &fleet {
            assert_eq!(i.call().await, Call::Ok);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call_until(&fleet, "every instance noticed", |i| {
        i.breaker.is_degraded()
    })
    .await;

    // The dependency fails: each instance trips on its own counts.
    dep.set_down(true);
    let before = dep.failures();
    drive_until(&fleet, State::Open).await;
    let failures = dep.failures() - before;
    assert!(
        failures >= THRESHOLD as usize * fleet.len(),
        "local breakers: each trips alone"
    );
    assert!(
        failures <= (THRESHOLD as usize + 2) * fleet.len(),
        "{failures}"
    );
    for i in &fleet {
        assert_eq!(i.call().await, Call::Rejected);
    }

    // Redis comes back empty (data and scripts gone): the fleet follows it again.
    redis.restart();
    dep.set_down(false);
    wait_until(&fleet, "resynchronised", |i| !i.breaker.is_degraded()).await;
    drive_until(&fleet, State::Closed).await;

    // And shares one breaker again (the scripts were reloaded after NOSCRIPT).
    dep.set_down(true);
    drive_until(&fleet, State::Open).await;
    assert!(redis.cli(&["EXISTS", "dcb:{killed}"]) == "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_delays_nothing_beyond_the_store_timeout() {
    let redis = RedisServer::start();
    let dep = Dependency::new();
    let fleet = fleet(&redis.url(), "paused", &dep, 3).await;
    dep.set_down(true);
    drive_until(&fleet, State::Open).await;

    redis.pause();
    // The break ends during the pause: asking Redis for a permit times out,
    // the instances decide alone, and no call waits longer than allowed.
    tokio::time::sleep(BREAK + Duration::from_millis(100)).await;
    for _ in 0..20 {
        for i in &fleet {
            i.call().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fleet.iter().any(|i| i.breaker.is_degraded()));

    redis.resume();
    dep.set_down(false);
    drive_until(&fleet, State::Closed).await;
    wait_until(&fleet, "resynchronised", |i| !i.breaker.is_degraded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_blackholed_reset_and_partitioned_redis() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port()).await;
    let dep = Dependency::new();
    let behind_proxy = Instance::connect(&proxy.url(), "partition", &dep).await;
    let direct = Instance::connect(&redis.url(), "partition", &dep).await;
    let both = [behind_proxy.clone(), direct.clone()];

    // Latency beyond the store timeout: the proxied instance decides alone,
    // its calls stay fast and successful.
    proxy.delay(Duration::from_millis(200));
    for _ in 0..30 {
        assert_eq!(behind_proxy.call().await, Call::Ok);
        assert_eq!(direct.call().await, Call::Ok);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call_until(&both[..1], "the slow side degraded", |i| {
        i.breaker.is_degraded()
    })
    .await;
    assert!(!direct.breaker.is_degraded());

    // A partition: the direct instance trips the shared breaker, the other
    // trips its private one.
    proxy.blackhole();
    dep.set_down(true);
    drive_until(&both, State::Open).await;

    // Healed: the proxied instance follows the shared state again.
    proxy.pass();
    wait_until(&both, "healed", |i| !i.breaker.is_degraded()).await;

    // Connections reset under it: nothing hangs, nothing panics.
    proxy.reset();
    for _ in 0..20 {
        behind_proxy.call().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.pass();
    dep.set_down(false);
    drive_until(&both, State::Closed).await;
    wait_until(&both, "reconnected", |i| !i.breaker.is_degraded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_script_flush_and_deleted_keys() {
    let redis = RedisServer::start();
    let dep = Dependency::new();
    let fleet = fleet(&redis.url(), "flushed", &dep, 3).await;
    dep.set_down(true);
    drive_until(&fleet, State::Open).await;
    let open_generation = fleet[0].breaker.snapshot().generation;

    // The shared state vanishes while open: the breaker is closed again
    // everywhere, as the implicit breaker nobody wrote (its next transition
    // takes a generation newer than anything remembered).
    dep.set_down(false);
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    wait_until(&fleet, "closed after FLUSHALL", |i| {
        i.state() == State::Closed
    })
    .await;
    assert!(fleet[0].breaker.snapshot().generation < open_generation);
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok);
    }

    // Scripts flushed: the next call to the store reloads them.
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    dep.set_down(true);
    drive_until(&fleet, State::Open).await;
    assert!(fleet.iter().all(|i| !i.breaker.is_degraded()));

    // The key deleted (or expired) while open: same as a flush.
    dep.set_down(false);
    assert_eq!(redis.cli(&["DEL", "dcb:{flushed}"]), "1");
    wait_until(&fleet, "closed after DEL", |i| i.state() == State::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_redis_is_survived() {
    let redis = RedisServer::start();
    let dep = Dependency::new();
    let fleet = fleet(&redis.url(), "garbage", &dep, 2).await;
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok);
    }
    let key = "dcb:{garbage}";

    // Overwritten with a string: WRONGTYPE. Left alone, reported, decided locally.
    redis.cli(&["SET", key, "not a hash"]);
    call_until(&fleet, "degraded on WRONGTYPE", |i| i.breaker.is_degraded()).await;
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok);
    }
    assert_eq!(
        redis.cli(&["GET", key]),
        "not a hash",
        "someone else's value is not destroyed"
    );
    redis.cli(&["DEL", key]);
    wait_until(&fleet, "recovered", |i| !i.breaker.is_degraded()).await;

    // Fields that are not numbers, or out of range: reset to closed with a
    // newer generation.
    let generation = fleet[0].breaker.snapshot().generation;
    redis.cli(&["HSET", key, "st", "banana", "g", "-3"]);
    // Healthy calls re-read the shared state every tenth interval; the read
    // repairs it.
    call_until(&fleet, "repaired", |_| {
        redis.cli(&["HGET", key, "st"]) == "0"
    })
    .await;
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok);
        assert!(i.breaker.snapshot().generation > generation);
        assert!(!i.breaker.is_degraded());
    }
    redis.cli(&["HSET", key, "st", "9"]);
    redis.cli(&["HSET", key, "w", "1:2:x"]);
    call_until(&fleet, "repaired again", |_| {
        redis.cli(&["HGET", key, "st"]) == "0"
    })
    .await;

    // A newer schema version: refused and left alone.
    redis.cli(&["HSET", key, "v", "99"]);
    call_until(&fleet, "degraded on schema", |i| i.breaker.is_degraded()).await;
    assert_eq!(redis.cli(&["HGET", key, "v"]), "99");
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_holder_that_dies_does_not_wedge_the_fleet() {
    let redis = RedisServer::start();
    let dep = Dependency::new();
    let dying = Instance::connect(&redis.url(), "wedge", &dep).await;
    let survivor = Instance::connect(&redis.url(), "wedge", &dep).await;
    dep.set_down(true);
    drive_until(&[dying.clone(), survivor.clone()], State::Open).await;
    tokio::time::sleep(BREAK + Duration::from_millis(50)).await;

    // The dying instance takes the only permit and never reports back (as a
    // crashed process would: its service is leaked, no drop runs).
    let mut svc = dying.svc.clone();
    tower::ServiceExt::<()>::ready(&mut svc).await.unwrap();
    assert_eq!(dying.breaker.snapshot().state, State::HalfOpen);
    std::mem::forget(svc);

    dep.set_down(false);
    let start = tokio::time::Instant::now();
    assert_eq!(survivor.call().await, Call::Rejected, "the permit is held");
    // After the lease the survivor probes, and the breaker closes.
    drive_until(std::slice::from_ref(&survivor), State::Closed).await;
    assert!(start.elapsed() >= LEASE - Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_and_fail_closed_modes() {
    let mut redis = RedisServer::start();
    let dep = Dependency::new();
    let open = Instance::connect_with(&redis.url(), "modes", &dep, StoreFailure::FailOpen).await;
    let closed =
        Instance::connect_with(&redis.url(), "modes2", &dep, StoreFailure::FailClosed).await;
    redis.kill();
    dep.set_down(true);
    // The failures wake a flush, which finds Redis gone.
    for _ in 0..200 {
        if open.breaker.is_degraded() && closed.breaker.is_degraded() {
            break;
        }
        open.call().await;
        closed.call().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(open.breaker.is_degraded() && closed.breaker.is_degraded());
    for _ in 0..20 {
        assert_eq!(
            open.call().await,
            Call::Failed,
            "fail-open lets every call through"
        );
        assert_eq!(
            closed.call().await,
            Call::Rejected,
            "fail-closed rejects every call"
        );
    }
}

/// Counts the calls a breaker makes to its (real) store.
#[derive(Debug)]
struct Counting {
    inner: distributed_circuit_breaker::RedisStore,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Counting {
    fn count(&self) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl distributed_circuit_breaker::Store for Counting {
    fn record<'a>(
        &'a self,
        name: &'a distributed_circuit_breaker::BreakerName,
        policy: &'a distributed_circuit_breaker::Policy,
        batch: distributed_circuit_breaker::store::OutcomeBatch,
    ) -> distributed_circuit_breaker::store::StoreFuture<'a, distributed_circuit_breaker::Snapshot>
    {
        self.count();
        self.inner.record(name, policy, batch)
    }

    fn acquire<'a>(
        &'a self,
        name: &'a distributed_circuit_breaker::BreakerName,
        policy: &'a distributed_circuit_breaker::Policy,
        lease: u64,
    ) -> distributed_circuit_breaker::store::StoreFuture<
        'a,
        distributed_circuit_breaker::store::Acquired,
    > {
        self.count();
        self.inner.acquire(name, policy, lease)
    }

    fn release<'a>(
        &'a self,
        name: &'a distributed_circuit_breaker::BreakerName,
        policy: &'a distributed_circuit_breaker::Policy,
        generation: u64,
        lease: u64,
        result: distributed_circuit_breaker::store::ProbeResult,
    ) -> distributed_circuit_breaker::store::StoreFuture<'a, distributed_circuit_breaker::Snapshot>
    {
        self.count();
        self.inner.release(name, policy, generation, lease, result)
    }

    fn force<'a>(
        &'a self,
        name: &'a distributed_circuit_breaker::BreakerName,
        policy: &'a distributed_circuit_breaker::Policy,
        force: distributed_circuit_breaker::Force,
    ) -> distributed_circuit_breaker::store::StoreFuture<'a, distributed_circuit_breaker::Snapshot>
    {
        self.count();
        self.inner.force(name, policy, force)
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a distributed_circuit_breaker::BreakerName,
        policy: &'a distributed_circuit_breaker::Policy,
    ) -> distributed_circuit_breaker::store::StoreFuture<'a, distributed_circuit_breaker::Snapshot>
    {
        self.count();
        self.inner.snapshot(name, policy)
    }

    fn list(
        &self,
    ) -> distributed_circuit_breaker::store::StoreFuture<
        '_,
        Vec<(String, distributed_circuit_breaker::Snapshot)>,
    > {
        self.inner.list()
    }

    fn subscribe(
        &self,
    ) -> tokio::sync::broadcast::Receiver<distributed_circuit_breaker::StoreEvent> {
        self.inner.subscribe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_retried_with_backoff() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut redis = RedisServer::start();
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let store = Counting {
        inner: distributed_circuit_breaker::RedisStore::connect(&redis.url())
            .await
            .unwrap(),
        calls: calls.clone(),
    };
    let layer = distributed_circuit_breaker::DistributedCircuitBreakerLayer::new(
        "backoff",
        support::fleet::policy(),
        store,
    )
    .unwrap();
    let breaker = layer.breaker();
    let dep = Dependency::new();
    let svc = tower::Layer::layer(&layer, dep.clone());
    tower::ServiceExt::oneshot(svc.clone(), ()).await.unwrap();

    redis.kill();
    // One call with traffic flushes, finds the store gone, degrades.
    for _ in 0..50 {
        tower::ServiceExt::oneshot(svc.clone(), ()).await.unwrap();
        if breaker.is_degraded() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(breaker.is_degraded());
    let before = calls.load(Ordering::SeqCst);
    // 40 sync intervals of 50 ms: a try every tick would be 40.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tries = calls.load(Ordering::SeqCst) - before;
    assert!((3..=12).contains(&tries), "{tries} tries in 40 intervals");

    redis.restart();
    wait_until_recovered(&breaker).await;
}

async fn wait_until_recovered(breaker: &distributed_circuit_breaker::Breaker) {
    for _ in 0..300 {
        if !breaker.is_degraded() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the breaker never followed the store again");
}
