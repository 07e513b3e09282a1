//! One breaker per key: per downstream host, per route, per tenant; policy
//! overrides; fallbacks; the bounded registry.
#![cfg(feature = "axum")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::{body::Body, error_handling::HandleErrorLayer, http::StatusCode, routing::get, Router};
use distributed_circuit_breaker::{
    BoxError, BreakerError, ByAuthority, ByHeader, ByMatchedPath, CircuitOpen,
    DistributedCircuitBreakerLayer, HttpClassifier, MemoryStore, OnOpenLayer, Policy, PolicySet,
    State,
};
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::http::{serve, FlakyServer};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

fn policy(threshold: u32) -> Policy {
    Policy::builder()
        .consecutive_failures(threshold)
        .break_duration(Duration::from_secs(30))
        .sync_interval(Duration::from_millis(50))
        .build()
        .unwrap()
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn one_breaker_per_downstream_host() {
    let sick = FlakyServer::default();
    sick.set_down(true);
    let healthy = FlakyServer::default();
    let (sick_addr, healthy_addr) = (sick.start().await, healthy.start().await);

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let layer = DistributedCircuitBreakerLayer::new("client", policy(3), MemoryStore::new())
        .unwrap()
        .classifier(HttpClassifier::default())
        .key_by(ByAuthority);
    let svc = layer.layer(client);
    let get = |addr: std::net::SocketAddr| {
        let svc = svc.clone();
        async move {
            let request = Request::get(format!("http://{addr}/"))
                .body(Empty::new())
                .unwrap();
            svc.oneshot(request).await.map_err(BreakerError::from)
        }
    };
    for _ in 0..3 {
        assert_eq!(get(sick_addr).await.unwrap().status(), 500);
        assert_eq!(get(healthy_addr).await.unwrap().status(), 200);
    }
    settle().await;
    let sick_key = sick_addr.to_string();
    assert_eq!(
        layer.breaker(&sick_key).unwrap().snapshot().state,
        State::Open
    );
    assert_eq!(
        layer.breaker(&sick_key).unwrap().name().as_str(),
        format!("client/{sick_key}")
    );
    assert_eq!(
        layer
            .breaker(&healthy_addr.to_string())
            .unwrap()
            .snapshot()
            .state,
        State::Closed
    );
    for _ in 0..10 {
        assert!(matches!(get(sick_addr).await, Err(BreakerError::Open(_))));
        assert_eq!(get(healthy_addr).await.unwrap().status(), 200);
    }
    assert_eq!(sick.hits(), 3, "the open host is not called");
    assert_eq!(healthy.hits(), 13);
}

#[tokio::test]
async fn one_breaker_per_route_with_overrides_and_retry_after() {
    let pay_hits = Arc::new(AtomicUsize::new(0));
    let hits = pay_hits.clone();
    let strict = Policy::builder()
        .consecutive_failures(2)
        .break_duration(Duration::from_secs(7))
        .sync_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let breakers = DistributedCircuitBreakerLayer::new("gateway", policy(5), MemoryStore::new())
        .unwrap()
        .classifier(HttpClassifier::default())
        .key_by(ByMatchedPath)
        .policies(PolicySet::new(policy(5)).with("/pay/*", strict));
    let app = Router::new()
        .route(
            "/pay/{id}",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::BAD_GATEWAY, "payments down") }
            }),
        )
        .route("/search", get(|| async { "results" }))
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(
                    distributed_circuit_breaker::axum::handle_error,
                ))
                .layer(breakers.clone()),
        );
    let addr = serve(app).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let status = |path: &'static str| {
        let client = client.clone();
        async move {
            let response = client
                .request(
                    Request::get(format!("http://{addr}{path}"))
                        .body(Empty::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            (
                response.status(),
                response.headers().get("retry-after").cloned(),
            )
        }
    };
    assert_eq!(status("/pay/1").await.0, 502);
    assert_eq!(status("/pay/2").await.0, 502);
    settle().await;
    // Two failures opened `/pay/{id}` (its override); the default is five.
    let (code, retry_after) = status("/pay/3").await;
    assert_eq!(code, 503);
    let secs: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!((6..=7).contains(&secs), "Retry-After {secs}");
    assert_eq!(pay_hits.load(Ordering::SeqCst), 2);
    for _ in 0..5 {
        assert_eq!(status("/search").await.0, 200);
    }
    assert_eq!(
        breakers.breaker("/pay/{id}").unwrap().snapshot().state,
        State::Open
    );
    assert_eq!(
        breakers.breaker("/search").unwrap().snapshot().state,
        State::Closed
    );
}

