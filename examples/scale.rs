//! How many keyed breakers one process can hold on one `RedisStore`, and what
//! they cost Redis: for 1, 100, 10,000 and 100,000 keys, a burst of distinct
//! keys through one keyed layer (one call each, 256 in flight), then 5 s idle,
//! then 5 s at 1,000 calls/s spread over the keys. Prints one table.
//!
//! ```text
//! cargo run --release --example scale                      # starts its own redis-server
//! cargo run --release --example scale -- --redis redis://127.0.0.1:6379 --keys 1,100,10000
//! ```
//!
//! Redis round trips are the commands Redis executed (`INFO stats`), minus
//! the example's own `INFO` calls; Redis CPU is `used_cpu_user + used_cpu_sys`
//! over the phase, as a share of one core.

#[path = "support/args.rs"]
mod args;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use args::arg_value;
use distributed_circuit_breaker::{
    BoxError, DistributedCircuitBreakerLayer, KeyedCircuitBreakerLayer, Policy, RedisStore,
};
use tower::{service_fn, Layer, ServiceExt};

const PHASE: Duration = Duration::from_secs(5);
const IN_FLIGHT: usize = 256;
const LOAD_RATE: u64 = 1_000;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (url, _server) = match arg_value("--redis").or_else(|| std::env::var("REDIS_URL").ok()) {
        Some(url) => (url, None),
        None => {
            let server = ThrowawayRedis::start()?;
            (server.url(), Some(server))
        }
    };
    let counts: Vec<usize> = arg_value("--keys")
        .unwrap_or_else(|| "1,100,10000,100000".into())
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()?;
    let client = redis::Client::open(url.as_str())?;
    let mut admin = client.get_multiplexed_async_connection().await?;

    println!("| breakers | burst: max degraded | burst took | idle: round trips/s | idle: Redis CPU | healthy load: round trips/s | healthy load: Redis CPU | 1 % failing: round trips/s | 1 % failing: Redis CPU | Redis keys after | Redis memory after | process memory per breaker |");
    println!(
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (run, &n) in counts.iter().enumerate() {
        let _: () = redis::cmd("FLUSHALL").query_async(&mut admin).await?;
        let memory_before = used_memory(&mut admin).await?;
        let rss_before = rss_bytes();
        let store = RedisStore::builder()
            .prefix(format!("scale{run}"))
            .connect(&url)
            .await?;
        let layer = DistributedCircuitBreakerLayer::new("tenant", Policy::default(), store)?
            .key_by(|key: &u32| Some(key.to_string()))
            .limits(n.max(1) + 1, Duration::from_secs(3600))?;
        let svc = layer.layer(service_fn(dependency));

        // The burst: every key once, IN_FLIGHT at a time, while a watcher
        // counts degraded breakers.
        let done = Arc::new(AtomicUsize::new(0));
        let max_degraded = Arc::new(AtomicUsize::new(0));
        let watcher = {
            let (layer, done, max_degraded) = (layer.clone(), done.clone(), max_degraded.clone());
            tokio::spawn(async move {
                loop {
                    let created = done.load(Ordering::Relaxed);
                    max_degraded.fetch_max(degraded(&layer, created.min(n)), Ordering::Relaxed);
                    if created >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..IN_FLIGHT.min(n))
            .map(|_| {
                let (svc, next, done) = (svc.clone(), next.clone(), done.clone());
                tokio::spawn(async move {
                    loop {
                        let key = next.fetch_add(1, Ordering::Relaxed);
                        if key >= n {
                            return;
                        }
                        let _ = svc.clone().oneshot(key as u32).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await?;
        }
        let burst = started.elapsed();
        watcher.await?;
        // One more look a little later: nothing may go degraded after the burst.
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_degraded.fetch_max(degraded(&layer, n), Ordering::Relaxed);

        let idle = measure(&mut admin, async { tokio::time::sleep(PHASE).await }).await?;
        let load = measure(&mut admin, spread_load(&svc, n)).await?;
        FAIL_EVERY.store(100, Ordering::Relaxed);
        let failing = measure(&mut admin, spread_load(&svc, n)).await?;
        FAIL_EVERY.store(0, Ordering::Relaxed);
        let keys: u64 = redis::cmd("DBSIZE").query_async(&mut admin).await?;
        let memory = used_memory(&mut admin).await?.saturating_sub(memory_before);
        let rss = rss_bytes().saturating_sub(rss_before);
        println!(
            "| {n} | {} | {:.2} s | {:.0} | {:.1} % | {:.0} | {:.1} % | {:.0} | {:.1} % | {keys} | {:.1} MB | {} B |",
            max_degraded.load(Ordering::Relaxed),
            burst.as_secs_f64(),
            idle.round_trips,
            idle.cpu * 100.0,
            load.round_trips,
            load.cpu * 100.0,
            failing.round_trips,
            failing.cpu * 100.0,
            memory as f64 / 1e6,
            rss / n.max(1) as u64,
        );
        drop(svc);
        drop(layer);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Every this many calls fails (0: none).
static FAIL_EVERY: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

/// The dependency: fails every `FAIL_EVERY`th call.
async fn dependency(_: u32) -> Result<(), std::io::Error> {
    let every = FAIL_EVERY.load(Ordering::Relaxed);
    if every != 0 && CALLS.fetch_add(1, Ordering::Relaxed) % every == 0 {
        return Err(std::io::Error::other("scattered failure"));
    }
    Ok(())
}

/// How many of the breakers of keys `0..keys` decide alone right now.
fn degraded<K, C: Clone>(layer: &KeyedCircuitBreakerLayer<K, C>, keys: usize) -> usize {
    (0..keys)
        .filter(|k| {
            layer
                .breaker(&k.to_string())
                .is_some_and(|b| b.is_degraded())
        })
        .count()
}

/// `LOAD_RATE` calls per second for `PHASE`, spread over `n` keys.
async fn spread_load<S>(svc: &S, n: usize)
where
    S: tower::Service<u32> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
{
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LOAD_RATE));
    let end = Instant::now() + PHASE;
    let mut key = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        let svc = svc.clone();
        let k = (key % n) as u32;
        key = key.wrapping_add(7919);
        tokio::spawn(async move {
            let _ = svc.oneshot(k).await;
        });
    }
}

struct Phase {
    round_trips: f64,
    cpu: f64,
}

/// Commands per second and CPU share of Redis while `work` runs.
async fn measure(
    admin: &mut redis::aio::MultiplexedConnection,
    work: impl std::future::Future<Output = ()>,
) -> Result<Phase, BoxError> {
    let (commands_before, cpu_before) = stats(admin).await?;
    let started = Instant::now();
    work.await;
    let elapsed = started.elapsed().as_secs_f64();
    let (commands_after, cpu_after) = stats(admin).await?;
    // Our own two INFO calls.
    let commands = commands_after
        .saturating_sub(commands_before)
        .saturating_sub(2);
    Ok(Phase {
        round_trips: commands as f64 / elapsed,
        cpu: (cpu_after - cpu_before) / elapsed,
    })
}

async fn stats(admin: &mut redis::aio::MultiplexedConnection) -> Result<(u64, f64), BoxError> {
    let info: String = redis::cmd("INFO").arg("all").query_async(admin).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let commands = field("total_commands_processed").parse().unwrap_or(0);
    let cpu = field("used_cpu_user").parse::<f64>().unwrap_or(0.0)
        + field("used_cpu_sys").parse::<f64>().unwrap_or(0.0);
    Ok((commands, cpu))
}

async fn used_memory(admin: &mut redis::aio::MultiplexedConnection) -> Result<u64, BoxError> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(admin).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// This process's resident memory.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// A redis-server on a free loopback port for this run.
struct ThrowawayRedis {
    port: u16,
    child: Child,
}

impl ThrowawayRedis {
    fn start() -> Result<ThrowawayRedis, BoxError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server is needed (scripts/test installs it): {e}"))?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(ThrowawayRedis { port, child });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not start".into())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
