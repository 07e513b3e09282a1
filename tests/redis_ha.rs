//! High availability with real failovers: Redis Sentinel promoting a replica,
//! a Redis Cluster master dying and a slot migrating under traffic, and what
//! `durable_transitions` saves when a primary dies.
//!
//! Every fleet runs the default policy and warms up with healthy traffic
//! before the fault.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::store::StoreErrorKind;
use distributed_circuit_breaker::{
    BreakerName, Force, Policy, RedisStore, State, Store, StoreFailure,
};
use support::dependency::Dependency;
use support::fleet::{Call, Instance};
use support::proxy::FaultProxy;
use support::redis::RedisServer;
use support::sentinel::{wait_link_up, SentinelGroup};
use tokio::time::Instant;

const INSTANCES: usize = 3;
/// Calls per second per instance.
const RATE: u64 = 200;
/// What the fleet must take at most, from the promotion of a new primary, to
/// share one state again (stated in the README).
const CONVERGED_WITHIN: Duration = Duration::from_secs(5);
/// No call may wait on the store longer than `store_timeout` (50 ms by
/// default); this adds room for a busy 2-core machine.
const SLOWEST_CALL: Duration = Duration::from_millis(300);

/// Every instance calling the dependency at `RATE` until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: usize,
    rejected: usize,
    failed: usize,
    slowest: Duration,
}

impl Traffic {
    fn start(fleet: &[Instance]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = fleet
            .iter()
            .cloned()
            .map(|instance| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let started = Instant::now();
                        match instance.call().await {
                            Call::Ok => tally.ok += 1,
                            Call::Rejected => tally.rejected += 1,
                            Call::Failed => tally.failed += 1,
                        }
                        tally.slowest = tally.slowest.max(started.elapsed());
                    }
                    tally
                })
            })
            .collect();
        Traffic { stop, tasks }
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Tally::default();
        for task in self.tasks {
            let t = task.await.unwrap();
            all.ok += t.ok;
            all.rejected += t.rejected;
            all.failed += t.failed;
            all.slowest = all.slowest.max(t.slowest);
        }
        all
    }
}