#[tokio::test]
async fn one_breaker_per_tenant_and_a_fallback() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let jobs = service_fn(move |request: Request<Body>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let tenant = request.headers()["x-tenant"].to_str().unwrap().to_owned();
        async move {
            if tenant == "noisy" {
                Err::<Response<Body>, BoxError>("queue full".into())
            } else {
                Ok(Response::new(Body::from("queued")))
            }
        }
    });
    let layer = DistributedCircuitBreakerLayer::new("jobs", policy(2), MemoryStore::new())
        .unwrap()
        .key_by(ByHeader::new(http::HeaderName::from_static("x-tenant")));
    let svc = ServiceBuilder::new()
        .layer(OnOpenLayer::new(|open: &CircuitOpen| {
            Response::new(Body::from(format!("deferred: {}", open.name())))
        }))
        .layer(layer.clone())
        .service(jobs);
    let submit = |tenant: &'static str| {
        let svc = svc.clone();
        async move {
            let request = Request::post("/jobs")
                .header("x-tenant", tenant)
                .body(Body::empty())
                .unwrap();
            let response = svc.oneshot(request).await?;
            let body = axum::body::to_bytes(response.into_body(), 1024).await?;
            Ok::<_, BoxError>(String::from_utf8(body.to_vec())?)
        }
    };
    assert!(submit("noisy").await.is_err());
    assert!(submit("noisy").await.is_err());
    settle().await;
    assert_eq!(submit("noisy").await.unwrap(), "deferred: jobs/noisy");
    assert_eq!(submit("quiet").await.unwrap(), "queued");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "the open tenant's job never reached the queue"
    );
    assert_eq!(layer.breakers(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_breaker_probes_and_closes() {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = down.clone();
    let inner = service_fn(move |_: String| {
        let down = flag.load(Ordering::SeqCst);
        async move {
            if down {
                Err::<(), _>(std::io::Error::other("down"))
            } else {
                Ok(())
            }
        }
    });
    let policy = Policy::builder()
        .consecutive_failures(1)
        .break_duration(Duration::from_secs(5))
        .build()
        .unwrap();
    let layer = DistributedCircuitBreakerLayer::new("tenant", policy, MemoryStore::new())
        .unwrap()
        .key_by(|key: &String| Some(key.clone()));
    let svc = layer.layer(inner);
    let call = |key: &str| svc.clone().oneshot(key.to_owned());
    assert!(call("a").await.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(BreakerError::from(call("a").await.unwrap_err())
        .to_string()
        .contains("open"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    down.store(false, Ordering::SeqCst);
    call("a").await.unwrap(); // the probe, admitted in the response future
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(layer.breaker("a").unwrap().snapshot().state, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_keys_stays_within_the_cap_and_idle_breakers_go() {
    let inner = service_fn(|_: u32| async { Ok::<_, std::io::Error>(()) });
    let layer = DistributedCircuitBreakerLayer::new("flood", Policy::default(), MemoryStore::new())
        .unwrap()
        .key_by(|n: &u32| Some(n.to_string()))
        .limits(100, Duration::from_secs(60))
        .unwrap();
    let mut svc = layer.layer(inner);
    // Fifty breakers in use, then a flood of 10,000 one-off keys (unique
    // `Host` headers, say): the flood never displaces the breakers in use.
    for round in 0..2 {
        for n in 100_000..100_050u32 {
            svc.ready().await.unwrap().call(n).await.unwrap();
        }
        let _ = round;
    }
    for n in 0..10_000u32 {
        svc.ready().await.unwrap().call(n).await.unwrap();
        assert!(layer.breakers() <= 100);
        tokio::time::advance(Duration::from_millis(1)).await; // distinct last-use times
    }
    assert_eq!(layer.breakers(), 100);
    assert!(layer.breaker("9999").is_some(), "the newest stay");
    let kept = (100_000..100_050u32)
        .filter(|n| layer.breaker(&n.to_string()).is_some())
        .count();
    assert_eq!(kept, 50, "breakers in use survive a flood of one-off keys");

    // Unused for the idle timeout (60 s): dropped as new keys arrive (a
    // sweep at most every 30 s; unused through three sweeps).
    for n in 0..3u32 {
        tokio::time::advance(Duration::from_secs(31)).await;
        svc.ready().await.unwrap().call(200_000 + n).await.unwrap();
    }
    assert!(layer.breakers() <= 3, "idle breakers were dropped");
    assert!(layer.breaker("200002").is_some());
    assert!(
        DistributedCircuitBreakerLayer::new("x", Policy::default(), MemoryStore::new())
            .unwrap()
            .key_by(ByAuthority)
            .limits(0, Duration::from_secs(1))
            .is_err_and(|e| e.field() == "max_breakers")
    );
}
