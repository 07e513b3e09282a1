//! A tiny per-thread random source for jitter; not for anything secret.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// Seeds from std's per-process random hasher keys, so no extra dependency.
fn seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x9E37_79B9_7F4A_7C15);
    hasher.finish() | 1
}

/// Starts this thread's sequence over from `seed` (simulations replay a seed).
#[cfg(feature = "sim")]
pub(crate) fn seed_with(seed: u64) {
    STATE.with(|state| state.set(seed | 1));
}

/// A random number in `0..65536` (splitmix64).
pub(crate) fn rand16() -> u32 {
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 48) as u32
    })
}

/// A random id below 2^52 (exact in the Redis scripts' doubles), never 0.
pub(crate) fn instance_id() -> u64 {
    let high = u64::from(rand16());
    let mid = u64::from(rand16());
    let low = u64::from(rand16());
    let top = u64::from(rand16() & 0xF);
    ((top << 48) | (high << 32) | (mid << 16) | low).max(1)
}
