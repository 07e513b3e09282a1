//! The closed path allocates nothing: a counting global allocator watches a
//! thousand calls through a closed breaker.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use distributed_circuit_breaker::{
    DistributedCircuitBreakerLayer, HttpClassifier, MemoryStore, Policy,
};
use tower::{Layer, Service, ServiceExt};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

#[test]
fn a_closed_call_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let layer =
            DistributedCircuitBreakerLayer::new("no-alloc", Policy::default(), MemoryStore::new())
                .unwrap()
                .classifier(HttpClassifier::default());
        let mut svc = layer.layer(Ok200);
        // Warm up: the first call starts the background task.
        for i in 0..10 {
            svc.ready().await.unwrap().call(i).await.unwrap();
        }
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for i in 0..1_000 {
            svc.ready().await.unwrap().call(i).await.unwrap();
        }
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        assert_eq!(after - before, 0, "allocations on the closed path");
    });
}
