//! Metrics through the `metrics` facade (feature `metrics`): whatever
//! exporter the application installed (Prometheus, StatsD, OpenTelemetry)
//! receives them. Every name, type and label is listed in the README's
//! Observability section.
//!
//! Nothing here runs on a call's path: outcome counts are taken from the
//! counters each replica keeps anyway when its background task hands them to
//! the store; events are counted when delivered; store round trips are timed
//! by a wrapper around the store.

use std::sync::Arc;

use metrics::{counter, gauge, histogram, Counter, SharedString};
use tokio::time::Instant;

use crate::events::Event;
use crate::store::{
    Acquired, BreakerInfo, BreakerName, Force, ForceNote, HealthCheck, HealthTurn, OutcomeBatch,
    ProbeResult, Store, StoreError, StoreFuture,
};
use crate::{Policy, Snapshot, State, StoreEvent};

fn label(name: &BreakerName) -> SharedString {
    SharedString::from(name.shared())
}

/// The counters a replica adds its outcomes to at every batch: registered
/// once, when the breaker is built (so install the recorder before building
/// layers), and then counted without building a key or allocating.
pub(crate) struct OutcomeCounters {
    success: Counter,
    failure: Counter,
    slow: Counter,
}

impl OutcomeCounters {
    pub(crate) fn new(name: &BreakerName) -> Self {
        OutcomeCounters {
            success: counter!("dcb_calls_total", "breaker" => label(name), "outcome" => "success"),
            failure: counter!("dcb_calls_total", "breaker" => label(name), "outcome" => "failure"),
            slow: counter!("dcb_slow_calls_total", "breaker" => label(name)),
        }
    }

    /// Outcomes a replica counted (handed to the store, or dropped with a
    /// generation that was gone).
    pub(crate) fn add(&self, successes: u64, failures: u64, slow: u64) {
        if successes > 0 {
            self.success.increment(successes);
        }
        if failures > 0 {
            self.failure.increment(failures);
        }
        if slow > 0 {
            self.slow.increment(slow);
        }
    }
}

impl std::fmt::Debug for OutcomeCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutcomeCounters")
    }
}

/// A breaker came to be (its state gauge starts at closed).
pub(crate) fn created(name: &BreakerName) {
    gauge!("dcb_state", "breaker" => label(name), "state" => State::Closed.as_str()).increment(1.0);
}

/// A breaker is gone (keyed breakers come and go), perhaps while deciding
/// alone.
pub(crate) fn dropped(name: &BreakerName, state: State, degraded: bool) {
    gauge!("dcb_state", "breaker" => label(name), "state" => state.as_str()).decrement(1.0);
    if degraded {
        gauge!("dcb_degraded", "breaker" => label(name)).decrement(1.0);
    }
}

pub(crate) fn event(name: &BreakerName, event: &Event) {
    match event {
        Event::Transition(t) => {
            counter!(
                "dcb_transitions_total",
                "breaker" => label(name),
                "from" => t.from.as_str(),
                "to" => t.to.as_str(),
                "scope" => t.scope.as_str(),
            )
            .increment(1);
            gauge!("dcb_state", "breaker" => label(name), "state" => t.from.as_str())
                .decrement(1.0);
            gauge!("dcb_state", "breaker" => label(name), "state" => t.to.as_str()).increment(1.0);
        }
        Event::FleetTransition(t) => counter!(
            "dcb_fleet_transitions_total",
            "breaker" => label(name),
            "from" => t.from.as_str(),
            "to" => t.to.as_str(),
            "rule" => t.cause.rule.as_str(),
        )
        .increment(1),
        Event::Rejected { count, state } => counter!(
            "dcb_rejections_total",
            "breaker" => label(name),
            "state" => state.as_str(),
        )
        .increment(*count),
        Event::ProbeStarted { .. } => {}
        Event::ProbeFinished { result, .. } => {
            let result = match result {
                ProbeResult::Success => "success",
                ProbeResult::Failure => "failure",
                ProbeResult::Cancelled => "cancelled",
            };
            counter!("dcb_probes_total", "breaker" => label(name), "result" => result).increment(1);
        }
        Event::DegradedEntered { .. } => {
            counter!("dcb_degraded_episodes_total", "breaker" => label(name)).increment(1);
            gauge!("dcb_degraded", "breaker" => label(name)).increment(1.0);
        }
        Event::DegradedLeft { .. } => {
            gauge!("dcb_degraded", "breaker" => label(name)).decrement(1.0);
        }
        Event::Forced { .. } => {
            counter!("dcb_forced_total", "breaker" => label(name)).increment(1);
        }
        Event::HealthChecked { healthy, .. } => counter!(
            "dcb_health_checks_total",
            "breaker" => label(name),
            "result" => if *healthy { "healthy" } else { "unhealthy" },
        )
        .increment(1),
    }
}

