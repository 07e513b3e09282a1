//! Per-thread lanes: what every call writes is spread over a few cache lines,
//! one per thread (round robin), so threads calling one breaker do not take
//! turns owning the same line.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A value alone on its cache line (128 bytes: the line and the one the
/// hardware prefetches with it).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// How many lanes a hot breaker gets: the cores, as a power of two, at most 16.
pub(crate) fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.min(16).next_power_of_two()
    })
}

/// This thread's lane number (any size: callers mask it with their lane count
/// minus one).
#[inline(always)]
pub(crate) fn current() -> usize {
    thread_local! {
        static LANE: Cell<u32> = const { Cell::new(u32::MAX) };
    }
    LANE.with(|lane| {
        let value = lane.get();
        if value != u32::MAX {
            return value as usize;
        }
        assign(lane)
    })
}

#[cold]
fn assign(lane: &Cell<u32>) -> usize {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let value = NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff;
    lane.set(value);
    value as usize
}

/// A counter striped over lanes: `add` touches this thread's line only; reads
/// sum the lanes.
#[derive(Debug)]
pub(crate) struct StripedCounter {
    cells: Box<[Padded<AtomicU32>]>,
}

impl StripedCounter {
    /// A counter over `lanes` lanes (a power of two).
    pub(crate) fn new(lanes: usize) -> Self {
        Self {
            cells: (0..lanes.max(1))
                .map(|_| Padded(AtomicU32::new(0)))
                .collect(),
        }
    }

    #[inline(always)]
    pub(crate) fn add(&self, order: Ordering) {
        let mask = self.cells.len() - 1;
        // In bounds: masked by the length minus one, a power of two.
        self.cells[current() & mask].0.fetch_add(1, order);
    }

    /// The sum of every lane (wrapping, as one `AtomicU32` would).
    pub(crate) fn load(&self, order: Ordering) -> u32 {
        self.cells
            .iter()
            .fold(0u32, |sum, cell| sum.wrapping_add(cell.0.load(order)))
    }

    /// Takes the sum, leaving every lane at zero.
    pub(crate) fn take(&self) -> u32 {
        self.cells.iter().fold(0u32, |sum, cell| {
            sum.wrapping_add(cell.0.swap(0, Ordering::Relaxed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_thread() {
        let counter = std::sync::Arc::new(StripedCounter::new(4));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.add(Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 6000);
        assert_eq!(counter.take(), 6000);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }
}
