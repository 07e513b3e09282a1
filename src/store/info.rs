//! What an operator sees of one breaker: [`BreakerInfo`].

use std::time::{Duration, SystemTime};

use crate::{Snapshot, State};

/// One breaker as the store holds it, for operators: state, the counts of
/// its current window, and who forced it and why.
///
/// Read with [`Store::info`](crate::Store::info) and
/// [`Store::list_info`](crate::Store::list_info). Unlike [`Snapshot`] it
/// needs no policy, so a tool that knows only the store (`dcb`, the admin
/// API) can read it.
///
/// ```
/// use distributed_circuit_breaker::{store::BreakerInfo, Snapshot};
///
/// let info = BreakerInfo::new("payments", Snapshot::INITIAL);
/// assert_eq!(info.failure_rate(), None); // no calls in the window
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerInfo {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// The generation of that state.
    pub generation: u64,
    /// Open: until the break ends. Forced with an expiry: until it expires.
    /// Otherwise zero (and a forced state without an expiry says so in
    /// [`forced_until_reset`](Self::forced_until_reset)).
    pub remaining: Duration,
    /// Calls counted in the current window (closed or forced closed).
    pub calls: u64,
    /// Failures among them.
    pub failures: u64,
    /// Slow calls among them.
    pub slow: u64,
    /// The fleet's current run of consecutive failures.
    pub consecutive_failures: u64,
    /// The operator's note on the current state, if it was forced with one.
    pub note: Option<OperatorNote>,
    /// A forced state (open, closed or disabled) without an expiry: it stays
    /// until an operator resets it.
    pub forced_until_reset: bool,
}

/// Who forced a breaker, why, and when (see
/// [`ForceNote`](crate::store::ForceNote)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperatorNote {
    /// Why, if said.
    pub reason: Option<String>,
    /// Who, if said.
    pub actor: Option<String>,
    /// When the command was given (the store's clock).
    pub at: SystemTime,
}

impl OperatorNote {
    /// A note given at `at`.
    pub fn new(reason: Option<String>, actor: Option<String>, at: SystemTime) -> Self {
        Self { reason, actor, at }
    }
}

impl BreakerInfo {
    /// What a snapshot alone says: no counts, no note. Stores that keep more
    /// fill in the rest.
    pub fn new(name: impl Into<String>, snapshot: Snapshot) -> Self {
        let forced = matches!(
            snapshot.state,
            State::ForcedOpen | State::ForcedClosed | State::Disabled
        );
        Self {
            name: name.into(),
            state: snapshot.state,
            generation: snapshot.generation,
            remaining: snapshot.remaining,
            calls: 0,
            failures: 0,
            slow: 0,
            consecutive_failures: 0,
            note: None,
            forced_until_reset: forced && snapshot.remaining.is_zero(),
        }
    }

    /// Failures per call in the window, from 0 to 1; `None` without calls.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.failures as f64 / self.calls as f64)
    }

    /// Whether an operator forced the current state (open, closed or
    /// disabled).
    pub fn is_forced(&self) -> bool {
        matches!(
            self.state,
            State::ForcedOpen | State::ForcedClosed | State::Disabled
        )
    }
}
