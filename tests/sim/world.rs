//! Everything the simulation knows, behind one lock: the fleet, the calls in
//! flight, the store's faults and history, and the bookkeeping the
//! invariants are checked against. The lock is never held across an await.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use distributed_circuit_breaker::sim::{Checkpoint, SimStore};
use distributed_circuit_breaker::{Breaker, BreakerName, State, StoreEvent};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::rng::Rng;
use crate::scenario::{Faults, Scenario};
use crate::trace::{Event, Trace, View};

/// Store states kept for a failover to go back to.
const CHECKPOINTS: usize = 16;

/// The simulation: fixed parts, and the world behind its lock.
pub struct Sim {
    pub scenario: Scenario,
    pub name: BreakerName,
    pub store: SimStore,
    start: Instant,
    world: Mutex<World>,
}

pub struct World {
    pub rng: Rng,
    pub trace: Trace,
    pub violation: Option<String>,
    pub members: BTreeMap<usize, Member>,
    pub next_instance: usize,
    // The dependency.
    pub healthy: bool,
    pub healthy_since: u64,
    pub next_call: u64,
    pub calls: BTreeMap<u64, Book>,
    /// Fleet-wide probes in flight, by (store epoch, generation) of their permit.
    pub probes: BTreeMap<(u64, u64), usize>,
    /// Failed dependency calls: when, and the caller's generation at the call.
    pub failures: VecDeque<(u64, u64)>,
    // The store and the network.
    pub faults: Option<Faults>,
    pub paused_until: u64,
    pub partitioned: BTreeMap<usize, u64>,
    /// When the last store fault ended (or the last failover happened).
    pub calm_since: u64,
    /// Bumped by every failover: a generation means something only within one.
    pub epoch: u64,
    /// When the store's generation last changed (or went back).
    pub store_changed: u64,
    pub checkpoints: VecDeque<Checkpoint>,
    /// The store just before each of its last changes of generation.
    pub transitions: VecDeque<Checkpoint>,
    /// Probe-permit requests, by lease id.
    pub asks: BTreeMap<u64, Ask>,
    /// The dependency's current outage, while the fleet is expected to trip
    /// within the bound.
    pub episode: Option<Episode>,
    pub stats: Stats,
}

/// A live instance.
pub struct Member {
    pub breaker: Breaker,
    pub tasks: Vec<AbortHandle>,
    pub born: u64,
    pub events: broadcast::Sender<StoreEvent>,
    /// A permit the store's reply just handed over: the next call is its probe.
    pub pending_probe: Option<u64>,
}

/// One call, from the client's side and the dependency's.
pub struct Book {
    pub instance: usize,
    pub started: u64,
    pub reached: Option<Reached>,
}

pub struct Reached {
    pub generation: u64,
    pub closed: bool,
    pub probe: Option<(u64, u64)>,
    pub lease: Option<u64>,
    /// `Some(ok)` once the dependency answered.
    pub answer: Option<bool>,
}

/// A probe-permit request, from ask to release.
#[derive(Debug, Default)]
pub struct Ask {
    pub instance: usize,
    pub asked: u64,
    /// (epoch, generation) of the grant, when the store granted it.
    pub granted: Option<(u64, u64)>,
    pub granted_at: u64,
    /// The client is done with it (no answer, no permit, or its probe ended).
    pub done_at: Option<u64>,
    pub released: bool,
}

pub struct Episode {
    pub start: u64,
    pub members: BTreeSet<usize>,
    /// Failed calls admitted by a closed view since the outage began.
    pub failures: usize,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub calls: u64,
    pub probes: u64,
    pub episodes: Vec<usize>,
    pub wedge_checks: u64,
    pub agreement_checks: u64,
    pub max_probes: usize,
    pub trips: u64,
    pub permits_returned: u64,
    pub failovers: u64,
}

