//! The closed path allocates nothing: a counting global allocator watches a
//! thousand calls through a closed breaker.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use distributed_circuit_breaker::{
    DistributedCircuitBreakerLayer, HttpClassifier, MemoryStore, Policy,
};
use tower::{Layer, Service, ServiceExt};

#[path = "support/alloc.rs"]
mod alloc;

#[derive(Clone, Copy)]
struct Ok200;

impl Service<u32> for Ok200 {
    type Response = http::Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        ready(Ok(http::Response::new(())))
    }
}

/// Answers on the second poll, like a call that waits on a socket once.
#[derive(Clone, Copy)]
struct Later;

impl Service<u32> for Later {
    type Response = http::Response<()>;
    type Error = Infallible;
    type Future = YieldOnce;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        YieldOnce(false)
    }
}

struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = Result<http::Response<()>, Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.0 {
            return Poll::Ready(Ok(http::Response::new(())));
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Allocations made by a thousand calls through `svc`, after ten to warm up
/// (the first call may start the background task).
async fn allocations_per_thousand<S>(mut svc: S) -> usize
where
    S: Service<u32>,
    S::Error: std::fmt::Debug,
{
    for i in 0..10 {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }
    let ((), made) = alloc::counted(async {
        for i in 0..1_000 {
            svc.ready().await.unwrap().call(i).await.unwrap();
        }
    })
    .await;
    made
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn layer(name: &str) -> DistributedCircuitBreakerLayer<HttpClassifier> {
    DistributedCircuitBreakerLayer::new(name, Policy::default(), MemoryStore::new())
        .unwrap()
        .classifier(HttpClassifier::default())
}

#[test]
fn a_closed_call_allocates_nothing() {
    runtime().block_on(async {
        let svc = layer("no-alloc").layer(Ok200);
        assert_eq!(allocations_per_thousand(svc).await, 0);
        let svc = layer("no-alloc-pending").layer(Later);
        assert_eq!(allocations_per_thousand(svc).await, 0);
    });
}

#[test]
fn a_call_timeout_allocates_nothing() {
    runtime().block_on(async {
        // Answered at once: the timer is never armed.
        let timed = layer("timed").call_timeout(std::time::Duration::from_secs(5));
        assert_eq!(allocations_per_thousand(timed.layer(Ok200)).await, 0);
        // Pending once: the timer is armed, inline in the response future.
        let timed = layer("timed-pending").call_timeout(std::time::Duration::from_secs(5));
        assert_eq!(allocations_per_thousand(timed.layer(Later)).await, 0);
    });
}

#[test]
fn a_known_borrowed_key_allocates_nothing() {
    #[derive(Clone)]
    struct Tenant;
    impl distributed_circuit_breaker::KeyExtractor<u32> for Tenant {
        fn extract<'r>(&self, request: &'r u32) -> Option<std::borrow::Cow<'r, str>> {
            const KEYS: [&str; 4] = ["a", "b", "c", "d"];
            Some(std::borrow::Cow::Borrowed(KEYS[*request as usize % 4]))
        }
    }
    runtime().block_on(async {
        let keyed = layer("keyed").key_by(Tenant);
        assert_eq!(allocations_per_thousand(keyed.layer(Ok200)).await, 0);
    });
}
