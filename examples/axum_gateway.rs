//! An axum gateway with per-route breaker policies, calling two flaky
//! downstreams that it starts itself.
//!
//! `/checkout` calls `payments` and gets a strict policy (2 failures trip it);
//! `/catalog` calls `catalog` with the default policy. Payments fails for a
//! while and recovers; the gateway answers 503 with `Retry-After` meanwhile
//! and never calls it. `REDIS_URL` shares the breakers through Redis.
//!
//! ```text
//! cargo run --example axum_gateway
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::{
    error_handling::HandleErrorLayer, extract::State, http::StatusCode, routing::get, Router,
};
use distributed_circuit_breaker::{
    BoxError, BreakerName, ByMatchedPath, DistributedCircuitBreakerLayer, HttpClassifier,
    MemoryStore, Policy, PolicySet, RedisStore, Store,
};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower::ServiceBuilder;

#[derive(Clone)]
struct Downstream {
    down: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Gateway {
    client: Client<HttpConnector, Empty<Bytes>>,
    payments: SocketAddr,
    catalog: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let payments = Downstream {
        down: Arc::new(AtomicBool::new(true)),
        hits: Arc::default(),
    };
    let catalog = Downstream {
        down: Arc::new(AtomicBool::new(false)),
        hits: Arc::default(),
    };
    let gateway = Gateway {
        client: Client::builder(TokioExecutor::new()).build_http(),
        payments: start_downstream(payments.clone()).await?,
        catalog: start_downstream(catalog.clone()).await?,
    };

    let default = Policy::builder()
        .consecutive_failures(5)
        .break_duration(Duration::from_secs(1))
        .build()?;
    let strict = Policy::builder()
        .consecutive_failures(2)
        .break_duration(Duration::from_secs(1))
        .build()?;
    let breakers = DistributedCircuitBreakerLayer::with_store(
        BreakerName::new("gateway")?,
        default.clone(),
        store().await?,
    )
    .classifier(HttpClassifier::default())
    .key_by(ByMatchedPath)
    .policies(PolicySet::new(default).with("/checkout", strict));

    let app = Router::new()
        .route(
            "/checkout",
            get(|State(g): State<Gateway>| async move { forward(&g, g.payments).await }),
        )
        .route(
            "/catalog",
            get(|State(g): State<Gateway>| async move { forward(&g, g.catalog).await }),
        )
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(
                    distributed_circuit_breaker::axum::handle_error,
                ))
                .layer(breakers),
        )
        .with_state(gateway.clone());
    let addr = serve(app).await?;

    println!("time   /checkout                 /catalog   payments hits");
    for tick in 0..16 {
        if tick == 8 {
            payments.down.store(false, Ordering::SeqCst);
            println!("------ payments recovers ------");
        }
        let checkout = get_status(&gateway.client, addr, "/checkout").await?;
        let catalog_status = get_status(&gateway.client, addr, "/catalog").await?;
        println!(
            "{:>4}ms {:<25} {:<10} {}",
            tick * 200,
            checkout,
            catalog_status,
            payments.hits.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Calls a downstream; its failure is the gateway's 502.
async fn forward(gateway: &Gateway, to: SocketAddr) -> (StatusCode, String) {
    let request = http::Request::get(format!("http://{to}/")).body(Empty::new());
    let Ok(request) = request else {
        return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
    };
    match gateway.client.request(request).await {
        Ok(response) if response.status().is_success() => (StatusCode::OK, "ok".into()),
        Ok(response) => (
            StatusCode::BAD_GATEWAY,
            format!("downstream said {}", response.status()),
        ),
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()),
    }
}

async fn get_status(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> Result<String, BoxError> {
    let response = client
        .request(http::Request::get(format!("http://{addr}{path}")).body(Empty::new())?)
        .await?;
    Ok(match response.headers().get("retry-after") {
        Some(retry) => format!(
            "{} retry-after={}",
            response.status().as_u16(),
            retry.to_str()?
        ),
        None => response.status().as_u16().to_string(),
    })
}

async fn start_downstream(state: Downstream) -> Result<SocketAddr, BoxError> {
    async fn handler(State(s): State<Downstream>) -> StatusCode {
        s.hits.fetch_add(1, Ordering::SeqCst);
        if s.down.load(Ordering::SeqCst) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }
    serve(Router::new().route("/", get(handler)).with_state(state)).await
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
