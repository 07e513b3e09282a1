//! A fleet of service instances calls a dependency that goes hard down and
//! later recovers: once with a private breaker in every instance (what
//! in-process breakers give you), once with one breaker shared by the fleet.
//!
//! ```text
//! cargo run --example fleet                                  # in-memory store
//! cargo run --example fleet -- --instances 20                # a bigger fleet
//! cargo run --example fleet -- --redis redis://127.0.0.1:6379  # also over Redis
//! ```
//!
//! With `--redis` (or `REDIS_URL`), every instance gets its own `RedisStore`,
//! i.e. its own connections, as separate processes would.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::{
    BoxError, BreakerError, DistributedCircuitBreakerLayer, MemoryStore, Policy, RedisStore, State,
    Store,
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
    failed: AtomicUsize,
}

struct Report {
    failed_before_all_open: usize,
    probes: usize,
    failed_total: usize,
    rejected: usize,
    all_open_after: Duration,
    recovered: bool,
    calls: usize,
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
    rows.push(("private breaker per instance", private, None));
    let shared_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let shared = run(instances, &policy, |_| shared_store.clone()).await?;
    rows.push(("shared breaker (MemoryStore)", shared, None));
    let mut steady = None;
    let redis_url = arg_value("--redis").or_else(|| std::env::var("REDIS_URL").ok());
    if let Some(url) = redis_url {
        let mut stores: Vec<Arc<dyn Store>> = Vec::new();
        for _ in 0..instances {
            stores.push(Arc::new(RedisStore::connect(&url).await?));
        }
        let client = redis::Client::open(url.as_str())?;
        let mut admin = client.get_multiplexed_async_connection().await?;
        let _: () = redis::cmd("DEL")
            .arg("dcb:{inventory}")
            .query_async(&mut admin)
            .await?;
        let before = evalsha_calls(&mut admin).await?;
        let report = run(instances, &policy, |i| stores[i].clone()).await?;
        let evalsha = evalsha_calls(&mut admin).await? - before;
        let per_thousand = evalsha as f64 * 1000.0 / report.calls as f64;
        rows.push(("shared breaker (RedisStore)", report, Some(per_thousand)));
        steady = Some(steady_cost(&stores, &mut admin).await?);
    }

    println!(
        "{:<30} {:>21} {:>18} {:>13} {:>14} {:>15} {:>10} {:>20}",
        "breakers",
        "failures before open",
        "probes while down",
        "failed calls",
        "rejected fast",
        "all open after",
        "recovered",
        "Redis cmds/1k calls"
    );
    for (name, r, per_thousand) in &rows {
        println!(
            "{:<30} {:>21} {:>18} {:>13} {:>14} {:>13}ms {:>10} {:>20}",
            name,
            r.failed_before_all_open,
            r.probes,
            r.failed_total,
            r.rejected,
            r.all_open_after.as_millis(),
            if r.recovered { "yes" } else { "no" },
            per_thousand.map_or_else(|| "-".to_owned(), |n| format!("{n:.1}")),
        );
    }
    println!(
        "\nfailures before open: failed calls that reached the dependency before every instance had stopped calling it"
    );
    println!(
        "probes while down: calls that reached the sick dependency after that (half-open probes)"
    );
    if let Some((calls, evalsha)) = steady {
        println!("Redis cmds/1k calls: EVALSHA per 1,000 calls over the whole run, outage included (INFO commandstats)");
        println!(
            "\nsteady healthy traffic, default policy (sync every 1s): {calls} calls, {evalsha} EVALSHA = {:.1} Redis commands per 1,000 calls",
            evalsha as f64 * 1000.0 / calls as f64
        );
    }
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
                    Err(_) => tally.failed.fetch_add(1, Ordering::SeqCst),
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
    // Recovery is judged a moment after traffic stops, as every instance's
    // background task has then heard of the close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let recovered = breakers.iter().all(|b| b.snapshot().state == State::Closed);
    let failed_before_all_open = tally.failed_before_all_open.load(Ordering::SeqCst);
    Ok(Report {
        failed_before_all_open,
        probes: failed_total.saturating_sub(failed_before_all_open),
        failed_total,
        rejected: tally.rejected.load(Ordering::SeqCst),
        all_open_after: Duration::from_millis(tally.all_open_after_ms.load(Ordering::SeqCst)),
        recovered,
        calls: tally.succeeded.load(Ordering::SeqCst)
            + tally.rejected.load(Ordering::SeqCst)
            + tally.failed.load(Ordering::SeqCst),
    })
}

async fn evalsha_calls(admin: &mut redis::aio::MultiplexedConnection) -> Result<u64, BoxError> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
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

/// Healthy traffic for two seconds on a breaker with the default policy:
/// what the store costs when nothing is wrong.
async fn steady_cost(
    stores: &[Arc<dyn Store>],
    admin: &mut redis::aio::MultiplexedConnection,
) -> Result<(usize, u64), BoxError> {
    let before = evalsha_calls(admin).await?;
    let calls = Arc::new(AtomicUsize::new(0));
    let stop_at = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for store in stores {
        let name = distributed_circuit_breaker::BreakerName::new("steady")?;
        let layer =
            DistributedCircuitBreakerLayer::with_store(name, Policy::default(), store.clone());
        let svc = layer.layer(service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }));
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while Instant::now() < stop_at {
                tick.tick().await;
                if svc.clone().oneshot(()).await.is_ok() {
                    calls.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok((
        calls.load(Ordering::SeqCst),
        evalsha_calls(admin).await? - before,
    ))
}
