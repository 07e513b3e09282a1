//! The shared state of one breaker as every process sees it.

use std::fmt;
use std::time::Duration;

/// The state of a breaker.
///
/// `Closed`, `Open` and `HalfOpen` are driven by traffic; the other three are
/// set by an operator through [`Store::force`](crate::Store::force) and stay
/// until they expire or are reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass and their outcomes are counted.
    Closed,
    /// Calls are rejected until the break ends.
    Open,
    /// A limited number of probes pass, fleet-wide; the rest are rejected.
    HalfOpen,
    /// An operator opened the breaker: every call is rejected.
    ForcedOpen,
    /// An operator closed the breaker: every call passes, outcomes are counted
    /// but never trip it.
    ForcedClosed,
    /// The breaker does nothing: every call passes, nothing is counted.
    Disabled,
}

impl State {
    pub(crate) const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::ForcedClosed,
        State::Disabled,
    ];

    /// The small integer the state is stored as (also in Redis).
    pub(crate) fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::ForcedClosed => 4,
            State::Disabled => 5,
        }
    }

    /// The state's place in [`State::ALL`].
    pub(crate) fn index(self) -> usize {
        self.code() as usize
    }

    pub(crate) fn from_code(code: u64) -> Option<State> {
        State::ALL.get(usize::try_from(code).ok()?).copied()
    }

    /// Whether calls pass without asking for a permit.
    pub fn admits_freely(self) -> bool {
        matches!(self, State::Closed | State::ForcedClosed | State::Disabled)
    }

    /// The name used in logs, events and the Redis schema.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::ForcedClosed => "forced_closed",
            State::Disabled => "disabled",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a store answers about a breaker: its state, the generation of that state,
/// and how long until a call may ask for a probe permit.
///
/// The generation grows with every transition, so a process can tell a newer
/// snapshot from an older one and drop outcomes counted under an old state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The breaker's state.
    pub state: State,
    /// Bumped on every transition; never goes back, even after the store loses its data.
    pub generation: u64,
    /// Open: until the break ends. Half-open with every permit taken: until one may
    /// free up. Forced with an expiry: until it expires. Forced open without
    /// an expiry: a minute, or the policy's longest break
    /// ([`max_break_duration`](crate::Policy::max_break_duration)) if
    /// longer, since nobody knows when an operator will act (rejected
    /// callers get it as their `Retry-After`). Otherwise zero.
    pub remaining: Duration,
}

impl Snapshot {
    /// A closed breaker at generation 0: what a process assumes before it has
    /// heard from the store.
    pub const INITIAL: Snapshot = Snapshot {
        state: State::Closed,
        generation: 0,
        remaining: Duration::ZERO,
    };
}

/// A transition announced by a store to every process that subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The breaker's name.
    pub name: String,
    /// Its state after the transition; `remaining` counts from `received`.
    pub snapshot: Snapshot,
    /// When this process received the announcement: a breaker that applies it
    /// later still ends its break when the store said, not later.
    pub received: tokio::time::Instant,
    /// Who made the transition: the id of the instance whose outcomes
    /// tripped it, or the lease of the probe that moved it (0: nobody in
    /// particular, as for an operator's command or an expiry). The one
    /// process whose breaker this names reports the transition as the
    /// fleet's ([`Event::FleetTransition`](crate::events::Event::FleetTransition)).
    pub origin: u64,
    /// The state before the transition, where the store said.
    pub from: Option<State>,
}

/// What a store announces to the processes that subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A breaker changed state.
    Transition(Transition),
    /// Announcements may have been missed (the store's subscription was
    /// re-established): every process should re-read its breakers.
    Resync,
}
