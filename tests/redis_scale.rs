//! Request-derived keys against a real redis-server: a flood of unique keys
//! must not grow Redis without bound, and a burst of new breakers must not
//! push any of them into degraded mode while Redis is healthy.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, Policy, RedisStore};
use support::redis::RedisServer;
use tower::{service_fn, Layer, ServiceExt};

const FLOOD: u32 = 100_000;
const IN_FLIGHT: u32 = 128;

fn used_memory(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn keys(redis: &RedisServer) -> u64 {
    redis.cli(&["DBSIZE"]).parse().unwrap_or(u64::MAX)
}

/// Sends `calls` calls for each of `keys` unique keys (`prefix-n`) through
/// one keyed layer, `IN_FLIGHT` at a time; `fail(n)` says which fail.
async fn flood(
    layer: &distributed_circuit_breaker::KeyedCircuitBreakerLayer<
        impl Fn(&u32) -> Option<String> + Clone + Send + Sync + 'static,
        distributed_circuit_breaker::ErrorsAsFailures,
    >,
    keys: u32,
    calls: u32,
    fail: fn(u32) -> bool,
) -> u64 {
    let svc = layer.layer(service_fn(move |n: u32| {
        std::future::ready(if fail(n) {
            Err(std::io::Error::other("down"))
        } else {
            Ok(())
        })
    }));
    let next = Arc::new(AtomicU64::new(0));
    let total = u64::from(keys) * u64::from(calls);
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (svc, next) = (svc.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    // Each key's calls in a row: key = i / calls.
                    let key = u32::try_from(i / u64::from(calls)).unwrap();
                    let _ = svc.clone().oneshot(key).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unique_keys_leaves_redis_bounded_and_nothing_degraded() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let baseline = used_memory(&redis);

    // 100,000 unique keys at the default policy, one call each, a tenth of
    // them failing: no breaker has anything worth keeping in Redis.
    let layer = DistributedCircuitBreakerLayer::new("tenant", Policy::default(), store.clone())
        .unwrap()
        .key_by(|n: &u32| Some(format!("flood-{n}")))
        .limits(120_000, Duration::from_secs(3600))
        .unwrap();
    flood(&layer, FLOOD, 1, |n| n % 10 == 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(keys(&redis), 0, "no record for breakers without a run");
    let growth = used_memory(&redis).saturating_sub(baseline);
    assert!(growth < 1_000_000, "Redis grew {growth} bytes");
    let degraded = (0..FLOOD)
        .filter(|n| {
            layer
                .breaker(&format!("flood-{n}"))
                .is_some_and(|b| b.is_degraded())
        })
        .count();
    // 0 in `examples/scale` (release build); a debug build on a loaded
    // 2-core machine may see a store call overrun the 50 ms store_timeout.
    assert!(
        degraded <= 10,
        "{degraded} of {FLOOD} new breakers degraded"
    );
    assert_eq!(layer.breakers(), FLOOD as usize);

    // Keys that fail three times in a row do leave a record (a run the fleet
    // shares), but a closed breaker's record lives one window: the store
    // holds at most the keys that failed within the last window.
    let short = Policy::builder()
        .window(Duration::from_secs(1))
        .build()
        .unwrap();
    let runs = DistributedCircuitBreakerLayer::new("runs", short, store)
        .unwrap()
        .key_by(|n: &u32| Some(format!("run-{n}")))
        .limits(20_000, Duration::from_secs(3600))
        .unwrap();
    flood(&runs, 10_000, 3, |_| true).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = keys(&redis);
    assert!(held > 0 && held <= 10_000, "{held} records");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        keys(&redis),
        0,
        "every closed record expired with its window"
    );
}
