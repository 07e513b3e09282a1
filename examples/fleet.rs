//! A fleet of service instances calls a dependency that goes hard down after
//! healthy traffic, and later recovers: once with a private breaker in every
//! instance (what in-process breakers give you), once with one breaker shared
//! by the fleet. Then one busy instance at 1,000 calls/s against recloser.
//!
//! The policy is the default one (trip after 5 consecutive failures, sync
//! every second) except for a 1 s break, so that the demo shows recovery
//! within seconds.
//!
//! ```text
//! cargo run --example fleet                                  # in-memory store
//! cargo run --example fleet -- --instances 20                # a bigger fleet
//! cargo run --example fleet -- --redis redis://127.0.0.1:6379  # also over Redis
//! ```
//!
//! With `--redis` (or `REDIS_URL`), every instance gets its own `RedisStore`,
//! i.e. its own connections, as separate processes would.
//!
//! Built with `--features metrics` and run with `--metrics`, it ends with the
//! Prometheus scrape of the run (every `dcb_` series):
//!
//! ```text
//! cargo run --example fleet --features metrics -- --redis redis://127.0.0.1:6379 --metrics
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::events::Event;
use distributed_circuit_breaker::{
    BoxError, BreakerError, BreakerName, DistributedCircuitBreakerLayer, MemoryStore, Policy,
    RedisStore, State, Store,
};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

#[path = "support/args.rs"]
mod args;
use args::arg_value;

const THRESHOLD: u32 = 5;
const CALL_EVERY: Duration = Duration::from_millis(10);
/// Healthy traffic before the outage: longer than the default sync interval.
const HEALTHY_FIRST: Duration = Duration::from_millis(1_500);
const OUTAGE: Duration = Duration::from_millis(3_000);
const AFTER: Duration = Duration::from_millis(2_000);
const BREAK: Duration = Duration::from_secs(1);
/// How long the store's steady cost is measured.
const STEADY: Duration = Duration::from_secs(4);
/// The busy instance: one call every millisecond.
const BUSY_EVERY: Duration = Duration::from_millis(1);

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
    /// Fleet-wide trips (closed to open), as listeners heard them (a pager
    /// would ring this many times).
    pages: AtomicUsize,
    instances_open: AtomicUsize,
    failed_before_all_open: AtomicUsize,
    all_open_after_ms: AtomicU64,
    rejected: AtomicUsize,
    succeeded: AtomicUsize,
    failed: AtomicUsize,
}

struct Report {
    pages: usize,
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
    // The recorder goes first: breakers register their counters when built.
    #[cfg(feature = "metrics")]
    let scrape = if std::env::args().any(|a| a == "--metrics") {
        Some(metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?)
    } else {
        None
    };
    // The default policy (5 consecutive failures, sync every 1 s, 1 probe),
    // with a short break so that recovery shows within seconds.
    let policy = Policy::builder().break_duration(BREAK).build()?;

    println!(
        "fleet: {instances} instances, one call every {CALL_EVERY:?} each, healthy for {HEALTHY_FIRST:?}; then the dependency is down for {OUTAGE:?}"
    );
    println!(
        "policy: the default (trip after {THRESHOLD} consecutive failures, sync every 1s, 1 half-open probe) with a {BREAK:?} break\n"
    );

    let mut rows = Vec::new();
    let private = run(instances, &policy, |_| Arc::new(MemoryStore::new())).await?;
    rows.push(("private breaker per instance", private, None));
    let shared_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let shared = run(instances, &policy, |_| shared_store.clone()).await?;
    rows.push(("shared breaker (MemoryStore)", shared, None));
    let mut steady = None;
    let mut busy_redis = None;
    let redis_url = arg_value("--redis").or_else(|| std::env::var("REDIS_URL").ok());
    if let Some(url) = redis_url.clone() {
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
        steady = Some((
            steady_cost(&stores, &mut admin, 0).await?,
            steady_cost(&stores, &mut admin, 100).await?,
        ));
        let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&url).await?);
        busy_redis = Some(busy_instance(&policy, store).await?);
    }

    println!(
        "{:<30} {:>6} {:>21} {:>18} {:>13} {:>14} {:>15} {:>10} {:>20}",
        "breakers",
        "pages",
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
            "{:<30} {:>6} {:>21} {:>18} {:>13} {:>14} {:>13}ms {:>10} {:>20}",
            name,
            r.pages,
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
        "\npages: trips (closed to open) of the fleet's breaker heard by the instances' listeners (Event::FleetTransition, told once per fleet)"
    );
    println!(
        "failures before open: failed calls that reached the dependency before every instance had stopped calling it"
    );
    println!(
        "probes while down: calls that reached the sick dependency after that (half-open probes)"
    );
    if let Some(((calls, evalsha), (scattered_calls, scattered_evalsha))) = steady {
        println!("Redis cmds/1k calls: EVALSHA per 1,000 calls over the whole run, outage included (INFO commandstats)");
        println!(
            "\nsteady healthy traffic, default policy, {instances} instances x 200 calls/s for {STEADY:?}: {calls} calls, {evalsha} EVALSHA = {:.2} per second per instance",
            evalsha as f64 / STEADY.as_secs_f64() / instances as f64
        );
        println!(
            "the same with 1 call in 100 failing (scattered): {scattered_calls} calls, {scattered_evalsha} EVALSHA = {:.2} per second per instance",
            scattered_evalsha as f64 / STEADY.as_secs_f64() / instances as f64
        );
    }

    println!(
        "\none busy instance, one call every {BUSY_EVERY:?}, healthy for {HEALTHY_FIRST:?}, then the dependency is down:"
    );
    println!("{:<34} {:>21}", "breaker", "failures before open");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ours = busy_instance(&policy, store).await?;
    println!("{:<34} {:>21}", "ours (MemoryStore)", ours);
    if let Some(n) = busy_redis {
        println!("{:<34} {:>21}", "ours (RedisStore)", n);
    }
    println!(
        "{:<34} {:>21}",
        "recloser 1.4 (ring of 5, rate 1.0)",
        busy_recloser().await
    );
    #[cfg(feature = "metrics")]
    if let Some(scrape) = scrape {
        println!("\nPrometheus scrape (dcb_ series):");
        for line in scrape.render().lines().filter(|l| l.contains("dcb_")) {
            println!("{line}");
        }
    }
    Ok(())
}

