//! A multi-tenant job queue with one breaker per tenant: a noisy tenant whose
//! jobs keep failing is cut off (its jobs are deferred by a fallback) while
//! the other tenants keep submitting. `REDIS_URL` shares the breakers through
//! Redis.
//!
//! ```text
//! cargo run --example tenants
//! ```

use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::{
    BoxError, BreakerName, CircuitOpen, DistributedCircuitBreakerLayer, MemoryStore, OnOpenLayer,
    Policy, RedisStore, Store,
};
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[derive(Debug, Clone)]
struct Job {
    tenant: &'static str,
    id: u32,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The queue rejects the noisy tenant's jobs (say, a poison payload).
    let queue = service_fn(|job: Job| async move {
        if job.tenant == "noisy" {
            Err::<String, BoxError>(format!("job {} rejected by the queue", job.id).into())
        } else {
            Ok(format!("job {} queued", job.id))
        }
    });
    let policy = Policy::builder()
        .consecutive_failures(3)
        .break_duration(Duration::from_secs(30))
        .build()?;
    let breakers = DistributedCircuitBreakerLayer::with_store(
        BreakerName::new("jobs")?,
        policy,
        store().await?,
    )
    .key_by(|job: &Job| Some(job.tenant.to_owned()));
    let submit = ServiceBuilder::new()
        .layer(OnOpenLayer::new(|open: &CircuitOpen| {
            format!(
                "deferred ({} is open for {}s)",
                open.name(),
                open.retry_after_secs()
            )
        }))
        .layer(breakers.clone())
        .service(queue);

    for id in 1..=6 {
        for tenant in ["acme", "noisy", "globex"] {
            let outcome = match submit.clone().oneshot(Job { tenant, id }).await {
                Ok(message) => message,
                Err(error) => format!("failed: {error}"),
            };
            println!("{tenant:<7} {outcome}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for tenant in ["acme", "noisy", "globex"] {
        if let Some(breaker) = breakers.breaker(tenant) {
            println!(
                "breaker {:<12} {}",
                breaker.name(),
                breaker.snapshot().state
            );
        }
    }
    Ok(())
}

/// MemoryStore, or Redis when `REDIS_URL` is set.
async fn store() -> Result<Arc<dyn Store>, BoxError> {
    Ok(match std::env::var("REDIS_URL") {
        Ok(url) => Arc::new(RedisStore::connect(&url).await?),
        Err(_) => Arc::new(MemoryStore::new()),
    })
}