/// A keyed layer's registry: how many breakers it holds, and how many it
/// evicted since the last report.
pub(crate) fn registry(layer: &BreakerName, len: usize, evicted: u64) {
    gauge!("dcb_keyed_breakers", "layer" => label(layer)).set(len as f64);
    if evicted > 0 {
        counter!("dcb_keyed_evictions_total", "layer" => label(layer)).increment(evicted);
    }
}

/// Times every round trip to a store.
#[derive(Debug)]
pub(crate) struct Metered(pub(crate) Arc<dyn Store>);

impl Metered {
    fn time<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        call: StoreFuture<'a, T>,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move {
            let mut trip = RoundTrip {
                op,
                started: Instant::now(),
                result: "timeout",
            };
            let answer = call.await;
            trip.result = match &answer {
                Ok(_) => "ok",
                Err(error) => error_kind(error),
            };
            answer
        })
    }
}

/// Counts one round trip when it ends: answered, failed, or dropped by the
/// caller's deadline (`timeout`).
struct RoundTrip {
    op: &'static str,
    started: Instant,
    result: &'static str,
}

impl Drop for RoundTrip {
    fn drop(&mut self) {
        counter!("dcb_store_calls_total", "op" => self.op, "result" => self.result).increment(1);
        histogram!("dcb_store_call_seconds", "op" => self.op)
            .record(self.started.elapsed().as_secs_f64());
    }
}

fn error_kind(error: &StoreError) -> &'static str {
    use crate::store::StoreErrorKind;
    match error.kind() {
        StoreErrorKind::Unavailable => "unavailable",
        StoreErrorKind::Corrupt => "corrupt",
        StoreErrorKind::Refused => "refused",
        StoreErrorKind::Config => "config",
    }
}

impl Store for Metered {
    fn record<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        batch: OutcomeBatch,
    ) -> StoreFuture<'a, Snapshot> {
        self.time("record", self.0.record(name, policy, batch))
    }

    fn acquire<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        lease: u64,
    ) -> StoreFuture<'a, Acquired> {
        self.time("acquire", self.0.acquire(name, policy, lease))
    }

    fn release<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        generation: u64,
        lease: u64,
        result: ProbeResult,
    ) -> StoreFuture<'a, Snapshot> {
        self.time(
            "release",
            self.0.release(name, policy, generation, lease, result),
        )
    }

    fn force<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        force: Force,
    ) -> StoreFuture<'a, Snapshot> {
        self.time("force", self.0.force(name, policy, force))
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
    ) -> StoreFuture<'a, Snapshot> {
        self.time("snapshot", self.0.snapshot(name, policy))
    }

    fn list(&self) -> StoreFuture<'_, Vec<(String, Snapshot)>> {
        self.time("list", self.0.list())
    }

    fn force_noted<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        force: Force,
        note: &'a ForceNote,
    ) -> StoreFuture<'a, Snapshot> {
        self.time("force", self.0.force_noted(name, policy, force, note))
    }

    fn info<'a>(&'a self, name: &'a BreakerName) -> StoreFuture<'a, Option<BreakerInfo>> {
        self.time("info", self.0.info(name))
    }

    fn list_info(&self) -> StoreFuture<'_, Vec<BreakerInfo>> {
        self.time("list", self.0.list_info())
    }

    fn health<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        check: HealthCheck,
    ) -> StoreFuture<'a, HealthTurn> {
        self.time("health", self.0.health(name, policy, check))
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StoreEvent> {
        self.0.subscribe()
    }
}
