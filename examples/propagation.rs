//! How fast a trip travels: one instance's dependency fails until it trips,
//! and the example times when that instance, then every other instance
//! (each with its own `RedisStore`, as separate processes have), sees the
//! breaker open. Repeated, with percentiles.
//!
//! ```text
//! cargo run --release --example propagation -- --redis redis://127.0.0.1:6379
//! ```
//!
//! Without `--redis` (or `REDIS_URL`) it uses one `MemoryStore` shared by the
//! instances.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::{
    BoxError, Breaker, BreakerName, DistributedCircuitBreakerLayer, Force, MemoryStore, Policy,
    RedisStore, State, Store,
};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

#[path = "support/args.rs"]
mod args;
use args::arg_value;

const INSTANCES: usize = 5;
const ROUNDS: usize = 200;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = arg_value("--redis").or_else(|| std::env::var("REDIS_URL").ok());
    let shared: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..INSTANCES {
        stores.push(match &url {
            Some(url) => Arc::new(RedisStore::connect(url).await?),
            None => shared.clone(),
        });
    }
    let name = BreakerName::new(format!("propagation-{}", std::process::id()))?;
    let policy = Policy::default();
    let down = Arc::new(AtomicBool::new(false));
    let mut breakers: Vec<Breaker> = Vec::new();
    let mut tripping = None;
    for (i, store) in stores.iter().enumerate() {
        let layer =
            DistributedCircuitBreakerLayer::with_store(name.clone(), policy.clone(), store.clone());
        breakers.push(layer.breaker());
        if i == 0 {
            let down = down.clone();
            tripping = Some(layer.layer(service_fn(move |_: ()| {
                let down = down.load(Ordering::SeqCst);
                async move {
                    if down {
                        Err::<(), _>(std::io::Error::other("down"))
                    } else {
                        Ok(())
                    }
                }
            })));
        }
    }
    let svc = tripping.ok_or("no instance")?;
    for b in &breakers {
        b.sync().await;
    }

    let (mut own, mut others) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        down.store(true, Ordering::SeqCst);
        // The failing calls; the last one trips the instance.
        let mut tripped_at = None;
        for _ in 0..policy.consecutive_failures().unwrap_or(5) {
            let _ = svc.clone().oneshot(()).await;
            tripped_at = Some(Instant::now());
        }
        let tripped_at = tripped_at.ok_or("no call")?;
        let own_open = if breakers[0].snapshot().state != State::Closed {
            tripped_at.elapsed()
        } else {
            Duration::from_secs(2)
        };
        // The others are watched from a thread of its own that sleeps 50 us
        // between looks, so that watching takes no worker from the runtime
        // (its times include up to ~0.1 ms of starting and looking).
        let watched = breakers.clone();
        let start = tripped_at.into_std();
        let watcher = std::thread::spawn(move || {
            let mut seen = [None; INSTANCES];
            while seen.iter().any(Option::is_none) && start.elapsed() < Duration::from_secs(2) {
                for (i, b) in watched.iter().enumerate() {
                    if seen[i].is_none() && b.snapshot().state != State::Closed {
                        seen[i] = Some(start.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            seen
        });
        let seen = tokio::task::spawn_blocking(move || watcher.join())
            .await?
            .map_err(|_| "the watcher panicked")?;
        own.push(own_open);
        let last = seen[1..]
            .iter()
            .map(|s| s.unwrap_or(Duration::from_secs(2)))
            .max()
            .unwrap_or_default();
        others.push(last);
        down.store(false, Ordering::SeqCst);
        breakers[0].force(Force::Reset).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        for b in &breakers {
            b.sync().await;
        }
    }
    println!(
        "{ROUNDS} trips, {INSTANCES} instances, {}:",
        if url.is_some() {
            "RedisStore each"
        } else {
            "one MemoryStore"
        }
    );
    println!("{:<44} {:>10} {:>10}", "", "p50", "p99");
    for (label, mut samples) in [
        ("tripping instance sees open (after its call)", own),
        ("every other instance sees open", others),
    ] {
        samples.sort();
        let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
        println!("{label:<44} {:>10.3?} {:>10.3?}", pct(50), pct(99));
    }
    Ok(())
}
