//! Soak: ten instances x four concurrent tasks, a dependency failing in waves,
//! and Redis killed and restarted in the middle. Bounded in time and count.
//! Afterwards the books balance and no task hung.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::dependency::Dependency;
use support::fleet::{Call, Instance};
use support::redis::RedisServer;

const INSTANCES: usize = 10;
const TASKS: usize = 4;
const MAX_CALLS_PER_TASK: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn books_balance_through_waves_and_a_redis_restart() {
    let mut redis = RedisServer::start();
    let dep = Dependency::new();
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(Instance::connect(&redis.url(), "soak", &dep).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for instance in &instances {
        for _ in 0..TASKS {
            let (instance, stop) = (instance.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed, mut rejected, mut attempts) =
                    (0usize, 0usize, 0usize, 0usize);
                while !stop.load(Ordering::SeqCst) && attempts < MAX_CALLS_PER_TASK {
                    attempts += 1;
                    match instance.call().await {
                        Call::Ok => ok += 1,
                        Call::Failed => failed += 1,
                        Call::Rejected => rejected += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (attempts, ok, failed, rejected)
            }));
        }
    }

    // Waves: down 300 ms, up 300 ms; Redis killed at 1 s, back at 1.6 s.
    for wave in 0..10 {
        dep.set_down(wave % 2 == 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if wave == 2 {
            redis.kill();
        }
        if wave == 4 {
            redis.restart();
        }
    }
    dep.set_down(false);
    stop.store(true, Ordering::SeqCst);

    let (mut attempts, mut ok, mut failed, mut rejected) = (0, 0, 0, 0);
    for task in tasks {
        let (a, o, f, r) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("a task hung")
            .expect("a task panicked");
        assert_eq!(
            a,
            o + f + r,
            "every call is exactly one of ok, failed, rejected"
        );
        attempts += a;
        ok += o;
        failed += f;
        rejected += r;
    }
    // The dependency's side of the books.
    assert_eq!(
        dep.calls(),
        ok + failed,
        "every admitted call reached the dependency once"
    );
    assert_eq!(
        dep.failures(),
        failed,
        "every failure the callers saw happened at the dependency"
    );
    assert!(
        rejected > 0 && ok > 0 && failed > 0,
        "{ok} ok, {failed} failed, {rejected} rejected"
    );
    assert!(
        attempts >= INSTANCES * TASKS * 100,
        "traffic kept flowing: {attempts} calls"
    );
    println!("soak: {attempts} calls: {ok} ok, {failed} failed, {rejected} rejected fast");

    // After the storm the fleet converges on the shared state again.
    support::fleet::drive_until(&instances, distributed_circuit_breaker::State::Closed).await;
    support::fleet::wait_until(&instances, "resynchronised", |i| !i.breaker.is_degraded()).await;
}
