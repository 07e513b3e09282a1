//! A fleet of service instances calls a dependency that goes hard down and
//! later recovers: once with a private breaker in every instance (what
//! in-process breakers give you), once with one breaker shared by the fleet.
//!
//! ```text
//! cargo run --example fleet                     # in-memory store
//! cargo run --example fleet -- --instances 20   # a bigger fleet
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::{
    BoxError, BreakerError, DistributedCircuitBreakerLayer, MemoryStore, Policy, State, Store,
};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

const THRESHOLD: u32 = 5;
const CALL_EVERY: Duration = Duration::from_millis(20);
const HEALTHY_FIRST: Duration = Duration::from_millis(500);
const OUTAGE: Duration = Duration::from_millis(2_500);
const AFTER: Duration = Duration::from_millis(1_500);
const BREAK: Duration = Duration::from_secs(1);

/// The dependency: counts every call that reaches it.
#[derive(Default)]
struct Dependency {
    down: AtomicBool,
    calls: AtomicUsize,
    failed: AtomicUsize,
}

/// What one run measured.
#[derive(Default)]
struct Tally {
    instances_open: AtomicUsize,
    failed_before_all_open: AtomicUsize,
    all_open_after_ms: AtomicU64,
    rejected: AtomicUsize,
    succeeded: AtomicUsize,
}

struct Report {
    failed_before_all_open: usize,
    probes: usize,
    failed_total: usize,
    rejected: usize,
    all_open_after: Duration,
    recovered: bool,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let instances = arg_value("--instances")
        .map(|v| v.parse::<usize>())
        .transpose()?
        .unwrap_or(10);
    let policy = Policy::builder()
        .consecutive_failures(THRESHOLD)
        .break_duration(BREAK)
        .half_open_permits(1)
        .sync_interval(Duration::from_millis(100))
        .build()?;

    println!(
        "fleet: {instances} instances, one call every {CALL_EVERY:?} each; the dependency is down for {OUTAGE:?}"
    );
    println!(
        "policy: trip after {THRESHOLD} consecutive failures, break {BREAK:?}, 1 half-open probe\n"
    );

    let mut rows = Vec::new();
    let private = run(instances, &policy, |_| Arc::new(MemoryStore::new())).await?;
    rows.push(("private breaker per instance", private));
    let shared_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let shared = run(instances, &policy, |_| shared_store.clone()).await?;
    rows.push(("shared breaker (MemoryStore)", shared));

    println!(
        "{:<30} {:>22} {:>20} {:>14} {:>14} {:>15} {:>10}",
        "breakers",
        "failures before open",
        "probes while down",
        "failed calls",
        "rejected fast",
        "all open after",
        "recovered"
    );
    for (name, r) in &rows {
        println!(
            "{:<30} {:>22} {:>20} {:>14} {:>14} {:>13}ms {:>10}",
            name,
            r.failed_before_all_open,
            r.probes,
            r.failed_total,
            r.rejected,
            r.all_open_after.as_millis(),
            if r.recovered { "yes" } else { "no" }
        );
    }
    println!(
        "\nfailures before open: failed calls that reached the dependency before every instance had stopped calling it"
    );
    println!(
        "probes while down: calls that reached the sick dependency after that (half-open probes)"
    );
    Ok(())
}

async fn run(
    instances: usize,
    policy: &Policy,
    store_for: impl Fn(usize) -> Arc<dyn Store>,
) -> Result<Report, BoxError> {
    let dependency = Arc::new(Dependency::default());
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let outage_starts = start + HEALTHY_FIRST;
    let outage_ends = outage_starts + OUTAGE;
    let stop_at = outage_ends + AFTER;

    let mut tasks = Vec::new();
    let mut breakers = Vec::new();
    for i in 0..instances {
        let name = distributed_circuit_breaker::BreakerName::new("inventory")?;
        let layer = DistributedCircuitBreakerLayer::with_store(name, policy.clone(), store_for(i));
        let breaker = layer.breaker();
        breakers.push(breaker.clone());
        let dep = dependency.clone();
        let svc = layer.layer(service_fn(move |_: ()| {
            let dep = dep.clone();
            async move {
                dep.calls.fetch_add(1, Ordering::SeqCst);
                if dep.down.load(Ordering::SeqCst) {
                    dep.failed.fetch_add(1, Ordering::SeqCst);
                    Err::<(), BoxError>("dependency down".into())
                } else {
                    Ok(())
                }
            }
        }));
        let (dep, tally) = (dependency.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut svc = svc;
            let mut seen_open = false;
            // Stagger the instances across the call interval.
            tokio::time::sleep(CALL_EVERY * i as u32 / instances as u32).await;
            let mut tick = tokio::time::interval(CALL_EVERY);
            while Instant::now() < stop_at {
                tick.tick().await;
                let result = match svc.ready().await {
                    Ok(svc) => svc.call(()).await,
                    Err(e) => Err(e),
                };
                match result.map_err(BreakerError::from) {
                    Ok(()) => tally.succeeded.fetch_add(1, Ordering::SeqCst),
                    Err(BreakerError::Open(_)) => tally.rejected.fetch_add(1, Ordering::SeqCst),
                    Err(_) => 0,
                };
                if !seen_open
                    && dep.down.load(Ordering::SeqCst)
                    && breaker.snapshot().state != State::Closed
                {
                    seen_open = true;
                    if tally.instances_open.fetch_add(1, Ordering::SeqCst) + 1 == instances {
                        tally
                            .failed_before_all_open
                            .store(dep.failed.load(Ordering::SeqCst), Ordering::SeqCst);
                        let after = Instant::now().saturating_duration_since(outage_starts);
                        tally
                            .all_open_after_ms
                            .store(after.as_millis() as u64, Ordering::SeqCst);
                    }
                }
            }
        }));
    }

    tokio::time::sleep_until(outage_starts).await;
    dependency.down.store(true, Ordering::SeqCst);
    tokio::time::sleep_until(outage_ends).await;
    let failed_total = dependency.failed.load(Ordering::SeqCst);
    dependency.down.store(false, Ordering::SeqCst);
    for task in tasks {
        task.await?;
    }
    let recovered = breakers.iter().all(|b| b.snapshot().state == State::Closed);
    let failed_before_all_open = tally.failed_before_all_open.load(Ordering::SeqCst);
    Ok(Report {
        failed_before_all_open,
        probes: failed_total.saturating_sub(failed_before_all_open),
        failed_total,
        rejected: tally.rejected.load(Ordering::SeqCst),
        all_open_after: Duration::from_millis(tally.all_open_after_ms.load(Ordering::SeqCst)),
        recovered,
    })
}

fn arg_value(flag: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == flag {
            return args.next();
        }
        if let Some(value) = arg.strip_prefix(&format!("{flag}=")) {
            return Some(value.to_owned());
        }
    }
    None
}
