//! Per-call cost of a closed breaker, against a plain service and the other
//! Rust circuit breakers, measured in one run. Run with
//! `cargo bench --bench overhead`; `scripts/bench-table` turns the results
//! into the README's table of ratios.

use std::future::ready;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, Force, MemoryStore, Policy};
use failsafe::futures::CircuitBreaker as _;
use tower::{Layer, Service, ServiceExt};

#[path = "support/contenders.rs"]
mod contenders;
use contenders::{Plain, RecloserService, TenKeys};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Times `iters` calls through clones of `svc`, one after another, each polled
/// ready first as tower requires; `Ok` and `Err` both count (the rejected path
/// answers `Err`).
fn bench_service<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: S,
) where
    S: Service<u64> + Clone,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let mut svc = svc.clone();
            async move {
                let start = Instant::now();
                for i in 0..iters {
                    let ready = svc.ready().await.unwrap();
                    black_box(ready.call(black_box(i)).await.is_ok());
                }
                start.elapsed()
            }
        })
    });
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("closed_call");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));

    bench_service(&mut group, &rt, "plain", Plain);

    let layer = rt.block_on(async {
        DistributedCircuitBreakerLayer::new("bench", Policy::default(), MemoryStore::new()).unwrap()
    });
    let ours = layer.layer(Plain);
    bench_service(&mut group, &rt, "distributed-circuit-breaker", ours);

    // One breaker per key (ten known keys, borrowed: no allocation).
    let keyed = rt.block_on(async {
        DistributedCircuitBreakerLayer::new("bench", Policy::default(), MemoryStore::new())
            .unwrap()
            .key_by(TenKeys)
    });
    bench_service(
        &mut group,
        &rt,
        "distributed-circuit-breaker (keyed, known key)",
        keyed.layer(Plain),
    );

    // The same layer on a RedisStore: the closed path never waits on Redis, so
    // it should cost what the MemoryStore one does.
    if let Some(redis) = LocalRedis::start() {
        let layer = rt.block_on(async {
            let store = distributed_circuit_breaker::RedisStore::connect(&redis.url())
                .await
                .unwrap();
            DistributedCircuitBreakerLayer::new("bench", Policy::default(), store).unwrap()
        });
        let on_redis = layer.layer(Plain);
        bench_service(
            &mut group,
            &rt,
            "distributed-circuit-breaker (RedisStore)",
            on_redis,
        );
    } else {
        eprintln!("redis-server not found: skipping the RedisStore benchmark");
    }

    // A call timeout on every call (never reached): the timer lives in the
    // response future, no allocation.
    let timed = rt.block_on(async {
        DistributedCircuitBreakerLayer::new("timed", Policy::default(), MemoryStore::new())
            .unwrap()
            .call_timeout(Duration::from_secs(10))
    });
    bench_service(
        &mut group,
        &rt,
        "distributed-circuit-breaker (call_timeout)",
        timed.layer(Plain),
    );

    let recloser = recloser::AsyncRecloser::from(recloser::Recloser::default());
    group.bench_function("recloser", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let r = &recloser;
            async move {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(r.call(ready(Ok::<u64, ()>(black_box(i)))).await.unwrap());
                }
                start.elapsed()
            }
        })
    });

    // recloser behind the same tower interface as ours (`poll_ready`, then
    // `call` returning a 'static future): like for like.
    let wrapped = RecloserService {
        inner: Plain,
        recloser: recloser::AsyncRecloser::from(recloser::Recloser::default()),
    };
    bench_service(&mut group, &rt, "recloser (tower service)", wrapped);

    let failsafe = failsafe::Config::new().build();
    group.bench_function("failsafe", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let f = &failsafe;
            async move {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(f.call(ready(Ok::<u64, ()>(black_box(i)))).await.unwrap());
                }
                start.elapsed()
            }
        })
    });

    let resilience = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .build()
        .unwrap();
    let theirs = rt.block_on(async { resilience.layer(Plain) });
    bench_service(&mut group, &rt, "tower-resilience-circuitbreaker", theirs);
    group.finish();

    let mut group = c.benchmark_group("open_call");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    let open = rt.block_on(async {
        let layer =
            DistributedCircuitBreakerLayer::new("open", Policy::default(), MemoryStore::new())
                .unwrap();
        layer.breaker().force(Force::Open(None)).await.unwrap();
        layer
    });
    let rejected = open.layer(Plain);
    bench_service(
        &mut group,
        &rt,
        "distributed-circuit-breaker (rejected)",
        rejected,
    );
    let tripped = recloser::AsyncRecloser::from(recloser::Recloser::default());
    for _ in 0..1000 {
        let _ = futures::executor::block_on(tripped.call(ready(Err::<(), ()>(()))));
    }
    let wrapped_open = RecloserService {
        inner: Plain,
        recloser: tripped,
    };
    bench_service(
        &mut group,
        &rt,
        "recloser (tower service, rejected)",
        wrapped_open,
    );
    group.finish();

    contention(c, &rt);
    #[cfg(feature = "metrics")]
    metrics_on(c, &rt);
}

/// The closed call with a metrics recorder installed (last: the recorder
/// stays for the rest of the process). Run with `--features metrics`.
#[cfg(feature = "metrics")]
fn metrics_on(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    metrics_util::debugging::DebuggingRecorder::new()
        .install()
        .expect("no recorder yet");
    let mut group = c.benchmark_group("closed_call");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    let layer = rt.block_on(async {
        DistributedCircuitBreakerLayer::new("metrics", Policy::default(), MemoryStore::new())
            .unwrap()
    });
    bench_service(
        &mut group,
        rt,
        "distributed-circuit-breaker (metrics on)",
        layer.layer(Plain),
    );
    group.finish();
}

/// Throughput of one breaker shared by 1, 2, ... threads (up to the cores
/// this machine has), each thread calling its own clone of the service: the
/// time is for `iters` calls on every thread, so flat times mean throughput
/// that grows with the threads.
fn contention(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("contention");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ours = rt.block_on(async {
        DistributedCircuitBreakerLayer::new("shared", Policy::default(), MemoryStore::new())
            .unwrap()
            .layer(Plain)
    });
    let theirs = RecloserService {
        inner: Plain,
        recloser: recloser::AsyncRecloser::from(recloser::Recloser::default()),
    };
    let mut threads = 1;
    while threads <= cores.max(2) {
        bench_threads(
            &mut group,
            &format!("distributed-circuit-breaker/{threads}"),
            threads,
            &ours,
        );
        bench_threads(
            &mut group,
            &format!("recloser (tower service)/{threads}"),
            threads,
            &theirs,
        );
        threads *= 2;
    }
    group.finish();
}

fn bench_threads<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    threads: usize,
    svc: &S,
) where
    S: Service<u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let mut svc = svc.clone();
                    let start = start.clone();
                    std::thread::spawn(move || {
                        start.wait();
                        futures::executor::block_on(async move {
                            for i in 0..iters {
                                let ready = svc.ready().await.unwrap();
                                black_box(ready.call(black_box(i)).await.is_ok());
                            }
                        })
                    })
                })
                .collect();
            start.wait();
            let began = Instant::now();
            for worker in workers {
                worker.join().unwrap();
            }
            began.elapsed()
        })
    });
}

/// A throwaway redis-server on a free loopback port, killed on drop.
struct LocalRedis {
    port: u16,
    child: std::process::Child,
}

impl LocalRedis {
    fn start() -> Option<LocalRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(LocalRedis { port, child });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

criterion_group!(benches, overhead);
criterion_main!(benches);
