//! The admin API and dashboard over a small fleet with real traffic: three
//! instances each of `payments` (its dependency fails every third minute of
//! the demo), `inventory` and `search`, all sharing their breakers in Redis,
//! and the admin router mounted at `/admin` of an axum app.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 DCB_ADMIN_TOKEN=s3cret cargo run --example admin --features admin
//! # then open http://127.0.0.1:3000/admin, or: dcb list, dcb watch
//! ```
//!
//! `--seconds N` stops it after N seconds (default: runs until stopped),
//! `--port P` serves elsewhere (default 3000).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::admin::{self, AdminConfig};
use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, Policy, RedisStore};
use tower::{service_fn, Layer, ServiceExt};

#[path = "support/args.rs"]
mod args;
use args::arg_value;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port: u16 = arg_value("--port").map_or(Ok(3000), |p| p.parse())?;
    let seconds: Option<u64> = arg_value("--seconds").map(|s| s.parse()).transpose()?;
    let token = std::env::var("DCB_ADMIN_TOKEN").unwrap_or_default();

    // A policy that counts calls, so healthy breakers show their traffic.
    let policy = Policy::builder()
        .failure_rate(0.5)
        .minimum_calls(20)
        .consecutive_failures(5)
        .window(Duration::from_secs(30))
        .break_duration(Duration::from_secs(10))
        .build()?;
    let payments_down = Arc::new(AtomicBool::new(false));
    for name in ["payments", "inventory", "search"] {
        for _ in 0..3 {
            let store = RedisStore::connect(&url).await?;
            let layer = DistributedCircuitBreakerLayer::new(name, policy.clone(), store)?;
            let down = payments_down.clone();
            let failing = name == "payments";
            let service = layer.layer(service_fn(move |_: ()| {
                let fail = failing && down.load(Ordering::Relaxed);
                async move {
                    if fail {
                        Err("dependency down")
                    } else {
                        Ok(())
                    }
                }
            }));
            tokio::spawn(async move {
                loop {
                    let _ = service.clone().oneshot(()).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    }
    // payments' dependency: down for a minute out of three, from the 20th second.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(20)).await;
        loop {
            payments_down.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(60)).await;
            payments_down.store(false, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
    });

    // The admin router, mounted like any other.
    let store = RedisStore::connect(&url).await?;
    let app = axum::Router::new().nest(
        "/admin",
        admin::router(store, AdminConfig::new().token(token)),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("dashboard: http://127.0.0.1:{port}/admin");
    let serve = axum::serve(listener, app);
    match seconds {
        Some(s) => {
            let _ = tokio::time::timeout(Duration::from_secs(s), serve).await;
        }
        None => serve.await?,
    }
    Ok(())
}
