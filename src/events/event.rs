//! The events a breaker reports.

use std::time::Duration;

use crate::store::{Force, ForceNote, ProbeResult};
use crate::State;

/// Something that happened to a breaker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// This process's view of the breaker changed state: on its own
    /// judgement ([`Scope::Local`]) or because it learned the fleet's state
    /// ([`Scope::Fleet`]). Every process of the fleet reports its own.
    Transition(TransitionEvent),
    /// The shared breaker changed state because of a report of this
    /// process (its outcomes tripped it, its probe closed or re-opened it,
    /// its request ended the break, its health check passed). Exactly one
    /// process of the fleet reports each fleet-wide transition (while its
    /// subscription to the store's announcements is up): page on this one.
    FleetTransition(TransitionEvent),
    /// Calls rejected since the last report (reported at most once per
    /// sync interval, never one event per call).
    Rejected {
        /// How many.
        count: u64,
        /// The state they were rejected in (one event per state met).
        state: State,
    },
    /// This process was granted a half-open probe permit.
    ProbeStarted {
        /// The generation of the half-open state.
        generation: u64,
    },
    /// A probe of this process ended.
    ProbeFinished {
        /// The generation it was granted under.
        generation: u64,
        /// How it ended.
        result: ProbeResult,
    },
    /// The store stopped answering: this process decides alone (see
    /// [`StoreFailure`](crate::StoreFailure)).
    DegradedEntered {
        /// Why, as the store said it.
        error: String,
    },
    /// The store answers again: this process follows the shared state.
    DegradedLeft {
        /// How long it decided alone.
        after: Duration,
    },
    /// An operator's command was applied through this process.
    Forced {
        /// The command.
        force: Force,
        /// Who and why, as given (empty when not).
        note: ForceNote,
    },
    /// This process holds the fleet's health-check turn and ran the check.
    HealthChecked {
        /// Whether the dependency answered well.
        healthy: bool,
        /// The generation of the open state it checked.
        generation: u64,
    },
}

/// A change of state.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionEvent {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// The generation of the new state (see [`Snapshot`](crate::Snapshot)).
    pub generation: u64,
    /// Whose judgement.
    pub scope: Scope,
    /// Why.
    pub cause: Cause,
}

/// Whose judgement a [`TransitionEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// This process judged its own outcomes (it trips at its threshold
    /// without waiting for the store) or its own probe.
    Local,
    /// The shared state, as the store holds it.
    Fleet,
}

/// Why a breaker changed state, with the numbers this process saw.
///
/// The numbers are this process's own: its run of consecutive failures and
/// its window (failures, slow calls, calls) when the rule fired. A fleet
/// trip on merged counts (several instances' failures added up in the
/// store) reports [`Rule::FleetCounts`] with the reporting instance's share.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cause {
    /// The rule that fired.
    pub rule: Rule,
    /// Failures in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow: u64,
    /// Calls in the window.
    pub calls: u64,
    /// Consecutive failures.
    pub run: u32,
}

impl Cause {
    /// Failures per call in the window (0 without calls).
    pub fn failure_rate(&self) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        self.failures as f64 / self.calls as f64
    }

    pub(crate) fn rule(rule: Rule) -> Self {
        Cause {
            rule,
            ..Cause::default()
        }
    }
}

/// The rule behind a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Rule {
    /// `consecutive_failures` in a row.
    ConsecutiveFailures,
    /// The failure rate over the window.
    FailureRate,
    /// The slow-call rate over the window.
    SlowCallRate,
    /// The store's merged counts of several instances (or the quorum of
    /// instances that tripped).
    FleetCounts,
    /// The break ended: probes may pass.
    BreakEnded,
    /// Enough probes succeeded: closed again.
    ProbesSucceeded,
    /// A probe failed: open again (with backoff).
    ProbeFailed,
    /// A probe was cancelled or its outcome ignored.
    ProbeCancelled,
    /// The fleet's health check passed: probes may pass at once.
    HealthCheckPassed,
    /// An operator's command (or its expiry).
    Operator,
    /// This process learned the state from the store and cannot tell why
    /// it changed (another instance's report, a missed announcement).
    #[default]
    Learned,
}

impl Rule {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ConsecutiveFailures => "consecutive_failures",
            Rule::FailureRate => "failure_rate",
            Rule::SlowCallRate => "slow_call_rate",
            Rule::FleetCounts => "fleet_counts",
            Rule::BreakEnded => "break_ended",
            Rule::ProbesSucceeded => "probes_succeeded",
            Rule::ProbeFailed => "probe_failed",
            Rule::ProbeCancelled => "probe_cancelled",
            Rule::HealthCheckPassed => "health_check_passed",
            Rule::Operator => "operator",
            Rule::Learned => "learned",
        }
    }
}

impl Scope {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Fleet => "fleet",
        }
    }
}
