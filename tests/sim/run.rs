//! Runs one seed: builds the world on a current-thread runtime with a paused
//! clock, plays the timeline, checks the invariants on every event and every
//! tick, and tears the fleet down.

use std::cell::RefCell;
use std::sync::{Arc, Once};
use std::time::Duration;

use distributed_circuit_breaker::sim::seed_thread_rng;

use crate::fleet;
use crate::net;
use crate::scenario::{Action, Lost, Scenario, Step};
use crate::trace::Event;
use crate::world::{Sim, Stats};

/// How often the time-based invariants are checked.
const TICK: Duration = Duration::from_millis(5);
/// Trace lines printed with a violation.
pub const TAIL: usize = 80;

/// What one run of a seed left.
pub struct Outcome {
    pub violation: Option<String>,
    pub fingerprint: u64,
    pub events: usize,
    pub tail: String,
    pub stats: Stats,
}

thread_local! {
    /// A panic on the simulation's thread (in any task): tokio catches
    /// panics of spawned tasks, so the hook reports them here.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `seed`; the outcome keeps the last `tail` events of the trace.
pub fn run(seed: u64, tail: usize) -> Outcome {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            default(info);
        }));
    });
    PANIC.with(|p| p.borrow_mut().take());
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    // `select!` picks among ready branches at random: only a seeded runtime
    // (an unstable tokio API) makes those picks replay too.
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let runtime = builder.build().expect("a runtime");
    seed_thread_rng(seed);
    runtime.block_on(world(seed, tail))
}

async fn world(seed: u64, tail: usize) -> Outcome {
    let scenario = Scenario::new(seed);
    let sim = Arc::new(Sim::new(seed, scenario));
    let s = &sim.scenario;
    let announcer = tokio::spawn(net::announce(sim.clone(), sim.store.clone()));
    for _ in 0..s.instances {
        fleet::join(&sim, false);
    }
    let mut steps = s.steps.iter().peekable();
    loop {
        let now = sim.now();
        while let Some(step) = steps.next_if(|step| step.at <= now) {
            play(&sim, step);
        }
        chaos_resync(&sim);
        let store = sim.store_view();
        let violated = {
            let mut w = sim.world();
            w.tick(s, now, store);
            if let Some(panic) = PANIC.with(|p| p.borrow_mut().take()) {
                w.violate(now, format!("panic: {panic}"));
            }
            w.violation.is_some()
        };
        if violated || now >= s.end {
            break;
        }
        let next = steps
            .peek()
            .map_or(s.end, |step| step.at)
            .min(now + TICK.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(next.max(now + 1) - now)).await;
    }
    announcer.abort();
    teardown(&sim).await;
    let w = sim.world();
    Outcome {
        violation: w.violation.clone(),
        fingerprint: w.trace.fingerprint(),
        events: w.trace.len(),
        tail: w.trace.tail(tail),
        stats: w.stats.clone(),
    }
}

/// Plays one step of the timeline.
fn play(sim: &Arc<Sim>, step: &Step) {
    let now = sim.now();
    sim.log(Event::Step(step.action));
    match step.action {
        Action::Dependency(healthy) => {
            let store = sim.store_view();
            let mut w = sim.world();
            w.healthy = healthy;
            if healthy {
                w.healthy_since = now;
                w.episode = None;
            } else {
                w.outage(&sim.scenario, now, store);
            }
        }
        Action::Chaos(faults) => {
            let mut w = sim.world();
            if faults.is_some() || w.faults.is_some() {
                w.disturb(now);
            }
            w.faults = faults;
        }
        Action::Pause(len) => {
            let mut w = sim.world();
            w.paused_until = w.paused_until.max(now + len);
            w.disturb(now + len);
        }
        Action::Failover(lost) => failover(sim, lost),
        Action::Partition(n, len) => {
            if let Some(instance) = fleet::nth(sim, n) {
                let mut w = sim.world();
                w.partitioned.insert(instance, now + len);
                w.disturb(now + len);
            }
        }
        Action::Crash(n) => fleet::crash(sim, n, false),
        Action::Join { eager } => fleet::join(sim, eager),
    }
}

/// The store goes back to a copy that lost its last writes; half the time
/// its clients notice (a reconnected subscription says resync), half the
/// time they do not.
fn failover(sim: &Sim, lost: Lost) {
    let now = sim.now();
    let from = sim.store_view();
    let notify = {
        let mut w = sim.world();
        let back = match lost {
            Lost::Writes(k) => {
                let keep = w.checkpoints.len().saturating_sub(k).max(1);
                w.checkpoints.truncate(keep);
                w.checkpoints.back().cloned()
            }
            Lost::Transitions(k) => {
                let keep = w.transitions.len().saturating_sub(k - 1);
                w.transitions.truncate(keep);
                let back = w.transitions.pop_back();
                w.checkpoints.clear();
                w.checkpoints.extend(back.clone());
                back
            }
        };
        let Some(back) = back else {
            return;
        };
        sim.store.restore(back);
        w.epoch += 1;
        w.store_changed = now;
        w.stats.failovers += 1;
        w.disturb(now);
        w.rng.chance(50)
    };
    let to = sim.store_view();
    sim.log(Event::Failover { from, to });
    if notify {
        let members: Vec<_> = {
            let w = sim.world();
            w.members
                .iter()
                .map(|(i, m)| (*i, m.events.clone()))
                .collect()
        };
        for (instance, tx) in members {
            net::resync(sim, instance, &tx);
        }
    }
}

/// During chaos, an instance now and then hears that it missed announcements.
fn chaos_resync(sim: &Sim) {
    let target = {
        let mut w = sim.world();
        let Some(f) = w.faults else {
            return;
        };
        if !w.rng.chance(f.resync) || w.members.is_empty() {
            return;
        }
        let last = w.members.len() as u64 - 1;
        let n = w.rng.range(0, last) as usize;
        w.members.iter().nth(n).map(|(i, m)| (*i, m.events.clone()))
    };
    if let Some((instance, tx)) = target {
        net::resync(sim, instance, &tx);
    }
}

/// Every instance crashes; once their last calls and permits are done, no
/// task of theirs may be left (invariant 6).
async fn teardown(sim: &Arc<Sim>) {
    loop {
        let any = !sim.world().members.is_empty();
        if !any {
            break;
        }
        fleet::crash(sim, 0, true);
    }
    let s = &sim.scenario;
    let p = &s.policy;
    let settle = p.sync_interval() * 2 + p.store_timeout() * 2 + Duration::from_millis(400);
    tokio::time::sleep(settle).await;
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    if alive > 0 {
        let now = sim.now();
        sim.world().violate(
            now,
            format!("{alive} tasks still alive after the whole fleet crashed"),
        );
    }
}
