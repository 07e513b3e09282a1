//! A hyper client with one breaker per downstream host.
//!
//! Starts two local servers, `inventory` (healthy) and `payments` (failing),
//! and calls both through one client: the payments breaker opens, inventory
//! keeps working. `REDIS_URL=redis://127.0.0.1:6379` shares the breakers
//! through Redis instead of memory.
//!
//! ```text
//! cargo run --example hyper_client
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{http::StatusCode, routing::get, Router};
use distributed_circuit_breaker::{
    BoxError, BreakerError, BreakerName, ByAuthority, DistributedCircuitBreakerLayer,
    HttpClassifier, MemoryStore, Policy, RedisStore, Store,
};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let inventory = serve(Router::new().route("/", get(|| async { "42 in stock" }))).await?;
    let payments = serve(Router::new().route(
        "/",
        get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "payments down") }),
    ))
    .await?;

    let policy = Policy::builder()
        .consecutive_failures(3)
        .break_duration(Duration::from_secs(10))
        .build()?;
    let layer = DistributedCircuitBreakerLayer::with_store(
        BreakerName::new("client")?,
        policy,
        store().await?,
    )
    .classifier(HttpClassifier::default())
    .key_by(ByAuthority);
    let client = layer.layer(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());

    for round in 1..=5 {
        for (name, addr) in [("inventory", inventory), ("payments", payments)] {
            let request = http::Request::get(format!("http://{addr}/")).body(Empty::new())?;
            let outcome = match client
                .clone()
                .oneshot(request)
                .await
                .map_err(BreakerError::from)
            {
                Ok(response) => format!("{}", response.status()),
                Err(BreakerError::Open(open)) => {
                    format!("rejected fast, retry in {}s", open.retry_after_secs())
                }
                Err(error) => format!("error: {error}"),
            };
            println!("round {round}: {name:<9} -> {outcome}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, addr) in [("inventory", inventory), ("payments", payments)] {
        if let Some(breaker) = layer.breaker(&addr.to_string()) {
            println!(
                "breaker {:<25} ({name}): {}",
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

async fn serve(app: Router) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