/// One instance calls at `BUSY_EVERY` while healthy, then against a dead
/// dependency; returns the failed calls before its breaker opened.
async fn busy_instance(policy: &Policy, store: Arc<dyn Store>) -> Result<usize, BoxError> {
    let name = distributed_circuit_breaker::BreakerName::new("busy")?;
    let layer = DistributedCircuitBreakerLayer::with_store(name, policy.clone(), store);
    let breaker = layer.breaker();
    let dependency = Arc::new(Dependency::default());
    let dep = dependency.clone();
    let mut svc = layer.layer(service_fn(move |_: ()| {
        let dep = dep.clone();
        async move { dep.call() }
    }));
    Ok(until_open(&dependency, async || {
        if let Ok(ready) = svc.ready().await {
            let _ = ready.call(()).await;
        }
        dependency.down.load(Ordering::SeqCst) && breaker.snapshot().state != State::Closed
    })
    .await)
}

/// The same with recloser set to open on 5 failures out of the last 5 calls.
async fn busy_recloser() -> usize {
    let recloser = recloser::Recloser::custom()
        .error_rate(1.0)
        .closed_len(THRESHOLD as usize)
        .open_wait(BREAK)
        .build();
    let dependency = Dependency::default();
    until_open(&dependency, async || {
        matches!(
            recloser.call(|| dependency.call()),
            Err(recloser::Error::Rejected)
        )
    })
    .await
}

/// Calls `call_is_open` every `BUSY_EVERY`, with the dependency healthy for
/// `HEALTHY_FIRST` and down after, until it says the breaker is open (or
/// half a second passed); returns the failed calls.
async fn until_open(dependency: &Dependency, mut call_is_open: impl AsyncFnMut() -> bool) -> usize {
    let mut tick = tokio::time::interval(BUSY_EVERY);
    let down_at = Instant::now() + HEALTHY_FIRST;
    let stop_at = down_at + Duration::from_millis(500);
    while Instant::now() < stop_at {
        tick.tick().await;
        if Instant::now() >= down_at {
            dependency.down.store(true, Ordering::SeqCst);
        }
        if call_is_open().await {
            break;
        }
    }
    dependency.failed.load(Ordering::SeqCst)
}

impl Dependency {
    /// One call: fails while the dependency is down.
    fn call(&self) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            Err("dependency down".into())
        } else {
            Ok(())
        }
    }
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
        let pages = tally.clone();
        let layer = DistributedCircuitBreakerLayer::with_store(name, policy.clone(), store_for(i))
            .on_event(move |_: &BreakerName, event: &Event| {
                if matches!(event, Event::FleetTransition(t) if t.from == State::Closed && t.to == State::Open) {
                    pages.pages.fetch_add(1, Ordering::SeqCst);
                }
            });
        let breaker = layer.breaker();
        breakers.push(breaker.clone());
        let dep = dependency.clone();
        let svc = layer.layer(service_fn(move |_: ()| {
            let dep = dep.clone();
            async move { dep.call() }
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
        pages: tally.pages.load(Ordering::SeqCst),
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

/// Traffic for two seconds on a breaker with the default policy, every
/// `fail_every`-th call failing (0: none): what the store costs when nothing
/// (or little) is wrong.
async fn steady_cost(
    stores: &[Arc<dyn Store>],
    admin: &mut redis::aio::MultiplexedConnection,
    fail_every: usize,
) -> Result<(usize, u64), BoxError> {
    let calls = Arc::new(AtomicUsize::new(0));
    // Measured after a second of warm-up: each breaker's first read of the
    // shared state is a one-off, not a steady cost.
    let start_at = Instant::now() + Duration::from_millis(1_500);
    let stop_at = start_at + STEADY;
    let mut tasks = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let name = distributed_circuit_breaker::BreakerName::new(format!("steady-{fail_every}"))?;
        let layer =
            DistributedCircuitBreakerLayer::with_store(name, Policy::default(), store.clone());
        let n = Arc::new(AtomicUsize::new(i * 7));
        let svc = layer.layer(service_fn(move |_: ()| {
            let call = n.fetch_add(1, Ordering::SeqCst);
            async move {
                if fail_every > 0 && call % fail_every == 0 {
                    Err(std::io::Error::other("scattered failure"))
                } else {
                    Ok(())
                }
            }
        }));
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while Instant::now() < stop_at {
                tick.tick().await;
                let _ = svc.clone().oneshot(()).await;
                if Instant::now() >= start_at {
                    calls.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    tokio::time::sleep_until(start_at).await;
    let before = evalsha_calls(admin).await?;
    for task in tasks {
        task.await?;
    }
    Ok((
        calls.load(Ordering::SeqCst),
        evalsha_calls(admin).await? - before,
    ))
}
