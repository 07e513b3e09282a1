//! One seed's world: the policy, the fleet, the traffic, and a timeline of
//! dependency outages and store faults, all drawn from the seed up front.

use std::time::Duration;

use distributed_circuit_breaker::{Policy, StoreFailure};

use crate::rng::Rng;

/// Faults end here; then the store and the dependency stay healthy.
const CHAOS_END: u64 = 10_000;
/// The driver's longest backoff from an unreachable store, in sync intervals
/// (`MAX_RETRY_TICKS` in `src/driver.rs`).
const MAX_RETRY_TICKS: u64 = 8;
/// An idle closed breaker re-reads every this many ticks (`src/driver.rs`).
const IDLE_REFRESH_TICKS: u64 = 10;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub policy: Policy,
    pub mode: StoreFailure,
    pub threshold: u32,
    pub instances: usize,
    pub clients: usize,
    /// Pause between two calls of one client, milliseconds.
    pub call_gap: (u64, u64),
    /// The dependency's latency, milliseconds.
    pub latency: (u64, u64),
    pub cancel_percent: u64,
    pub steps: Vec<Step>,
    pub end: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub at: u64,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The dependency becomes healthy (`true`) or fails every call.
    Dependency(bool),
    /// Store requests, replies and announcements misbehave (or stop doing so).
    Chaos(Option<Faults>),
    /// The store answers nothing for this many milliseconds, then everything
    /// queued at once.
    Pause(u64),
    /// The store fails over to a copy that lost its last writes.
    Failover(Lost),
    /// The `n`-th live instance cannot reach the store for this long.
    Partition(usize, u64),
    /// The `n`-th live instance crashes.
    Crash(usize),
    /// A new instance joins; an eager one calls at once.
    Join { eager: bool },
}

/// What a failover loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lost {
    /// The last `k` writes (often none that changed the generation).
    Writes(usize),
    /// Everything since just before the `k`-th last change of generation:
    /// generations go back.
    Transitions(usize),
}

/// Chances (percent) of each fault, per request, reply or announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Faults {
    pub request_delay: u64,
    pub request_lost: u64,
    pub duplicate: u64,
    pub error_before: u64,
    pub error_after: u64,
    pub reply_delay: u64,
    pub reply_lost: u64,
    /// Longest delay of a request or reply, milliseconds.
    pub max_delay: u64,
    pub event_lost: u64,
    pub event_delay: u64,
    pub event_duplicate: u64,
    pub resync: u64,
}

impl Scenario {
    pub fn new(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed);
        let threshold = rng.range(2, 5) as u32;
        let break_ms = rng.range(100, 600);
        let sync = rng.range(50, 200);
        let store_timeout = rng.range(10, 50);
        let latency = (1, rng.range(5, 80));
        // A probe always ends within its lease, so a lease never runs out
        // under a live probe (that would let a second one in, by design).
        let lease = rng.range(store_timeout + latency.1 + 50, 1_500);
        let mut builder = Policy::builder()
            .consecutive_failures(threshold)
            .break_duration(Duration::from_millis(break_ms))
            .half_open_permits(rng.pick(&[1, 1, 2, 3]))
            .successes_to_close(rng.pick(&[1, 1, 2]))
            .probe_lease(Duration::from_millis(lease))
            .sync_interval(Duration::from_millis(sync))
            .store_timeout(Duration::from_millis(store_timeout));
        if rng.chance(50) {
            builder = builder.backoff(2.0, Duration::from_millis(break_ms * 4));
        }
        if rng.chance(50) {
            builder = builder.jitter(0.2);
        }
        if rng.chance(30) {
            builder = builder
                .failure_rate(0.5)
                .minimum_calls(rng.range(5, 20) as u32)
                .window(rng.ms(1_000, 3_000));
        }
        if rng.chance(15) {
            builder = builder.fleet_quorum(2);
        }
        let policy = builder.build().expect("a valid policy");
        let mode = rng.pick(&[
            StoreFailure::Local,
            StoreFailure::Local,
            StoreFailure::Local,
            StoreFailure::Local,
            StoreFailure::FailOpen,
            StoreFailure::FailClosed,
        ]);
        let mut scenario = Scenario {
            policy,
            mode,
            threshold,
            instances: rng.range(2, 8) as usize,
            clients: if rng.chance(60) { 1 } else { 2 },
            call_gap: (rng.range(2, 10), rng.range(20, 100)),
            latency,
            cancel_percent: rng.range(0, 10),
            steps: Vec::new(),
            end: 0,
        };
        scenario.steps = timeline(&mut rng, &scenario);
        scenario.end = CHAOS_END + scenario.wedge_bound() + 500;
        scenario
    }

    /// How long after the store and the dependency are both healthy again
    /// every live instance must be closed (milliseconds): the retry backoff
    /// of a degraded instance and a flush, one re-trip on failures still on
    /// their way, the longest break, a lease left by a probe that went
    /// silent, then `successes_to_close` probes in a row, each waiting for
    /// a call, plus a few sync intervals for the news to spread.
    pub fn wedge_bound(&self) -> u64 {
        let p = &self.policy;
        let sync = ms(p.sync_interval());
        let timeout = ms(p.store_timeout());
        let reconnect = (MAX_RETRY_TICKS + 2) * sync + timeout + self.latency.1;
        let probe = self.call_gap.1 + self.latency.1 + 2 * timeout + 10;
        let probes = u64::from(p.successes_to_close()) * probe;
        reconnect + ms(p.max_break_duration()) + ms(p.probe_lease()) + probes + 3 * sync
    }

    /// How long a calm store's generation may go unnoticed by an instance
    /// (milliseconds): an idle closed instance re-reads every tenth sync
    /// interval (`IDLE_REFRESH_TICKS` in `src/driver.rs`), plus one interval
    /// and one store timeout for the read itself.
    pub fn agreement_bound(&self) -> u64 {
        let p = &self.policy;
        (IDLE_REFRESH_TICKS + 2) * ms(p.sync_interval()) + ms(p.store_timeout()) + 10
    }

    /// The policy and the fleet in one line (the timeline is in the trace).
    pub fn summary(&self) -> String {
        let p = &self.policy;
        format!(
            "threshold {}, rate {:?} over {:?} (min {}), break {:?} up to {:?}, jitter {}, \
             permits {}, successes {}, lease {:?}, sync {:?}, store timeout {:?}, quorum {}, \
             {:?}; {} instances x {} clients, calls every {}..{}ms, latency {}..{}ms, \
             {}% cancelled; ends at {}ms",
            self.threshold,
            p.failure_rate(),
            p.window(),
            p.minimum_calls(),
            p.break_duration(),
            p.max_break_duration(),
            p.jitter(),
            p.half_open_permits(),
            p.successes_to_close(),
            p.probe_lease(),
            p.sync_interval(),
            p.store_timeout(),
            p.fleet_quorum(),
            self.mode,
            self.instances,
            self.clients,
            self.call_gap.0,
            self.call_gap.1,
            self.latency.0,
            self.latency.1,
            self.cancel_percent,
            self.end,
        )
    }

    pub fn permits(&self) -> usize {
        self.policy.half_open_permits() as usize
    }
}