impl Sim {
    pub fn new(seed: u64, scenario: Scenario) -> Sim {
        let name = BreakerName::new("dependency").expect("a valid name");
        Sim {
            scenario,
            name,
            store: SimStore::new(),
            start: Instant::now(),
            world: Mutex::new(World {
                rng: Rng::new(seed.rotate_left(17)),
                trace: Trace::default(),
                violation: None,
                members: BTreeMap::new(),
                next_instance: 0,
                healthy: true,
                healthy_since: 0,
                next_call: 0,
                calls: BTreeMap::new(),
                probes: BTreeMap::new(),
                failures: VecDeque::new(),
                faults: None,
                paused_until: 0,
                partitioned: BTreeMap::new(),
                calm_since: 0,
                epoch: 0,
                store_changed: 0,
                checkpoints: VecDeque::new(),
                transitions: VecDeque::new(),
                asks: BTreeMap::new(),
                episode: None,
                stats: Stats::default(),
            }),
        }
    }

    /// Milliseconds since the simulation started (tokio's paused clock).
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn log(&self, event: Event) {
        let now = self.now();
        self.world().trace.push(now, event);
    }

    /// The store's view of the breaker (`None` before anyone asked).
    pub fn store_view(&self) -> Option<View> {
        let b = self.store.inspect(&self.name, &self.scenario.policy)?;
        Some((b.snapshot.state, b.snapshot.generation))
    }

    /// Keeps the store as it is after a write, for a failover to go back
    /// to; `transition` if the write changed the generation.
    pub fn checkpoint(&self, world: &mut World, transition: bool) {
        if transition {
            if let Some(before) = world.checkpoints.back().cloned() {
                if world.transitions.len() == CHECKPOINTS {
                    world.transitions.pop_front();
                }
                world.transitions.push_back(before);
            }
        }
        if world.checkpoints.len() == CHECKPOINTS {
            world.checkpoints.pop_front();
        }
        world.checkpoints.push_back(self.store.checkpoint());
    }
}

impl World {
    /// Records the first violation (later ones are consequences).
    pub fn violate(&mut self, at: u64, what: String) {
        if self.violation.is_none() {
            self.trace.push(at, Event::Violation(what.clone()));
            self.violation = Some(format!("at {at}ms: {what}"));
        }
    }

    /// Whether the store and the network are behaving right now.
    pub fn store_calm(&self, now: u64) -> bool {
        self.faults.is_none()
            && self.paused_until <= now
            && self.partitioned.values().all(|&until| until <= now)
    }

    pub fn view(member: &Member) -> (View, bool) {
        let s = member.breaker.snapshot();
        ((s.state, s.generation), member.breaker.is_degraded())
    }

    /// Every live instance's view is closed (and it is not deciding alone).
    pub fn closed(member: &Member) -> bool {
        let ((state, _), degraded) = Self::view(member);
        state == State::Closed && !degraded
    }

    /// The store or the network misbehaves until `until`: the outage and
    /// recovery bounds count from then.
    pub fn disturb(&mut self, until: u64) {
        self.calm_since = self.calm_since.max(until);
        self.episode = None;
    }
}

impl Stats {
    /// Adds another run's counts (the episodes' worst case is kept).
    pub fn add(&mut self, other: &Stats) {
        self.calls += other.calls;
        self.probes += other.probes;
        let worst = other.episodes.iter().chain(&self.episodes).max().copied();
        self.episodes = worst.into_iter().collect();
        self.wedge_checks += other.wedge_checks;
        self.agreement_checks += other.agreement_checks;
        self.max_probes = self.max_probes.max(other.max_probes);
        self.trips += other.trips;
        self.permits_returned += other.permits_returned;
        self.failovers += other.failovers;
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} calls, {} fleet probes (at most {} at once), {} trips, {} permits returned, {} failovers, {} wedge and {} agreement checks, worst outage {:?} failed calls before all open",
            self.calls,
            self.probes,
            self.max_probes,
            self.trips,
            self.permits_returned,
            self.failovers,
            self.wedge_checks,
            self.agreement_checks,
            self.episodes.first(),
        )
    }
}
