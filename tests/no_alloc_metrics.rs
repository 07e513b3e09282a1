//! With a metrics recorder installed, the closed path still allocates
//! nothing: counts are taken from the breaker's own counters off the call's
//! path. (Its own test binary: the recorder is global.)

#![cfg(feature = "metrics")]

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, MemoryStore, Policy};
use tower::{Layer, Service, ServiceExt};

#[path = "support/alloc.rs"]
mod alloc;

#[derive(Clone, Copy)]
struct Echo;

impl Service<u32> for Echo {
    type Response = u32;
    type Error = Infallible;
    type Future = Ready<Result<u32, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u32) -> Self::Future {
        ready(Ok(request))
    }
}

#[test]
fn a_closed_call_allocates_nothing_with_metrics_on() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let layer = DistributedCircuitBreakerLayer::new(
            "no-alloc-metrics",
            Policy::default(),
            MemoryStore::new(),
        )
        .unwrap();
        let mut svc = layer.layer(Echo);
        for i in 0..100 {
            svc.ready().await.unwrap().call(i).await.unwrap();
        }
        let ((), made) = alloc::counted(async {
            for i in 0..1_000 {
                svc.ready().await.unwrap().call(i).await.unwrap();
            }
        })
        .await;
        assert_eq!(made, 0, "allocations on the closed path with metrics on");
        // The recorder is really there: the breaker's state gauge reached it.
        assert!(snapshotter
            .snapshot()
            .into_vec()
            .iter()
            .any(|(key, ..)| key.key().name() == "dcb_state"));
    });
}
