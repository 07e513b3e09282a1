//! High availability with real failovers: Redis Sentinel promoting a replica,
//! a Redis Cluster master dying and a slot migrating under traffic, and what
//! `durable_transitions` saves when a primary dies.
//!
//! Every fleet runs the default policy and warms up with healthy traffic
//! before the fault.

mod support;

use std::time::Duration;

use distributed_circuit_breaker::store::StoreErrorKind;
use distributed_circuit_breaker::{
    BreakerName, Force, Policy, RedisStore, State, Store, StoreFailure,
};
use support::dependency::Dependency;
use support::fleet::Instance;
use support::proxy::FaultProxy;
use support::redis::{slot_owner, RedisCluster, RedisServer};
use support::sentinel::{wait_link_up, wait_replica_online, SentinelGroup};
use support::traffic::{assert_nothing_failed_by_the_store, converge, Traffic};
use tokio::time::Instant;

const INSTANCES: usize = 3;
/// What the fleet takes at most, from the promotion of a new primary, to
/// share one state again (stated in the README). Behind Sentinel the store
/// switches when the sentinels name the new primary (polled every second) and
/// every breaker re-reads at once.
const SENTINEL_CONVERGED_WITHIN: Duration = Duration::from_secs(5);
/// On a cluster a breaker that went degraded retries after 2, 4, then every
/// 8 sync intervals (1 s by default).
const CLUSTER_CONVERGED_WITHIN: Duration = Duration::from_secs(10);

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
    let took = converge(&fleet, State::Open, SENTINEL_CONVERGED_WITHIN).await;
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
async fn sentinel_urls_credentials_and_settings_are_checked_at_connect() {
    let group = SentinelGroup::start_with_password(Some("s3cret"));
    let port = group.sentinels[0].port();
    let with_password = group
        .url()
        .replace("redis+sentinel://", "redis+sentinel://:s3cret@");

    let wrong = RedisStore::connect(
        &group
            .url()
            .replace("redis+sentinel://", "redis+sentinel://:wrong@"),
    )
    .await
    .unwrap_err();
    assert_eq!(wrong.kind(), StoreErrorKind::Refused, "{wrong}");
    let missing = RedisStore::connect(&group.url()).await.unwrap_err();
    assert_eq!(missing.kind(), StoreErrorKind::Refused, "{missing}");

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
        .connect(&with_password)
        .await
        .unwrap_err();
    assert_eq!(durability.kind(), StoreErrorKind::Config);
    assert!(
        durability.to_string().contains("durable_transitions"),
        "{durability}"
    );

    // And a good URL works, reaching the primary with the node's password.
    let store = RedisStore::connect(&with_password).await.unwrap();
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
        .store_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut survived = 0;
    for round in 0..rounds {
        link.delay(lag);
        wait_link_up(&replica);
        wait_replica_online(&primary);
        // And writes flow: a marker written now reaches the replica.
        let marker = format!("marker-{round}");
        primary.cli(&["SET", &marker, "1"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while replica.cli(&["EXISTS", &marker]) != "1" {
            assert!(Instant::now() < deadline, "replication never flowed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut builder = RedisStore::builder();
        if durable {
            builder = builder.durable_transitions(1, Duration::from_millis(500));
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
        } else if durable {
            eprintln!(
                "round {round}: the replica holds generation {held:?}, not {}",
                open.generation
            );
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

    // What waiting costs, with the replica in sync on loopback (printed, not
    // asserted: a measurement, not a behaviour).
    let primary = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
    wait_link_up(&replica);
    let policy = Policy::default();
    for durable in [false, true] {
        let mut builder = RedisStore::builder();
        if durable {
            builder = builder.durable_transitions(1, Duration::from_millis(20));
        }
        let store = builder.connect(&primary.url()).await.unwrap();
        let name = BreakerName::new(format!("cost-{durable}")).unwrap();
        const TRANSITIONS: u32 = 200;
        let started = Instant::now();
        for i in 0..TRANSITIONS {
            let force = if i % 2 == 0 {
                Force::Open(None)
            } else {
                Force::Reset
            };
            store.force(&name, &policy, force).await.unwrap();
        }
        println!(
            "durable_transitions {durable}: {:?} per transition",
            started.elapsed() / TRANSITIONS
        );
    }
}

/// Moves `slot` with its keys from one master to another, the way
/// `redis-cli --cluster reshard` does, while clients keep running.
fn migrate_slot(cluster: &RedisCluster, slot: u16, from: u16, to: u16) {
    let node = |port: u16| {
        cluster
            .nodes
            .iter()
            .find(|n| n.is_running() && n.port() == port)
            .unwrap()
    };
    let (source, target) = (node(from), node(to));
    let source_id = source.cli(&["CLUSTER", "MYID"]);
    let target_id = target.cli(&["CLUSTER", "MYID"]);
    let slot = slot.to_string();
    assert_eq!(
        target.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id]),
        "OK"
    );
    assert_eq!(
        source.cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id]),
        "OK"
    );
    loop {
        let keys = source.cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let port = to.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys);
        assert_eq!(source.cli(&args), "OK");
    }
    for master in cluster.nodes.iter().filter(|n| n.is_running()) {
        if master.cli(&["ROLE"]).starts_with("master") {
            master.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_failover_and_slot_migration() {
    let mut cluster = RedisCluster::start_with_replicas(1);
    let urls = cluster.urls();
    let seeds: Vec<&str> = urls.iter().map(String::as_str).collect();
    let dep = Dependency::new();
    let mut fleet = Vec::new();
    for _ in 0..INSTANCES {
        let store = RedisStore::builder()
            .response_timeout(Duration::from_millis(300))
            .connect_cluster(&seeds)
            .await
            .unwrap();
        fleet.push(Instance::with_store(
            store,
            "ha",
            &dep,
            StoreFailure::Local,
            Policy::default(),
        ));
    }
    let slot: u16 = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", "dcb:{ha}"])
        .parse()
        .unwrap();
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    dep.set_down(true);
    converge(&fleet, State::Open, Duration::from_secs(5)).await;

    // The master owning the breaker's slot dies; its replica takes over.
    let owner = slot_owner(&cluster.nodes[0], slot).unwrap();
    let dead = cluster
        .nodes
        .iter()
        .position(|n| n.port() == owner)
        .unwrap();
    cluster.nodes[dead].kill();
    let witness = cluster.nodes.iter().find(|n| n.is_running()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let promoted = loop {
        if let Some(port) = slot_owner(witness, slot).filter(|p| *p != owner) {
            if witness
                .cli(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                break port;
            }
        }
        assert!(Instant::now() < deadline, "no replica was promoted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = converge(&fleet, State::Open, CLUSTER_CONVERGED_WITHIN).await;
    println!("cluster failover: one open state again {took:?} after the promotion");

    dep.set_down(false);
    converge(&fleet, State::Closed, Duration::from_secs(15)).await;

    // The slot migrates to another master while the healthy fleet calls.
    let target = cluster
        .nodes
        .iter()
        .filter(|n| n.is_running() && n.port() != promoted)
        .find(|n| n.cli(&["ROLE"]).starts_with("master"))
        .unwrap()
        .port();
    migrate_slot(&cluster, slot, promoted, target);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(slot_owner(witness, slot), Some(target));

    // The fleet still shares one breaker, now on the new owner.
    dep.set_down(true);
    converge(&fleet, State::Open, Duration::from_secs(5)).await;
    let target_node = cluster.nodes.iter().find(|n| n.port() == target).unwrap();
    assert_eq!(
        target_node.cli(&["HGET", "dcb:{ha}", "g"]),
        fleet[0].breaker.snapshot().generation.to_string()
    );
    let tally = traffic.stop().await;
    assert_nothing_failed_by_the_store(tally, &dep);
}
