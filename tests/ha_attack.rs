//! An outside attack on the Redis high-availability support: ugly failover
//! orders against real redis-server / redis-sentinel processes on loopback,
//! through the public API only.
//!
//! Every test holds `SERIAL` so that the timing-sensitive ones never share the
//! (2-core) machine with another failover. The attacks that found defects
//! run with the suite; the longer ones that passed from the start are kept
//! as an extended run (about three minutes):
//! `cargo test --all-features --test ha_attack -- --include-ignored`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distributed_circuit_breaker::store::StoreErrorKind;
use distributed_circuit_breaker::{
    BreakerName, Force, Outcome, Policy, RedisStore, State, Store, StoreEvent, StoreFailure,
};
use support::dependency::Dependency;
use support::fleet::Instance;
use support::redis::{slot_owner, RedisServer};
use support::sentinel::{wait_link_up, SentinelGroup, MASTER};
use support::traffic::{assert_failed_only, assert_nothing_failed_by_the_store, converge, Traffic};
use tokio::time::Instant;

/// A tokio mutex: each test has its own runtime, and the guard is held
/// across awaits.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const INSTANCES: usize = 3;
/// README: one shared state again within 5 s of a Sentinel promotion.
const SENTINEL_CONVERGED_WITHIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- helpers

async fn fleet_on(url: &str, name: &str, dep: &Dependency, policy: Policy) -> Vec<Instance> {
    let mut fleet = Vec::new();
    for _ in 0..INSTANCES {
        fleet.push(
            Instance::connect_policy(url, name, dep, StoreFailure::Local, policy.clone()).await,
        );
    }
    fleet
}

