//! A reqwest client with the breaker middleware, against real local servers.
#![cfg(all(feature = "reqwest", feature = "axum"))]

mod support;

use std::time::Duration;

use distributed_circuit_breaker::reqwest::ReqwestCircuitBreaker;
use distributed_circuit_breaker::{
    CircuitOpen, DistributedCircuitBreakerLayer, MemoryStore, Policy,
};
use support::http::FlakyServer;

#[tokio::test]
async fn one_breaker_per_host_through_reqwest_middleware() {
    let sick = FlakyServer::default();
    sick.set_down(true);
    let healthy = FlakyServer::default();
    let (sick_addr, healthy_addr) = (sick.start().await, healthy.start().await);
    let policy = Policy::builder()
        .consecutive_failures(3)
        .break_duration(Duration::from_secs(30))
        .sync_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let layer = DistributedCircuitBreakerLayer::new("reqwest", policy, MemoryStore::new()).unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(ReqwestCircuitBreaker::per_host(layer))
        .build();

    for _ in 0..3 {
        let response = client
            .get(format!("http://{sick_addr}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let error = client
            .get(format!("http://{sick_addr}/"))
            .send()
            .await
            .unwrap_err();
        let reqwest_middleware::Error::Middleware(error) = error else {
            panic!("expected the breaker's error, got {error}");
        };
        let open = error.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
        assert_eq!(open.name().as_str(), format!("reqwest/{sick_addr}"));
        let response = client
            .get(format!("http://{healthy_addr}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(sick.hits(), 3);
    assert_eq!(healthy.hits(), 5);
}
