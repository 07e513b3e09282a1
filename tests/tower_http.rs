//! tower-http classifiers through the breaker, including a gRPC-style
//! failure that only shows in the trailers.
#![cfg(feature = "tower-http")]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::{
    BreakerError, DistributedCircuitBreakerLayer, MemoryStore, Policy, State,
};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use tower::{service_fn, Layer, ServiceExt};
use tower_http::classify::{GrpcErrorsAsFailures, ServerErrorsAsFailures};

type GrpcBody =
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn policy() -> Policy {
    Policy::builder()
        .consecutive_failures(2)
        .break_duration(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A unary gRPC answer: HTTP 200, a message, then `grpc-status` in the trailers.
fn grpc_response(status: u32) -> Response<GrpcBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut response = Response::new(StreamBody::new(futures::stream::iter(frames)));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

#[tokio::test(start_paused = true)]
async fn grpc_failures_in_trailers_count_when_the_stream_ends() {
    let status = Arc::new(AtomicU32::new(14)); // UNAVAILABLE
    let current = status.clone();
    let backend = service_fn(move |_: Request<()>| {
        let code = current.load(Ordering::SeqCst);
        async move { Ok::<_, Infallible>(grpc_response(code)) }
    });
    let layer = DistributedCircuitBreakerLayer::new("grpc", policy(), MemoryStore::new())
        .unwrap()
        .classify_with(GrpcErrorsAsFailures::make_classifier());
    let breaker = layer.breaker();
    let svc = layer.layer(backend);

    // Responses arrive as HTTP 200: nothing is counted until their streams end.
    let mut unread = Vec::new();
    for _ in 0..3 {
        unread.push(svc.clone().oneshot(Request::new(())).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        breaker.snapshot().state,
        State::Closed,
        "the heads said nothing"
    );

    // Reading the bodies reveals the status in the trailers.
    for response in unread.drain(..2) {
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        breaker.snapshot().state,
        State::Open,
        "two failures in trailers"
    );
    drop(unread);
    let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
    assert!(matches!(BreakerError::from(err), BreakerError::Open(_)));

    // After the break, a probe whose trailers say OK closes the breaker.
    tokio::time::sleep(Duration::from_secs(30)).await;
    status.store(0, Ordering::SeqCst);
    let probe = svc.clone().oneshot(Request::new(())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        breaker.snapshot().state,
        State::HalfOpen,
        "the probe's outcome is not known yet"
    );
    probe.into_body().collect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(breaker.snapshot().state, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_body_is_dropped_returns_its_permit() {
    let backend = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(grpc_response(14)) });
    let layer = DistributedCircuitBreakerLayer::new("dropped", policy(), MemoryStore::new())
        .unwrap()
        .classify_with(GrpcErrorsAsFailures::make_classifier());
    let breaker = layer.breaker();
    let svc = layer.layer(backend);
    for _ in 0..2 {
        let response = svc.clone().oneshot(Request::new(())).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(31)).await;
    let probe = svc.clone().oneshot(Request::new(())).await.unwrap();
    drop(probe); // never read: the outcome is unknown, the permit goes back
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(breaker.snapshot().state, State::HalfOpen);
    let next = svc.clone().oneshot(Request::new(())).await;
    assert!(next.is_ok(), "another probe may go at once");
}

#[tokio::test(start_paused = true)]
async fn server_errors_as_failures_count_from_the_head() {
    let backend = service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::builder().status(503).body(String::new()).unwrap())
    });
    let layer = DistributedCircuitBreakerLayer::new("http", policy(), MemoryStore::new())
        .unwrap()
        .classify_with(ServerErrorsAsFailures::make_classifier());
    let breaker = layer.breaker();
    let svc = layer.layer(backend);
    for _ in 0..2 {
        let response = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.status(), 503);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(breaker.snapshot().state, State::Open);
}
