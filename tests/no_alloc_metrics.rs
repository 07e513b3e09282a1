//! With a metrics recorder installed, the closed path still allocates
//! nothing: counts are taken from the breaker's own counters off the call's
//! path. (Its own test binary: the recorder is global.)

#![cfg(feature = "metrics")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, MemoryStore, Policy};
use tower::{Layer, Service, ServiceExt};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|count| count.set(count.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
        COUNTING.with(|c| c.set(true));
        let before = ALLOCATIONS.with(Cell::get);
        for i in 0..1_000 {
            svc.ready().await.unwrap().call(i).await.unwrap();
        }
        let made = ALLOCATIONS.with(Cell::get) - before;
        COUNTING.with(|c| c.set(false));
        assert_eq!(made, 0, "allocations on the closed path with metrics on");
        // The recorder is really there: the breaker's state gauge reached it.
        assert!(snapshotter
            .snapshot()
            .into_vec()
            .iter()
            .any(|(key, ..)| key.key().name() == "dcb_state"));
    });
}
