//! What happened, in order: every step of the timeline, call, store request
//! and announcement, with its time. Hashed to check that a seed replays, and
//! its tail printed when an invariant fails.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};

use distributed_circuit_breaker::State;

use crate::scenario::Action;

/// A state and generation, as a replica or the store holds it.
pub type View = (State, u64);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    Step(Action),
    Join(usize),
    Crash(usize),
    /// A call reached the dependency; the instance's view at that moment.
    Called {
        instance: usize,
        call: u64,
        view: View,
        degraded: bool,
        probe: bool,
    },
    Finished {
        instance: usize,
        call: u64,
        result: CallResult,
    },
    /// A store request was sent, and what the network will do with it.
    Sent {
        instance: usize,
        op: Op,
        fate: &'static str,
    },
    /// The store applied a request.
    Applied {
        instance: usize,
        op: Op,
        before: Option<View>,
        after: View,
        granted: bool,
    },
    /// An announcement (or resync) reached an instance.
    Announced {
        instance: usize,
        view: Option<View>,
    },
    Failover {
        from: Option<View>,
        to: Option<View>,
    },
    Violation(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Record {
        generation: u64,
        successes: u32,
        failures: u32,
        trailing: u32,
        tripped: bool,
    },
    Acquire(u64),
    Release {
        generation: u64,
        lease: u64,
    },
    Read,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallResult {
    Passed,
    Failed,
    Rejected,
    Cancelled,
}

#[derive(Debug, Default)]
pub struct Trace {
    events: Vec<(u64, Event)>,
}

impl Trace {
    pub fn push(&mut self, at: u64, event: Event) {
        self.events.push((at, event));
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// A fingerprint of the whole run: equal for two runs of one seed.
    pub fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.events.hash(&mut hasher);
        hasher.finish()
    }

    /// The last `n` events, one a line.
    pub fn tail(&self, n: usize) -> String {
        let from = self.events.len().saturating_sub(n);
        let mut out = String::new();
        for (at, event) in &self.events[from..] {
            out.push_str(&format!("{at:>6}ms  {event}\n"));
        }
        out
    }
}

fn view(v: &Option<View>) -> String {
    match v {
        Some((state, generation)) => format!("{state}@{}", short(*generation)),
        None => "-".to_owned(),
    }
}

/// Generations start at the store's clock; their last digits tell them apart.
fn short(generation: u64) -> u64 {
    generation % 100_000
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Step(action) => write!(f, "== {action:?}"),
            Event::Join(i) => write!(f, "i{i} joins"),
            Event::Crash(i) => write!(f, "i{i} crashes"),
            Event::Called {
                instance,
                call,
                view: v,
                degraded,
                probe,
            } => write!(
                f,
                "i{instance} call #{call} reaches the dependency (view {}{}{})",
                view(&Some(*v)),
                if *degraded { ", degraded" } else { "" },
                if *probe { ", fleet probe" } else { "" },
            ),
            Event::Finished {
                instance,
                call,
                result,
            } => write!(f, "i{instance} call #{call} {result:?}"),
            Event::Sent { instance, op, fate } => {
                write!(f, "i{instance} -> {} [{fate}]", op_str(op))
            }
            Event::Applied {
                instance,
                op,
                before,
                after,
                granted,
            } => write!(
                f,
                "store <- i{instance} {}: {} -> {}{}",
                op_str(op),
                view(before),
                view(&Some(*after)),
                if *granted { " (granted)" } else { "" },
            ),
            Event::Announced { instance, view: v } => match v {
                Some(_) => write!(f, "i{instance} hears {}", view(v)),
                None => write!(f, "i{instance} hears resync"),
            },
            Event::Failover { from, to } => {
                write!(f, "store fails over: {} -> {}", view(from), view(to))
            }
            Event::Violation(what) => write!(f, "VIOLATION: {what}"),
        }
    }
}

fn op_str(op: &Op) -> String {
    match op {
        Op::Record {
            generation,
            successes,
            failures,
            trailing,
            tripped,
        } => format!(
            "record(g{} +{successes} -{failures} run {trailing}{})",
            short(*generation),
            if *tripped { " tripped" } else { "" }
        ),
        Op::Acquire(lease) => format!("acquire(lease {})", lease % 10_000),
        Op::Release { generation, lease } => {
            format!("release(g{} lease {})", short(*generation), lease % 10_000)
        }
        Op::Read => "read".to_owned(),
    }
}