/// `PUBSUB NUMSUB dcb:events` on a node: how many stores are subscribed there.
fn subscribers(node: &RedisServer) -> usize {
    let out = node.cli(&["PUBSUB", "NUMSUB", "dcb:events"]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn role(node: &RedisServer) -> String {
    node.cli(&["ROLE"])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Asks a sentinel for a manual failover until it accepts (a previous
/// failover may still be cooling down) and the sentinels name another
/// primary; returns the new primary's port.
async fn manual_failover(group: &SentinelGroup, old: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = group.sentinels[0].cli(&["SENTINEL", "FAILOVER", MASTER]);
        if out == "OK" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SENTINEL FAILOVER refused: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    group.wait_for_new_primary(old).await
}

/// Waits until `node` reports `role`.
async fn wait_role(node: &RedisServer, wanted: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while role(node) != wanted {
        assert!(Instant::now() < deadline, "never became {wanted}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A primary, a replica and `n` sentinels with a quorum of 2, like
/// `SentinelGroup::start` but with the sentinel count and the failure
/// detection time chosen by the test.
fn sentinel_group(n: usize, down_after_ms: u64) -> SentinelGroup {
    let primary = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let port = primary.port().to_string();
    let replica = RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &port,
        "--repl-diskless-sync-delay",
        "0",
    ]);
    wait_link_up(&replica);
    let config = format!(
        "bind 127.0.0.1\n\
         sentinel monitor {MASTER} 127.0.0.1 {port} 2\n\
         sentinel down-after-milliseconds {MASTER} {down_after_ms}\n\
         sentinel failover-timeout {MASTER} 2000\n"
    );
    let sentinels: Vec<RedisServer> = (0..n)
        .map(|_| RedisServer::start_sentinel(&config))
        .collect();
    let others = (n - 1).to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = sentinels.iter().all(|s| {
            let out = s.cli(&["SENTINEL", "MASTER", MASTER]);
            let lines: Vec<&str> = out.lines().map(str::trim).collect();
            let get = |key: &str| {
                lines
                    .chunks(2)
                    .find(|pair| pair.first() == Some(&key))
                    .and_then(|pair| pair.get(1).copied())
            };
            get("num-other-sentinels") == Some(others.as_str()) && get("num-slaves") == Some("1")
        });
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sentinels never found each other"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    SentinelGroup {
        primary,
        replica,
        sentinels,
    }
}

/// The live `RedisServer` of `group` listening on `port`.
fn node(group: &SentinelGroup, port: u16) -> &RedisServer {
    if group.primary.port() == port {
        &group.primary
    } else {
        assert_eq!(group.replica.port(), port);
        &group.replica
    }
}

/// Records whether any breaker of `fleet` was ever seen degraded.
struct DegradedWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DegradedWatch {
    fn start(breakers: Vec<distributed_circuit_breaker::Breaker>) -> DegradedWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let (s, n) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut was = vec![false; breakers.len()];
            while !s.load(Ordering::Relaxed) {
                for (i, b) in breakers.iter().enumerate() {
                    let now = b.is_degraded();
                    if now && !was[i] {
                        n.fetch_add(1, Ordering::Relaxed);
                        println!(
                            "breaker {i} ({}) went degraded at {:?}",
                            b.name(),
                            b.snapshot()
                        );
                    }
                    was[i] = now;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        DegradedWatch { stop, seen, task }
    }

    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.seen.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------- attacks

/// `SENTINEL FAILOVER` while the old primary stays up: it is demoted to a
/// replica (writes answer READONLY). Every instance must move to the new
/// primary, its subscription too, and nobody may stay on the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended HA attack run: --include-ignored"]
async fn manual_failover_with_the_old_primary_alive_moves_the_whole_fleet() {
    let _serial = SERIAL.lock().await;
    let group = SentinelGroup::start();
    let dep = Dependency::new();
    let fleet = fleet_on(&group.url(), "ha", &dep, Policy::default()).await;
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(subscribers(&group.primary), INSTANCES);

    dep.set_down(true);
    converge(&fleet, State::Open, Duration::from_secs(5)).await;

    let old = group.primary.port();
    let new = manual_failover(&group, old).await;
    assert_eq!(new, group.replica.port());
    let took = converge(&fleet, State::Open, SENTINEL_CONVERGED_WITHIN).await;
    println!("manual failover: one open state again {took:?} after the promotion");
    wait_role(&group.primary, "slave", Duration::from_secs(30)).await;

    // Everyone writes to and listens on the new primary.
    let deadline = Instant::now() + Duration::from_secs(3);
    while subscribers(&group.replica) != INSTANCES || subscribers(&group.primary) != 0 {
        assert!(
            Instant::now() < deadline,
            "subscriptions: new primary {}, old primary {}",
            subscribers(&group.replica),
            subscribers(&group.primary)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let generation = fleet[0].breaker.snapshot().generation;
    assert_eq!(
        group.replica.cli(&["HGET", "dcb:{ha}", "g"]),
        generation.to_string()
    );

    dep.set_down(false);
    converge(&fleet, State::Closed, Duration::from_secs(15)).await;
    assert_eq!(group.replica.cli(&["HGET", "dcb:{ha}", "st"]), "0");
    // A force from one instance reaches the others through the new primary.
    fleet[1]
        .breaker
        .force(Force::Open(Some(Duration::from_secs(60))))
        .await
        .unwrap();
    converge(&fleet, State::ForcedOpen, Duration::from_secs(3)).await;
    let tally = traffic.stop().await;
    assert_nothing_failed_by_the_store(tally, &dep);
}

/// The old primary is SIGKILLed, a replica promoted, then the old primary is
/// restarted empty on its old port (first as a master, until the sentinels
/// turn it into a replica). Nobody may stay on it or go back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended HA attack run: --include-ignored"]
async fn old_primary_killed_then_restarted_gets_nobody_back() {
    let _serial = SERIAL.lock().await;
    let mut group = SentinelGroup::start();
    let dep = Dependency::new();
    let fleet = fleet_on(&group.url(), "ha", &dep, Policy::default()).await;
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let old = group.primary.port();
    group.primary.kill();
    let new = group.wait_for_new_primary(old).await;
    assert_eq!(new, group.replica.port());
    // Comes back at once, empty, as a master.
    group.primary.restart();
    converge(&fleet, State::Closed, SENTINEL_CONVERGED_WITHIN).await;
    wait_role(&group.primary, "slave", Duration::from_secs(20)).await;
    wait_link_up(&group.primary);

    // Nobody talks to the old primary any more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = group.primary.command_calls("evalsha");
    let subs = subscribers(&group.primary);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = group.primary.command_calls("evalsha");
    assert_eq!(
        after, before,
        "some instance still runs scripts on the old primary"
    );
    assert_eq!(subs, 0, "some store still listens on the old primary");
    assert_eq!(subscribers(&group.replica), INSTANCES);

    // And the fleet still shares one breaker there.
    dep.set_down(true);
    converge(&fleet, State::Open, Duration::from_secs(5)).await;
    assert_eq!(
        group.replica.cli(&["HGET", "dcb:{ha}", "g"]),
        fleet[0].breaker.snapshot().generation.to_string()
    );
    dep.set_down(false);
    let tally = traffic.stop().await;
    assert_nothing_failed_by_the_store(tally, &dep);
}

/// Opens the fleet, stops the traffic, waits for the break to end with the
/// dependency healed, and takes the fleet's one probe permit on instance 0.
async fn hold_the_probe(
    group: &SentinelGroup,
    fleet: &[Instance],
    dep: &Dependency,
    traffic: Traffic,
) -> (distributed_circuit_breaker::Permit, Instant) {
    dep.set_down(true);
    converge(fleet, State::Open, Duration::from_secs(5)).await;
    let tally = traffic.stop().await;
    assert_nothing_failed_by_the_store(tally, dep);
    let failed = dep.failures();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet[0].breaker.snapshot().state != State::HalfOpen {
        assert_eq!(dep.failures(), failed);
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dep.set_down(false);
    let permit = fleet[0].breaker.admit().await.expect("the probe");
    let taken = Instant::now();
    assert!(permit.is_probe());
    // The lease is replicated before the primary goes.
    let deadline = Instant::now() + Duration::from_secs(2);
    while group.replica.cli(&["HGET", "dcb:{ha}", "ls"]).is_empty() {
        assert!(Instant::now() < deadline, "lease not replicated");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (permit, taken)
}

/// The dependency recovers and instance 0 holds the half-open probe permit
/// when the primary dies; the probe succeeds during the outage (its release
/// cannot reach any store). The fleet must close again, at the latest when
/// the lost lease runs out (probe_lease, 10 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended HA attack run: --include-ignored"]
async fn probe_permit_held_across_a_failover_released_during_the_outage() {
    let _serial = SERIAL.lock().await;
    let mut group = SentinelGroup::start();
    let dep = Dependency::new();
    let policy = Policy::default();
    let fleet = fleet_on(&group.url(), "ha", &dep, policy.clone()).await;
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (permit, taken) = hold_the_probe(&group, &fleet, &dep, traffic).await;

    let old = group.primary.port();
    group.primary.kill();
    permit.finish(Outcome::Success);
    let traffic = Traffic::start(&fleet);
    group.wait_for_new_primary(old).await;
    let limit = policy.probe_lease() + Duration::from_secs(3);
    let left = limit.saturating_sub(taken.elapsed());
    converge(&fleet, State::Closed, left).await;
    println!("closed {:?} after the probe was taken", taken.elapsed());
    let tally = traffic.stop().await;
    assert_failed_only(tally, 0);
}

/// Same, but the probe finishes after the store moved to the new primary:
/// the release reaches the permit there and the fleet closes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended HA attack run: --include-ignored"]
async fn probe_permit_held_across_a_failover_released_after_it() {
    let _serial = SERIAL.lock().await;
    let mut group = SentinelGroup::start();
    let dep = Dependency::new();
    let fleet = fleet_on(&group.url(), "ha", &dep, Policy::default()).await;
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (permit, _) = hold_the_probe(&group, &fleet, &dep, traffic).await;

    let old = group.primary.port();
    group.primary.kill();
    group.wait_for_new_primary(old).await;
    // The store follows within its 1 s poll.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    permit.finish(Outcome::Success);
    let traffic = Traffic::start(&fleet);
    let took = converge(&fleet, State::Closed, SENTINEL_CONVERGED_WITHIN).await;
    println!("closed {took:?} after the late release");
    let tally = traffic.stop().await;
    assert_failed_only(tally, 0);
}

/// Every sentinel dies: the stores keep the primary they know, the fleet
/// still shares its state through it, nothing panics or hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended HA attack run: --include-ignored"]
async fn all_sentinels_down_keeps_the_known_primary() {
    let _serial = SERIAL.lock().await;
    let mut group = SentinelGroup::start();
    let dep = Dependency::new();
    let fleet = fleet_on(&group.url(), "ha", &dep, Policy::default()).await;
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for s in &mut group.sentinels {
        s.kill();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    dep.set_down(true);
    converge(&fleet, State::Open, Duration::from_secs(5)).await;
    assert_eq!(
        group.primary.cli(&["HGET", "dcb:{ha}", "g"]),
        fleet[0].breaker.snapshot().generation.to_string()
    );
    dep.set_down(false);
    converge(&fleet, State::Closed, Duration::from_secs(15)).await;
    // A new store cannot find the primary without sentinels, and says so.
    let started = Instant::now();
    let error = RedisStore::connect(&group.url()).await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Unavailable, "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let tally = traffic.stop().await;
    assert_nothing_failed_by_the_store(tally, &dep);
}

/// A URL whose first sentinel is gone (connection refused) and whose others
/// live: connect works and the store follows a failover through the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sentinel_first_in_the_url_is_skipped() {
    let _serial = SERIAL.lock().await;
    let mut group = SentinelGroup::start();
    let dead = support::redis::free_port();
    let live: Vec<String> = group
        .sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    let url = format!(
        "redis+sentinel://127.0.0.1:{dead},{}/{MASTER}",
        live.join(",")
    );
    let dep = Dependency::new();
    let fleet = fleet_on(&url, "ha", &dep, Policy::default()).await;
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let old = group.primary.port();
    group.primary.kill();
    group.wait_for_new_primary(old).await;
    dep.set_down(true);
    let took = converge(&fleet, State::Open, SENTINEL_CONVERGED_WITHIN).await;
    println!("open on the new primary {took:?} after the promotion");
    dep.set_down(false);
    let tally = traffic.stop().await;
    assert_nothing_failed_by_the_store(tally, &dep);
}

/// A URL whose first sentinel's host hangs (SIGSTOP: TCP connects, nothing
/// answers, as with a host that is down behind a load balancer or a
/// partition) and whose other two answer at once. Connecting must work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sentinel_first_in_the_url_does_not_fail_connect() {
    let _serial = SERIAL.lock().await;
    let group = SentinelGroup::start();
    group.sentinels[0].pause();
    let started = Instant::now();
    let connected = RedisStore::connect(&group.url()).await;
    let took = started.elapsed();
    group.sentinels[0].resume();
    println!("connect took {took:?} with the first sentinel hung");
    let store = connected.unwrap_or_else(|e| {
        panic!("two of three sentinels answer, yet connect failed after {took:?}: {e}")
    });
    let name = BreakerName::new("hung").unwrap();
    store.snapshot(&name, &Policy::default()).await.unwrap();
}

/// Failover A -> B, then B -> A, under traffic: the fleet follows both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended HA attack run: --include-ignored"]
async fn failover_twice_a_to_b_to_a() {
    let _serial = SERIAL.lock().await;
    let group = SentinelGroup::start();
    let dep = Dependency::new();
    let fleet = fleet_on(&group.url(), "ha", &dep, Policy::default()).await;
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let a = group.primary.port();
    let b = manual_failover(&group, a).await;
    assert_eq!(b, group.replica.port());
    wait_role(&group.primary, "slave", Duration::from_secs(30)).await;
    wait_link_up(&group.primary);
    converge(&fleet, State::Closed, SENTINEL_CONVERGED_WITHIN).await;

    let back = manual_failover(&group, b).await;
    assert_eq!(back, a);
    let promoted = Instant::now();
    // B stays a master until the sentinels convert it (many seconds): the
    // stores must leave it on their own, within the 1 s poll.
    let deadline = Instant::now() + Duration::from_secs(3);
    while subscribers(node(&group, a)) != INSTANCES || subscribers(node(&group, b)) != 0 {
        assert!(
            Instant::now() < deadline,
            "subscriptions did not come back to A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dep.set_down(true);
    converge(&fleet, State::Open, SENTINEL_CONVERGED_WITHIN).await;
    println!(
        "A -> B -> A: open together {:?} after the second promotion",
        promoted.elapsed()
    );
    assert_eq!(
        node(&group, a).cli(&["HGET", "dcb:{ha}", "g"]),
        fleet[0].breaker.snapshot().generation.to_string()
    );
    dep.set_down(false);
    converge(&fleet, State::Closed, Duration::from_secs(15)).await;
    let tally = traffic.stop().await;
    assert_nothing_failed_by_the_store(tally, &dep);
}

/// Routes of one process share one RedisStore (one per process, as the
/// README shows), each route with its own breaker.
const ROUTES: usize = 4;

/// `durable_transitions(1, 20ms)` (the README's example) on a primary with
/// no replica attached (the normal state of a freshly promoted primary
/// whose old primary is dead): every WAIT returns 0 after its budget. Calls
/// must not fail and a healthy store must never be judged unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_transitions_without_replicas_never_degrade_a_healthy_store() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let dep = Dependency::new();
    let mut fleet = Vec::new();
    for _ in 0..INSTANCES {
        let store = RedisStore::builder()
            .durable_transitions(1, Duration::from_millis(20))
            .connect(&redis.url())
            .await
            .unwrap();
        for route in 0..ROUTES {
            fleet.push(Instance::with_store(
                store.clone(),
                &format!("route-{route}"),
                &dep,
                StoreFailure::Local,
                Policy::default(),
            ));
        }
    }
    let watch = DegradedWatch::start(fleet.iter().map(|i| i.breaker.clone()).collect());
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Every route fails at once: every breaker trips (a transition each).
    dep.set_down(true);
    for route in 0..ROUTES {
        let of_route: Vec<Instance> = fleet.iter().skip(route).step_by(ROUTES).cloned().collect();
        converge(&of_route, State::Open, Duration::from_secs(5)).await;
    }
    // Half-open after 5 s: every breaker probes (a transition each) and closes.
    dep.set_down(false);
    for route in 0..ROUTES {
        let of_route: Vec<Instance> = fleet.iter().skip(route).step_by(ROUTES).cloned().collect();
        converge(&of_route, State::Closed, Duration::from_secs(15)).await;
    }
    let tally = traffic.stop().await;
    let degraded = watch.stop().await;
    assert_nothing_failed_by_the_store(tally, &dep);
    assert_eq!(
        degraded, 0,
        "breakers went degraded {degraded} times although Redis never stopped answering"
    );
}

/// The same with one breaker per store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_transitions_without_replicas_one_breaker_per_store() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let dep = Dependency::new();
    let mut fleet = Vec::new();
    for _ in 0..INSTANCES {
        let store = RedisStore::builder()
            .durable_transitions(1, Duration::from_millis(20))
            .connect(&redis.url())
            .await
            .unwrap();
        fleet.push(Instance::with_store(
            store,
            "one",
            &dep,
            StoreFailure::Local,
            Policy::default(),
        ));
    }
    let watch = DegradedWatch::start(fleet.iter().map(|i| i.breaker.clone()).collect());
    let traffic = Traffic::start(&fleet);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    dep.set_down(true);
    converge(&fleet, State::Open, Duration::from_secs(5)).await;
    dep.set_down(false);
    converge(&fleet, State::Closed, Duration::from_secs(15)).await;
    let tally = traffic.stop().await;
    let degraded = watch.stop().await;
    assert_nothing_failed_by_the_store(tally, &dep);
    assert_eq!(degraded, 0, "breakers went degraded {degraded} times");
}

fn info_field(node: &RedisServer, section: &str, field: &str) -> u64 {
    let info = node.cli(&["INFO", section]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME` calls a sentinel has answered.
fn lookups(sentinel: &RedisServer) -> u64 {
    let info = sentinel.cli(&["INFO", "commandstats"]);
    info.lines()
        .filter(|l| l.to_ascii_lowercase().contains("get-master-addr-by-name"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Dropping every store and breaker (after a failover, so that the stores
/// switched connections at least once) stops every background task: no
/// connection stays open to a sentinel or a node, nobody asks the sentinels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended HA attack run: --include-ignored"]
async fn dropping_everything_stops_the_sentinel_polling_and_closes_connections() {
    let _serial = SERIAL.lock().await;
    let mut group = SentinelGroup::start();
    let baseline: Vec<u64> = group
        .sentinels
        .iter()
        .map(|s| info_field(s, "clients", "connected_clients"))
        .collect();
    let replica_baseline = info_field(&group.replica, "clients", "connected_clients");
    {
        let dep = Dependency::new();
        let fleet = fleet_on(&group.url(), "ha", &dep, Policy::default()).await;
        let traffic = Traffic::start(&fleet);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let old = group.primary.port();
        group.primary.kill();
        group.wait_for_new_primary(old).await;
        converge(&fleet, State::Closed, SENTINEL_CONVERGED_WITHIN).await;
        let tally = traffic.stop().await;
        assert_nothing_failed_by_the_store(tally, &dep);
        // And a store dropped with a search in flight, sentinels slow.
        let store = RedisStore::connect(&group.url()).await.unwrap();
        group.sentinels[1].pause();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        drop(store);
        group.sentinels[1].resume();
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let first: Vec<u64> = group.sentinels.iter().map(lookups).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second: Vec<u64> = group.sentinels.iter().map(lookups).collect();
    assert_eq!(
        first, second,
        "sentinels are still asked for the primary after every store was dropped"
    );
    let clients: Vec<u64> = group
        .sentinels
        .iter()
        .map(|s| info_field(s, "clients", "connected_clients"))
        .collect();
    assert_eq!(clients, baseline, "connections left open to the sentinels");
    // The new primary: the sentinels' links and nothing of ours.
    let left = info_field(&group.replica, "clients", "connected_clients");
    assert!(
        left <= replica_baseline,
        "{left} clients on the new primary, {replica_baseline} before any store"
    );
}

/// After a long outage of the primary (production sentinels wait 30 s by
/// default before they fail over; here an operator fails over by hand after
/// 12 s), the store must listen on the new primary as soon as it follows it
/// (README: "the announcements subscription moves to it and every breaker
/// re-reads the shared state at once"), within the 1 s poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_outage_announcements_move_to_the_new_primary_promptly() {
    let _serial = SERIAL.lock().await;
    let mut group = sentinel_group(3, 60_000);
    let store = RedisStore::connect(&group.url()).await.unwrap();
    let mut events = store.subscribe();
    let resyncs = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let r = resyncs.clone();
    let listener = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if event == StoreEvent::Resync {
                r.lock().unwrap().push(Instant::now());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while subscribers(&group.primary) != 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let old = group.primary.port();
    let killed = Instant::now();
    group.primary.kill();
    tokio::time::sleep_until(killed + Duration::from_millis(11_600)).await;
    let new = manual_failover(&group, old).await;
    let named = Instant::now();
    assert_eq!(new, group.replica.port());
    // The data connection follows within the 1 s poll...
    let name = BreakerName::new("probe").unwrap();
    let policy = Policy::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read =
            tokio::time::timeout(Duration::from_millis(100), store.snapshot(&name, &policy)).await;
        if matches!(read, Ok(Ok(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "the store never followed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let followed = named.elapsed();
    // ... and the subscription should move with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while subscribers(&group.replica) != 1 {
        assert!(
            Instant::now() < deadline,
            "never subscribed on the new primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subscribed = named.elapsed();
    let resync = resyncs
        .lock()
        .unwrap()
        .iter()
        .find(|t| **t > named)
        .map(|t| *t - named);
    listener.abort();
    println!(
        "sentinels named the new primary {:?} after the kill; store followed after {followed:?}, \
         subscribed after {subscribed:?}, Resync after {resync:?}",
        named - killed
    );
    assert!(
        subscribed <= followed + Duration::from_millis(1500),
        "the store followed the new primary after {followed:?} but listened there only after {subscribed:?}: \
         announcements of {:?} were lost and breakers re-read that late",
        subscribed - followed
    );
}

/// An availability-zone outage: the primary and the first sentinel of the
/// URL hang (SIGSTOP, TCP still accepted, nothing answers). The two other
/// sentinels fail over. The store polls every second; it must follow the
/// new primary about that fast after the sentinels name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended HA attack run: --include-ignored"]
async fn a_hung_primary_and_hung_first_sentinel_are_followed_within_the_poll() {
    let _serial = SERIAL.lock().await;
    let group = SentinelGroup::start();
    let store = RedisStore::connect(&group.url()).await.unwrap();
    let name = BreakerName::new("az").unwrap();
    let policy = Policy::default();
    store.snapshot(&name, &policy).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let old = group.primary.port();
    let hung = Instant::now();
    group.primary.pause();
    group.sentinels[0].pause();
    // The two live sentinels decide; ask them, not the hung one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let named = loop {
        let port = group.sentinels[1..].iter().find_map(|s| {
            let out = s.cli(&["SENTINEL", "get-master-addr-by-name", MASTER]);
            out.lines().nth(1)?.trim().parse::<u16>().ok()
        });
        if port.is_some_and(|p| p != old) {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let read =
            tokio::time::timeout(Duration::from_millis(100), store.snapshot(&name, &policy)).await;
        if matches!(read, Ok(Ok(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "the store never followed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let followed = named.elapsed();
    println!(
        "named {:?} after the outage began, followed {followed:?} after that",
        named - hung
    );
    group.primary.resume();
    group.sentinels[0].resume();
    assert!(
        followed <= Duration::from_millis(1500),
        "the sentinels named the new primary, the store followed only {followed:?} later"
    );
}

/// The sentinels name the primary by an IPv6 address (IPv6-only or
/// dual-stack networks, Kubernetes): the store must connect to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_with_an_ipv6_address_is_reached() {
    let _serial = SERIAL.lock().await;
    let primary = RedisServer::start_with(&["--bind", "127.0.0.1", "::1"]);
    let config = format!(
        "bind 127.0.0.1\nsentinel monitor {MASTER} ::1 {} 1\nsentinel down-after-milliseconds {MASTER} 500\n",
        primary.port()
    );
    let sentinel = RedisServer::start_sentinel(&config);
    let addr = sentinel.cli(&["SENTINEL", "get-master-addr-by-name", MASTER]);
    assert!(addr.starts_with("::1"), "{addr}");
    let url = format!("redis+sentinel://127.0.0.1:{}/{MASTER}", sentinel.port());
    let store = RedisStore::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("sentinel names [::1]:{}: {e}", primary.port()));
    let name = BreakerName::new("v6").unwrap();
    let open = store
        .force(&name, &Policy::default(), Force::Open(None))
        .await
        .unwrap();
    assert_eq!(
        primary.cli(&["HGET", "dcb:{v6}", "g"]),
        open.generation.to_string()
    );
}

/// Five sentinels (3 AZs: 2 + 2 + 1), the AZ holding the first two listed is
/// out (their processes hang). Three sentinels answer at once: connecting
/// must work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hung_sentinels_first_in_the_url_do_not_fail_connect() {
    let _serial = SERIAL.lock().await;
    let group = sentinel_group(5, 500);
    group.sentinels[0].pause();
    group.sentinels[1].pause();
    let started = Instant::now();
    let connected = RedisStore::connect(&group.url()).await;
    let took = started.elapsed();
    group.sentinels[0].resume();
    group.sentinels[1].resume();
    println!("connect took {took:?} with the first two sentinels hung");
    let store = connected.unwrap_or_else(|e| {
        panic!("three of five sentinels answer, yet connect failed after {took:?}: {e}")
    });
    let name = BreakerName::new("hung").unwrap();
    store.snapshot(&name, &Policy::default()).await.unwrap();
}

/// `CLUSTER FAILOVER` on the replica of the breaker's master while the
/// master stays up (it becomes a replica: MOVED for every command), under
/// traffic. The fleet keeps one breaker, now on the promoted node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "extended HA attack run: --include-ignored"]
async fn cluster_manual_failover_with_the_old_master_alive() {
    let _serial = SERIAL.lock().await;
    let cluster = support::redis::RedisCluster::start_with_replicas(1);
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

    let owner = slot_owner(&cluster.nodes[0], slot).unwrap();
    let master = cluster.nodes.iter().find(|n| n.port() == owner).unwrap();
    let id = master.cli(&["CLUSTER", "MYID"]);
    let replica = cluster
        .nodes
        .iter()
        .find(|n| {
            n.port() != owner
                && n.cli(&["CLUSTER", "NODES"])
                    .lines()
                    .any(|l| l.contains("myself") && l.contains("slave") && l.contains(&id))
        })
        .expect("the master's replica");
    assert_eq!(replica.cli(&["CLUSTER", "FAILOVER"]), "OK");
    let deadline = Instant::now() + Duration::from_secs(20);
    while slot_owner(&cluster.nodes[0], slot) != Some(replica.port()) {
        assert!(Instant::now() < deadline, "no promotion");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted = Instant::now();
    dep.set_down(true);
    converge(&fleet, State::Open, Duration::from_secs(10)).await;
    println!(
        "cluster manual failover: open together {:?} after the promotion",
        promoted.elapsed()
    );
    assert_eq!(
        replica.cli(&["HGET", "dcb:{ha}", "g"]),
        fleet[0].breaker.snapshot().generation.to_string()
    );
    dep.set_down(false);
    converge(&fleet, State::Closed, Duration::from_secs(15)).await;
    let tally = traffic.stop().await;
    assert_nothing_failed_by_the_store(tally, &dep);
}

/// The README: with `durable_transitions` the WAIT is "bounded by half the
/// policy's store_timeout" (25 ms by default). With no replica attached every
/// WAIT runs to its end: a transition must still answer within the
/// store_timeout (50 ms), or the breaker that made it counts the store as
/// unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_transitions_wait_is_bounded_by_the_store_timeout() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let store = RedisStore::builder()
        .durable_transitions(1, Duration::from_millis(20))
        .connect(&redis.url())
        .await
        .unwrap();
    let policy = Policy::default();
    let name = BreakerName::new("bounded").unwrap();
    let mut took = Vec::new();
    for i in 0..10 {
        let force = if i % 2 == 0 {
            Force::Open(None)
        } else {
            Force::Reset
        };
        let started = Instant::now();
        let snapshot = store.force(&name, &policy, force).await.unwrap();
        took.push(started.elapsed());
        assert_eq!(
            snapshot.state,
            if i % 2 == 0 {
                State::ForcedOpen
            } else {
                State::Closed
            }
        );
    }
    println!("transitions with WAIT 1 20 and no replica: {took:?}");
    let slowest = took.iter().max().copied().unwrap();
    assert!(
        slowest <= policy.store_timeout(),
        "a transition took {slowest:?} (store_timeout {:?}, WAIT budget 20 ms)",
        policy.store_timeout()
    );
}
