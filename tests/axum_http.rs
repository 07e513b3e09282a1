//! End to end over loopback: an axum gateway calls a flaky axum downstream
//! through a hyper client wrapped in the breaker; a real hyper client calls the
//! gateway.
#![cfg(feature = "axum")]

mod support;

use std::time::Duration;

use axum::{
    body::Body, error_handling::HandleErrorLayer, extract::State as AxumState, routing::get, Router,
};
use distributed_circuit_breaker::{
    BoxError, BreakerError, DistributedCircuitBreaker, DistributedCircuitBreakerLayer,
    HttpClassifier, MemoryStore, Policy, State,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use support::http::{serve, FlakyServer};
use tower::{Service, ServiceBuilder, ServiceExt};

type HyperClient = Client<HttpConnector, Empty<Bytes>>;
type Guarded = DistributedCircuitBreaker<HyperClient, HttpClassifier>;

fn policy() -> Policy {
    Policy::builder()
        .consecutive_failures(3)
        .break_duration(Duration::from_secs(30))
        .sync_interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

async fn wait_for(breaker: &distributed_circuit_breaker::Breaker, state: State) {
    for _ in 0..200 {
        if breaker.snapshot().state == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("breaker never reached {state}");
}

async fn get_status(client: &HyperClient, url: &str) -> Response<Incoming> {
    let request = Request::get(url).body(Empty::new()).unwrap();
    client.request(request).await.unwrap()
}

#[tokio::test]
async fn gateway_answers_503_with_retry_after_once_the_downstream_breaker_opens() {
    let downstream = FlakyServer::default();
    let downstream_addr = downstream.start().await;

    let client: HyperClient = Client::builder(TokioExecutor::new()).build_http();
    let layer = DistributedCircuitBreakerLayer::new("downstream", policy(), MemoryStore::new())
        .unwrap()
        .classifier(HttpClassifier::default());
    let breaker = layer.breaker();
    let guarded: Guarded = ServiceBuilder::new().layer(layer).service(client.clone());

    async fn proxy(AxumState((svc, url)): AxumState<(Guarded, String)>) -> Response<Body> {
        let request = Request::get(url.as_str()).body(Empty::new()).unwrap();
        match svc.oneshot(request).await.map_err(BreakerError::from) {
            Ok(response) if response.status().is_success() => Response::new(Body::from("ok")),
            Ok(_) => bad_gateway(),
            Err(BreakerError::Open(open)) => axum::response::IntoResponse::into_response(open),
            Err(_) => bad_gateway(),
        }
    }
    fn bad_gateway() -> Response<Body> {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response
    }
    let gateway = Router::new()
        .route("/proxy", get(proxy))
        .with_state((guarded, format!("http://{downstream_addr}/")));
    let gateway_addr = serve(gateway).await;
    let url = format!("http://{gateway_addr}/proxy");

    assert_eq!(get_status(&client, &url).await.status(), 200);
    downstream.set_down(true);
    for _ in 0..3 {
        assert_eq!(get_status(&client, &url).await.status(), 502);
    }
    wait_for(&breaker, State::Open).await;
    let hits = downstream.hits();
    for _ in 0..20 {
        let response = get_status(&client, &url).await;
        assert_eq!(response.status(), 503);
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&retry_after), "retry-after {retry_after}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(std::str::from_utf8(&body)
            .unwrap()
            .contains("\"error\":\"circuit_open\""));
    }
    assert_eq!(
        downstream.hits(),
        hits,
        "an open breaker sends nothing downstream"
    );
}

#[tokio::test]
async fn route_middleware_with_handle_error_layer() {
    let flaky = FlakyServer::default();
    let layer = DistributedCircuitBreakerLayer::new("route", policy(), MemoryStore::new()).unwrap();
    let breaker = layer.breaker();
    let state = flaky.clone();
    // The handler fails with an error while the flag is down; the breaker
    // guards the route itself.
    let handler = tower::service_fn(move |_req: Request<Body>| {
        let state = state.clone();
        async move {
            state.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if state.down.load(std::sync::atomic::Ordering::SeqCst) {
                Err::<Response<Body>, BoxError>("backend failed".into())
            } else {
                Ok(Response::new(Body::from("fresh")))
            }
        }
    });
    let route = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(
            distributed_circuit_breaker::axum::handle_error,
        ))
        .layer(layer)
        .service(handler);
    let app = Router::new().route_service("/report", route);
    let addr = serve(app).await;
    let client: HyperClient = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{addr}/report");

    assert_eq!(get_status(&client, &url).await.status(), 200);
    flaky.set_down(true);
    for _ in 0..3 {
        assert_eq!(get_status(&client, &url).await.status(), 500);
    }
    wait_for(&breaker, State::Open).await;
    let response = get_status(&client, &url).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(flaky.hits(), 4);
}

#[tokio::test]
async fn the_hyper_client_service_is_guarded_directly() {
    let downstream = FlakyServer::default();
    let addr = downstream.start().await;
    let client: HyperClient = Client::builder(TokioExecutor::new()).build_http();
    let layer = DistributedCircuitBreakerLayer::new("client", policy(), MemoryStore::new())
        .unwrap()
        .classifier(HttpClassifier::default());
    let breaker = layer.breaker();
    let mut svc = ServiceBuilder::new().layer(layer).service(client);
    downstream.set_down(true);
    let url = format!("http://{addr}/");
    for _ in 0..3 {
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(Request::get(url.as_str()).body(Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
    }
    wait_for(&breaker, State::Open).await;
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::get(url.as_str()).body(Empty::new()).unwrap())
        .await
        .unwrap_err();
    assert!(err.is::<distributed_circuit_breaker::CircuitOpen>());
    assert_eq!(downstream.hits(), 3);
}
