//! A global allocator that counts, per thread, the allocations made while
//! counting is on: test binaries that assert "no allocation" install it
//! (`#[path = "support/alloc.rs"] mod alloc;`), one per binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    // Tests run on several threads at once: count this thread's allocations
    // only (each test runs its calls on a current-thread runtime), while
    // `COUNTING` is set.
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

/// Allocations this thread makes while `run` runs.
pub async fn counted<T>(run: impl std::future::Future<Output = T>) -> (T, usize) {
    COUNTING.with(|c| c.set(true));
    let before = ALLOCATIONS.with(Cell::get);
    let out = run.await;
    let made = ALLOCATIONS.with(Cell::get) - before;
    COUNTING.with(|c| c.set(false));
    (out, made)
}
