//! One conformance suite, run against every store: MemoryStore, RedisStore on
//! one node, and RedisStore on a three-master Redis Cluster.

mod support;

use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::store::{ForceNote, OutcomeBatch, ProbeResult};
use distributed_circuit_breaker::{
    BreakerName, Force, MemoryStore, Policy, RedisStore, State, Store, StoreEvent,
};
use support::redis::{RedisCluster, RedisServer};

const BREAK: Duration = Duration::from_millis(300);

fn policy() -> Policy {
    Policy::builder()
        .consecutive_failures(3)
        .break_duration(BREAK)
        .probe_lease(Duration::from_millis(500))
        .sync_interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

fn name(s: &str) -> BreakerName {
    BreakerName::new(s).unwrap()
}

fn failures(generation: u64, n: u32) -> OutcomeBatch {
    OutcomeBatch {
        generation,
        successes: 0,
        failures: n,
        slow: 0,
        trailing_failures: n,
        ..OutcomeBatch::default()
    }
}

async fn next_transition(
    events: &mut tokio::sync::broadcast::Receiver<StoreEvent>,
    breaker: &str,
) -> distributed_circuit_breaker::Transition {
    let wait = async {
        loop {
            if let Ok(StoreEvent::Transition(t)) = events.recv().await {
                if t.name == breaker {
                    return t;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("a transition announcement")
}

async fn conformance(store: Arc<dyn Store>) {
    let p = policy();
    let a = name("conformance-a");
    let b = name("conformance-b");
    let mut events = store.subscribe();

    // A new breaker is closed.
    let s0 = store.snapshot(&a, &p).await.unwrap();
    assert_eq!(s0.state, State::Closed);
    assert_eq!(
        store.snapshot(&a, &p).await.unwrap().generation,
        s0.generation,
        "reads do not move it"
    );

    // A breaker nobody wrote is the implicit one, every process agrees on
    // its generation, and reading it writes nothing.
    assert_eq!(s0.generation, 1);
    let unlisted = || async {
        store
            .list()
            .await
            .unwrap()
            .iter()
            .all(|(n, _)| n != a.as_str())
    };
    assert!(unlisted().await);
    // Healthy traffic (successes only, no rate rule) keeps nothing either.
    let healthy = OutcomeBatch {
        generation: s0.generation,
        successes: 100,
        ..OutcomeBatch::default()
    };
    assert_eq!(store.record(&a, &p, healthy).await.unwrap(), s0);
    assert!(unlisted().await);

    // Its first transition takes a generation of its own, newer than any
    // earlier life of the key.
    let s0 = store.force(&a, &p, Force::Reset).await.unwrap();
    assert_eq!(s0.state, State::Closed);
    assert!(s0.generation > 1_000_000_000_000, "{s0:?}");
    let t = next_transition(&mut events, "conformance-a").await;
    assert_eq!(
        t.snapshot.generation, s0.generation,
        "the reset is announced"
    );

    // Batches accumulate; a stale generation is dropped.
    let s = store
        .record(&a, &p, failures(s0.generation, 2))
        .await
        .unwrap();
    assert_eq!(s.state, State::Closed);
    let s = store
        .record(&a, &p, failures(s0.generation - 1, 5))
        .await
        .unwrap();
    assert_eq!(s.state, State::Closed, "a stale batch must not trip");
    let opened = store
        .record(&a, &p, failures(s0.generation, 1))
        .await
        .unwrap();
    assert_eq!(opened.state, State::Open);
    assert_eq!(opened.generation, s0.generation + 1);
    assert!(opened.remaining > Duration::ZERO && opened.remaining <= BREAK);
    let t = next_transition(&mut events, "conformance-a").await;
    assert_eq!(t.snapshot.state, State::Open);
    assert_eq!(t.snapshot.generation, opened.generation);

    // Another name is untouched.
    assert_eq!(store.snapshot(&b, &p).await.unwrap().state, State::Closed);

    // No permit before the break ends; exactly one after.
    let early = store.acquire(&a, &p, 11).await.unwrap();
    assert_eq!(early.lease, None);
    assert_eq!(early.snapshot.state, State::Open);
    tokio::time::sleep(early.snapshot.remaining + Duration::from_millis(20)).await;
    let first = store.acquire(&a, &p, 12).await.unwrap();
    let lease = first.lease.expect("a permit after the break");
    assert_eq!(lease, 12, "the permit carries the id asked with");
    assert_eq!(first.snapshot.state, State::HalfOpen);
    assert_eq!(
        store.acquire(&a, &p, 13).await.unwrap().lease,
        None,
        "one permit fleet-wide"
    );
    assert_eq!(
        store.acquire(&a, &p, 12).await.unwrap().lease,
        Some(12),
        "asking again with the same id answers the same permit"
    );
    // A blind release (generation 0) frees the permit and counts nothing.
    let freed = store
        .release(&a, &p, 0, 12, ProbeResult::Failure)
        .await
        .unwrap();
    assert_eq!(freed.state, State::HalfOpen);
    assert_eq!(freed.generation, first.snapshot.generation);
    let first = store.acquire(&a, &p, 14).await.unwrap();
    let lease = first.lease.expect("the freed permit is granted again");

    // A success closes.
    let closed = store
        .release(
            &a,
            &p,
            first.snapshot.generation,
            lease,
            ProbeResult::Success,
        )
        .await
        .unwrap();
    assert_eq!(closed.state, State::Closed);
    assert_eq!(closed.generation, opened.generation + 2);

    // Forced open with an expiry, then back to closed.
    let forced = store
        .force(&a, &p, Force::Open(Some(Duration::from_millis(200))))
        .await
        .unwrap();
    assert_eq!(forced.state, State::ForcedOpen);
    assert_eq!(store.acquire(&a, &p, 21).await.unwrap().lease, None);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.snapshot(&a, &p).await.unwrap().state, State::Closed);

    // A probe that never reports back loses its permit after the lease.
    let g = store.snapshot(&a, &p).await.unwrap().generation;
    let s = store.record(&a, &p, failures(g, 3)).await.unwrap();
    tokio::time::sleep(s.remaining + Duration::from_millis(20)).await;
    assert!(store.acquire(&a, &p, 31).await.unwrap().lease.is_some());
    assert_eq!(store.acquire(&a, &p, 32).await.unwrap().lease, None);
    tokio::time::sleep(p.probe_lease() + Duration::from_millis(20)).await;
    assert!(
        store.acquire(&a, &p, 33).await.unwrap().lease.is_some(),
        "the lease ran out"
    );

    // Absurd durations are cut to a year, alike in every store; nothing overflows.
    for force in [
        Force::Open(Some(Duration::MAX)),
        Force::Closed(Some(Duration::from_secs(u64::MAX / 2))),
        Force::Disabled(Some(Duration::ZERO)),
    ] {
        let forced = store.force(&a, &p, force).await.unwrap();
        assert!(
            forced.remaining <= Duration::from_secs(365 * 24 * 3600),
            "{force:?}"
        );
    }
    assert_eq!(
        store.force(&a, &p, Force::Reset).await.unwrap().state,
        State::Closed
    );

    // A forced state outlives the policy's key TTL: an operator's "open for
    // a while" lasts that while even when nothing touches the breaker.
    let short = Policy::builder()
        .consecutive_failures(3)
        .break_duration(Duration::from_millis(50))
        .probe_lease(Duration::from_millis(50))
        .window(Duration::from_millis(50))
        .sync_interval(Duration::from_millis(50))
        .key_ttl(Duration::from_millis(100))
        .build()
        .unwrap();
    let c = name("conformance-forced");
    let forced = store
        .force(&c, &short, Force::Open(Some(Duration::from_millis(400))))
        .await
        .unwrap();
    let d = name("conformance-forced-forever");
    store.force(&d, &short, Force::Open(None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let later = store.snapshot(&c, &short).await.unwrap();
    assert_eq!(later.state, State::ForcedOpen, "past the key TTL");
    assert_eq!(later.generation, forced.generation);
    assert_eq!(
        store.snapshot(&d, &short).await.unwrap().state,
        State::ForcedOpen
    );
    // Forced open until reset: callers are told to come back in a minute
    // (people act in minutes), not after the policy's 50 ms break.
    assert_eq!(
        store.snapshot(&d, &short).await.unwrap().remaining,
        Duration::from_secs(60)
    );
    operator_view(&*store).await;
}

/// What operators read: the note kept with a forced state, the window's
/// counts, and a forced state without expiry said as such.
async fn operator_view(store: &dyn Store) {
    let p = Policy::builder()
        .failure_rate(0.5)
        .minimum_calls(100)
        .window(Duration::from_secs(10))
        .build()
        .unwrap();
    let e = name("conformance-operator");
    assert_eq!(store.info(&e).await.unwrap(), None, "no record, no info");
    let batch = OutcomeBatch {
        successes: 7,
        failures: 3,
        slow: 1,
        trailing_failures: 2,
        ..OutcomeBatch::default()
    };
    store.record(&e, &p, batch).await.unwrap();
    let info = store.info(&e).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.calls, info.failures, info.slow),
        (State::Closed, 10, 3, 1)
    );
    assert_eq!(info.consecutive_failures, 2);
    assert_eq!(info.failure_rate(), Some(0.3));
    assert!(info.note.is_none() && !info.forced_until_reset);

    let note = ForceNote::new()
        .reason("provider incident #7")
        .actor("alice");
    let mut events = store.subscribe();
    let forced = store
        .force_noted(&e, &p, Force::Open(Some(Duration::from_secs(600))), &note)
        .await
        .unwrap();
    let info = store.info(&e).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.generation),
        (State::ForcedOpen, forced.generation)
    );
    let noted = info.note.clone().unwrap();
    assert_eq!(noted.reason.as_deref(), Some("provider incident #7"));
    assert_eq!(noted.actor.as_deref(), Some("alice"));
    assert!(info.remaining > Duration::from_secs(590) && !info.forced_until_reset);
    assert_eq!(
        next_transition(&mut events, "conformance-operator")
            .await
            .snapshot
            .state,
        State::ForcedOpen
    );
    let listed = store.list_info().await.unwrap();
    let mut seen = listed
        .iter()
        .find(|i| i.name == e.as_str())
        .cloned()
        .unwrap();
    assert!(seen.remaining <= info.remaining && seen.remaining > Duration::from_secs(590));
    seen.remaining = info.remaining; // time passed between the reads
    assert_eq!(seen, info);
    assert!(listed.windows(2).all(|w| w[0].name < w[1].name), "sorted");

    // Re-forced without a note and until reset: the note goes.
    store.force(&e, &p, Force::Open(None)).await.unwrap();
    let info = store.info(&e).await.unwrap().unwrap();
    assert!(info.note.is_none() && info.forced_until_reset);
    assert_eq!(info.remaining, Duration::ZERO);
    // A reset keeps no note, whatever it is given.
    store
        .force_noted(&e, &p, Force::Reset, &note)
        .await
        .unwrap();
    let info = store.info(&e).await.unwrap();
    assert!(info.is_none_or(|i| i.note.is_none() && i.state == State::Closed));
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    conformance(Arc::new(store.clone())).await;
    let listed = store.list().await.unwrap();
    assert!(listed.iter().any(|(n, _)| n == "conformance-a"));
    assert!(
        !listed.iter().any(|(n, _)| n == "conformance-b"),
        "only read: no record"
    );

    // A read that changes nothing writes nothing (it could run on a replica,
    // and idle breakers cost no writes), held or not.
    let p = policy();
    let n = name("conformance-read-only");
    let writes = || redis.command_calls("hset") + redis.command_calls("pexpire");
    let before = writes();
    store.snapshot(&n, &p).await.unwrap();
    assert_eq!(
        writes(),
        before,
        "reading a breaker nobody wrote creates nothing"
    );
    store.force(&n, &p, Force::Reset).await.unwrap(); // a record: one write
    let before = writes();
    let read_only = redis.command_calls("evalsha_ro");
    for _ in 0..5 {
        store.snapshot(&n, &p).await.unwrap();
    }
    assert_eq!(writes(), before);
    assert_eq!(
        redis.command_calls("evalsha_ro") - read_only,
        5,
        "reads are EVALSHA_RO"
    );
    // A forced state that ended must be written: the read-only script
    // hands over to the writing one.
    store
        .force(&n, &p, Force::Open(Some(Duration::from_millis(50))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let ended = store.snapshot(&n, &p).await.unwrap();
    assert_eq!(ended.state, State::Closed);
    assert_eq!(
        redis.cli(&["HGET", "dcb:{conformance-read-only}", "st"]),
        "0"
    );
    // A note left behind by a client that knows no notes (it changed the
    // state and generation, not the note) is not shown, nor revived.
    let n = name("conformance-old-client");
    let note = ForceNote::new().reason("maintenance").actor("alice");
    let forced = store
        .force_noted(&n, &p, Force::Open(None), &note)
        .await
        .unwrap();
    assert!(store.info(&n).await.unwrap().unwrap().note.is_some());
    let key = "dcb:{conformance-old-client}";
    let next = (forced.generation + 1).to_string();
    redis.cli(&["HSET", key, "st", "0", "g", &next, "fu", "0"]);
    assert_eq!(store.info(&n).await.unwrap().unwrap().note, None);
    store.record(&n, &p, failures(0, 1)).await.unwrap();
    assert_eq!(store.info(&n).await.unwrap().unwrap().note, None);
    assert_eq!(redis.cli(&["HEXISTS", key, "fr"]), "0", "and deleted");
}

#[tokio::test]
async fn redis_cluster_store_conforms() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::connect_cluster(&nodes).await.unwrap();
    conformance(Arc::new(store.clone())).await;
    // `list` scans every master: names spread over all three.
    let p = policy();
    let names: Vec<String> = (0..30).map(|i| format!("listed-{i}")).collect();
    for n in &names {
        store.force(&name(n), &p, Force::Reset).await.unwrap();
    }
    let listed: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for n in &names {
        assert!(listed.contains(n), "{n} missing from {listed:?}");
    }
}

#[tokio::test]
async fn prefixes_never_see_each_other() {
    let redis = RedisServer::start();
    let one = RedisStore::builder()
        .prefix("one")
        .connect(&redis.url())
        .await
        .unwrap();
    let two = RedisStore::builder()
        .prefix("two")
        .connect(&redis.url())
        .await
        .unwrap();
    let p = policy();
    let n = name("shared-name");
    let g = one.snapshot(&n, &p).await.unwrap().generation;
    assert_eq!(
        one.record(&n, &p, failures(g, 3)).await.unwrap().state,
        State::Open
    );
    assert_eq!(two.snapshot(&n, &p).await.unwrap().state, State::Closed);
    assert_eq!(one.key(&n), "one:{shared-name}");
    let keys = redis.cli(&["KEYS", "*"]);
    assert!(
        keys.contains("one:{shared-name}") && !keys.contains("two:{shared-name}"),
        "only the breaker that opened has a record: {keys}"
    );
    assert_eq!(
        redis.cli(&["HGET", "one:{shared-name}", "v"]),
        "1",
        "the schema version is stored"
    );
    let ttl: i64 = redis.cli(&["PTTL", "one:{shared-name}"]).parse().unwrap();
    // Open: kept through its break, then for the key TTL.
    assert!(
        ttl > 0 && ttl <= (p.key_ttl() + p.break_duration()).as_millis() as i64,
        "idle breakers expire"
    );
}