/// Outages, fault windows, pauses, failovers, partitions, crashes and joins
/// between a calm warm-up and `CHAOS_END`; calm and healthy after it.
fn timeline(rng: &mut Rng, s: &Scenario) -> Vec<Step> {
    let mut steps = Vec::new();
    let start = rng.range(300, 1_500);
    let mut push = |at: u64, action| steps.push(Step { at, action });
    let mut t = start;
    let mut healthy = true;
    let mut outages = Vec::new();
    while t < CHAOS_END {
        healthy = !healthy;
        if !healthy {
            outages.push(t);
        }
        push(t, Action::Dependency(healthy));
        t += rng.range(300, 3_000);
    }
    let mut t = start + rng.range(0, 2_000);
    while t < CHAOS_END {
        let len = rng.range(100, 2_500);
        push(t, Action::Chaos(Some(faults(rng))));
        push((t + len).min(CHAOS_END), Action::Chaos(None));
        t += len + rng.range(300, 3_000);
    }
    let at = |rng: &mut Rng| rng.range(start, CHAOS_END - 100);
    for _ in 0..rng.range(0, 3) {
        let len = rng.range(10, 2 * ms(s.policy.store_timeout()) + 300);
        push(at(rng), Action::Pause(len));
    }
    if rng.chance(60) {
        for _ in 0..rng.range(1, 3) {
            let lost = if rng.chance(30) {
                Lost::Writes(rng.range(1, 8) as usize)
            } else {
                Lost::Transitions(rng.range(1, 3) as usize)
            };
            push(at(rng), Action::Failover(lost));
        }
    }
    for _ in 0..rng.range(0, 2) {
        let n = rng.range(0, 5) as usize;
        push(at(rng), Action::Partition(n, rng.range(100, 2_000)));
    }
    for _ in 0..rng.range(0, 2) {
        let n = rng.range(0, 5) as usize;
        push(at(rng), Action::Crash(n));
    }
    for _ in 0..rng.range(0, 2) {
        let eager = rng.chance(50);
        push(at(rng), Action::Join { eager });
    }
    // Newcomers join mid-outage too.
    for &outage in &outages {
        if rng.chance(40) {
            let eager = rng.chance(50);
            push(outage + rng.range(0, 300), Action::Join { eager });
        }
    }
    if !healthy {
        push(CHAOS_END, Action::Dependency(true));
    }
    push(CHAOS_END, Action::Chaos(None));
    steps.sort_by_key(|s| s.at);
    steps
}

fn faults(rng: &mut Rng) -> Faults {
    let mut p = |max: u64| rng.range(0, max);
    Faults {
        request_delay: p(40),
        request_lost: p(10),
        duplicate: p(10),
        error_before: p(10),
        error_after: p(10),
        reply_delay: p(40),
        reply_lost: p(15),
        max_delay: p(150) + 1,
        event_lost: p(40),
        event_delay: p(40),
        event_duplicate: p(15),
        resync: p(5),
    }
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
