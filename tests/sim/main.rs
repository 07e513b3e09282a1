//! A deterministic simulation of a fleet sharing one breaker (issue 15).
//!
//! **The world.** A few instances, each a real
//! [`DistributedCircuitBreakerLayer`](distributed_circuit_breaker::DistributedCircuitBreakerLayer)
//! with its real background task, call one dependency through the real
//! tower service (`ready` then `call`) at random times; the dependency fails
//! on a schedule. They share one [`SimStore`](distributed_circuit_breaker::sim::SimStore)
//! (feature `sim`): the crate's own state machine, which can be rolled back
//! like a failover that lost its last writes. Between each instance and the
//! store sits a fault-injecting `Store` (`net.rs`); a wrapper was simpler
//! than a simulated network like turmoil, because the `Store` trait is the
//! only way a replica talks to the outside, and it keeps the production code
//! unchanged. Everything runs on one current-thread tokio runtime with a
//! paused clock, and every random choice (the world's and the crate's:
//! jitter, instance and lease ids) comes from the seed.
//!
//! **Faults** (`scenario.rs`, `net.rs`): requests delayed, lost, duplicated or
//! refused; replies delayed past the caller's timeout, lost with the request
//! applied, or replaced by an error after it was applied; store pauses (all
//! requests wait, then apply at once); failovers that lose the last 1 to 8
//! writes, or everything since one of the last 3 changes of generation
//! (generations go back; half the time the instances hear a resync);
//! an instance partitioned from the store; announcements lost, delayed
//! (so reordered), duplicated, or replaced by a resync; instances that
//! crash; newcomers joining, also mid-outage and calling at once; calls
//! cancelled at a random point; random policies (threshold, break, backoff,
//! jitter, permits, successes, lease, sync interval, store timeout, rate
//! rule, quorum, store-failure mode). A connection's requests stay in order
//! (a Redis connection is ordered); everything else may interleave.
//!
//! **Invariants**: see `invariants.rs`.
//!
//! **Running it**: `cargo test --all-features --test sim` runs the default
//! seeds and the regression list; `SIM_SEEDS=100000` (or the ignored
//! `many_seeds`) runs more, `SIM_FIRST` moves the range; a failing seed
//! prints `SIM_SEED=<seed> cargo test --all-features --test sim -- --nocapture replay`
//! and the last events before the violation (`SIM_TRACE=<lines>` for more).
//!
//! **Replay**: a seed replays exactly: the crate's random source is seeded,
//! and the background task's `select!`s are `biased` (tokio's own random
//! pick among ready branches would otherwise differ between runs where two
//! wake-ups tie on the same millisecond). With `RUSTFLAGS="--cfg
//! tokio_unstable"` tokio's scheduler is seeded as well.
#![cfg(feature = "sim")]

mod dependency;
mod fleet;
mod invariants;
mod net;
mod rng;
mod run;
mod scenario;
mod trace;
mod world;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use run::{run, Outcome};
use world::Stats;

/// Seeds the default run tries.
const DEFAULT_SEEDS: u64 = 300;

/// Seeds that once failed, kept as regression cases. A seed names a world
/// only for this version of the scenario generator: when it changes, find
/// them again (put each defect back, as below, and note its first seed).
/// The first seeds that found each 0.1 defect put back (issue 15):
/// 0: the blind release of an unanswered acquire removed (invariant 3), and
/// newcomers admitting freely at generation 0 (invariant 8); 20: answers of
/// an older generation never followed (9); 14: backlogs replayed as
/// generation 0 with their run counted (7); 21: a batch with a success
/// setting the run to its trailing failures (5).
const REGRESSIONS: &[u64] = &[0, 14, 20, 21];

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn report(seed: u64, outcome: &Outcome) -> String {
    format!(
        "seed {seed}: {}\n{}\nreproduce: SIM_SEED={seed} cargo test --all-features --test sim -- --nocapture replay\n\
         (SIM_TRACE=<lines> for more)\nlast events:\n{}",
        outcome.violation.as_deref().unwrap_or("no violation"),
        scenario::Scenario::new(seed).summary(),
        outcome.tail,
    )
}

/// Runs `seeds` on every core; the failing ones, smallest first.
fn search(seeds: Vec<u64>) -> Vec<(u64, Outcome)> {
    let next = AtomicU64::new(0);
    let failed = Mutex::new(Vec::new());
    let stats = Mutex::new(Stats::default());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&seed) = seeds.get(i) else {
                    return;
                };
                let outcome = run(seed, run::TAIL);
                stats.lock().unwrap().add(&outcome.stats);
                if outcome.violation.is_some() {
                    failed.lock().unwrap().push((seed, outcome));
                }
            });
        }
    });
    println!("{} seeds: {}", seeds.len(), stats.lock().unwrap());
    let mut failed = failed.into_inner().unwrap();
    failed.sort_by_key(|(seed, _)| *seed);
    failed
}

fn assert_none_failed(failed: &[(u64, Outcome)]) {
    if let Some((seed, outcome)) = failed.first() {
        let seeds: Vec<_> = failed.iter().map(|(s, _)| *s).collect();
        panic!(
            "{} seeds failed: {seeds:?}\n{}",
            seeds.len(),
            report(*seed, outcome)
        );
    }
}

/// The default run: a few hundred seeds and every regression seed.
#[test]
fn seeds() {
    let first = env("SIM_FIRST").unwrap_or(0);
    let count = env("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let range = first..first + count;
    let mut seeds: Vec<u64> = range.clone().collect();
    seeds.extend(REGRESSIONS.iter().filter(|seed| !range.contains(seed)));
    assert_none_failed(&search(seeds));
}

/// Many more seeds: `cargo test --all-features --test sim -- --ignored`.
#[test]
#[ignore]
fn many_seeds() {
    let first = env("SIM_FIRST").unwrap_or(1_000_000);
    let count = env("SIM_SEEDS").unwrap_or(20_000);
    assert_none_failed(&search((first..first + count).collect()));
}

/// Replays one seed (`SIM_SEED`, default 1) with its trace.
#[test]
fn replay() {
    let seed = env("SIM_SEED").unwrap_or(1);
    let lines = env("SIM_TRACE").unwrap_or(run::TAIL as u64) as usize;
    let outcome = run(seed, lines);
    println!("{}", scenario::Scenario::new(seed).summary());
    println!(
        "{} events, fingerprint {:x}: {}",
        outcome.events, outcome.fingerprint, outcome.stats
    );
    assert!(outcome.violation.is_none(), "{}", report(seed, &outcome));
}

/// One seed, run twice, leaves the same trace.
#[test]
fn a_seed_replays_exactly() {
    for seed in [7, 8, 9] {
        let (a, b) = (run(seed, 0), run(seed, 0));
        assert_eq!(
            (a.events, a.fingerprint),
            (b.events, b.fingerprint),
            "seed {seed}"
        );
    }
}