/// Waits until every instance follows the store again (not degraded) and
/// all hold one generation in `state`; returns how long it took.
async fn converge(fleet: &[Instance], state: State, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let snapshots: Vec<_> = fleet.iter().map(|i| i.breaker.snapshot()).collect();
        let one = snapshots
            .iter()
            .all(|s| s.state == state && s.generation == snapshots[0].generation);
        if one && fleet.iter().all(|i| !i.breaker.is_degraded()) {
            return start.elapsed();
        }
        let states: Vec<_> = fleet
            .iter()
            .map(|i| {
                (
                    i.state(),
                    i.breaker.snapshot().generation,
                    i.breaker.is_degraded(),
                )
            })
            .collect();
        assert!(
            start.elapsed() < within,
            "the fleet did not share one {state} state within {within:?}: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The checks every failover test ends with.
fn assert_nothing_failed_by_the_store(tally: Tally, dependency: &Dependency) {
    println!("calls: {tally:?}");
    assert_eq!(
        tally.failed,
        dependency.failures(),
        "every failed call is one the dependency failed: none failed because of the store"
    );
    assert!(
        tally.slowest <= SLOWEST_CALL,
        "a call took {:?}",
        tally.slowest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_the_fleet_on_one_breaker() {
    let mut group = SentinelGroup::start();
    let dep = Dependency::new();
    let mut fleet = Vec::new();
    for _ in 0..INSTANCES {
        fleet.push(
            Instance::connect_policy(
                &group.url(),
                "ha",
                &dep,
                StoreFailure::Local,
                Policy::default(),
            )
            .await,
        );
    }
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The dependency fails: the fleet opens together, through the primary.
    dep.set_down(true);
    converge(&fleet, State::Open, Duration::from_secs(5)).await;
    let opened = fleet[0].breaker.snapshot().generation;

    // The primary dies; the sentinels promote the replica.
    let old = group.primary.port();
    group.primary.kill();
    let new = group.wait_for_new_primary(old).await;
    assert_eq!(new, group.replica.port());

    // Still failing: the fleet shares one open breaker on the new primary.
    let took = converge(&fleet, State::Open, CONVERGED_WITHIN).await;
    let now = fleet[0].breaker.snapshot().generation;
    println!("sentinel failover: one open state again {took:?} after the promotion (generation {opened} -> {now})");
    let stored = group.replica.cli(&["HGET", "dcb:{ha}", "g"]);
    assert_eq!(stored, now.to_string(), "the fleet follows the new primary");

    // Healed: the fleet closes together, every instance through the new primary.
    dep.set_down(false);
    converge(&fleet, State::Closed, Duration::from_secs(15)).await;
    assert_eq!(group.replica.cli(&["HGET", "dcb:{ha}", "st"]), "0");
    let tally = traffic.stop().await;
    assert_nothing_failed_by_the_store(tally, &dep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_urls_and_settings_are_checked_at_connect() {
    let group = SentinelGroup::start();
    let port = group.sentinels[0].port();

    let unknown = RedisStore::connect(&format!("redis+sentinel://127.0.0.1:{port}/nosuchmaster"))
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), StoreErrorKind::Config);
    assert!(unknown.to_string().contains("nosuchmaster"), "{unknown}");

    let nobody = support::redis::free_port();
    let started = Instant::now();
    let unreachable = RedisStore::builder()
        .connect_timeout(Duration::from_millis(500))
        .connect(&format!("redis+sentinel://127.0.0.1:{nobody}/mymaster"))
        .await
        .unwrap_err();
    assert_eq!(unreachable.kind(), StoreErrorKind::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(2));

    let malformed = RedisStore::connect("redis+sentinel://127.0.0.1/mymaster")
        .await
        .unwrap_err();
    assert_eq!(malformed.kind(), StoreErrorKind::Config);

    let durability = RedisStore::builder()
        .durable_transitions(0, Duration::from_millis(10))
        .connect(&group.url())
        .await
        .unwrap_err();
    assert_eq!(durability.kind(), StoreErrorKind::Config);
    assert!(
        durability.to_string().contains("durable_transitions"),
        "{durability}"
    );

    // And a good URL works, reaching the primary.
    let store = RedisStore::connect(&group.url()).await.unwrap();
    let name = BreakerName::new("checked").unwrap();
    let policy = Policy::default();
    let open = store
        .force(&name, &policy, Force::Open(Some(Duration::from_secs(60))))
        .await
        .unwrap();
    assert_eq!(open.state, State::ForcedOpen);
    assert_eq!(
        group.primary.cli(&["HGET", "dcb:{checked}", "g"]),
        open.generation.to_string()
    );
}

/// Opens `rounds` breakers, one per round, each followed at once by the
/// death of the primary (the replication link lags `lag`, and what is in
/// flight on it dies with the primary); counts the transitions the replica
/// holds afterwards.
async fn transitions_surviving_a_kill(durable: bool, rounds: usize, lag: Duration) -> usize {
    let mut primary = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let link = FaultProxy::start(primary.port()).await;
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &link.port().to_string()]);
    let policy = Policy::builder()
        .store_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let mut survived = 0;
    for round in 0..rounds {
        link.delay(lag);
        wait_link_up(&replica);
        let mut builder = RedisStore::builder();
        if durable {
            builder = builder.durable_transitions(1, Duration::from_millis(200));
        }
        let store = builder.connect(&primary.url()).await.unwrap();
        let name = BreakerName::new(format!("t{round}")).unwrap();
        let open = store
            .force(&name, &policy, Force::Open(None))
            .await
            .unwrap();
        // The primary dies the moment the fleet was told.
        link.reset();
        primary.kill();
        let held = replica.cli(&["HGET", &format!("dcb:{{t{round}}}"), "g"]);
        if held == open.generation.to_string() {
            survived += 1;
        }
        drop(store);
        primary.restart();
        link.pass();
    }
    survived
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_transitions_survive_the_death_of_the_primary() {
    const ROUNDS: usize = 10;
    let lag = Duration::from_millis(20);
    let without = transitions_surviving_a_kill(false, ROUNDS, lag).await;
    let with = transitions_surviving_a_kill(true, ROUNDS, lag).await;
    println!(
        "transitions that survived a primary kill ({lag:?} replication lag): without durable_transitions {without}/{ROUNDS}, with {with}/{ROUNDS}"
    );
    assert_eq!(with, ROUNDS);
    assert!(
        without < ROUNDS,
        "the lag should lose the last write without WAIT"
    );
}
