//! What a call holds while it runs: a plain admission, or a half-open probe
//! permit that must go back to the store however the call ends.

use std::sync::Arc;

use crate::events::Event;
use crate::store::ProbeResult;
use crate::sync::replica::Replica;
use crate::Outcome;

/// Why a call was let through.
#[derive(Debug)]
pub(crate) enum Admission {
    /// The breaker is closed (or forced closed, or disabled).
    Pass { generation: u64, count: bool },
    /// The call is a half-open probe (boxed: rare, and it keeps every
    /// future that carries an `Admission` small).
    Probe(Box<ProbePermit>),
}

impl Admission {
    /// Counts the call's outcome (or reports the probe's result).
    #[inline(always)]
    pub(crate) fn finish(self, replica: &Replica, outcome: Outcome, slow: bool) {
        match self {
            Admission::Pass {
                generation,
                count: true,
            } => replica.record(generation, outcome, slow),
            Admission::Pass { count: false, .. } => {}
            Admission::Probe(permit) => (*permit).finish(outcome, slow),
        }
    }
}

/// A fleet-wide half-open permit on lease from the store.
///
/// Returned with the probe's result when the call ends; returned as cancelled
/// when dropped unfinished (the caller dropped the response future), so a
/// cancelled probe never wedges the breaker. If even that cannot reach the
/// store, the lease runs out after the policy's `probe_lease`.
#[derive(Debug)]
pub(crate) struct ProbePermit {
    replica: Arc<Replica>,
    generation: u64,
    lease: u64,
    done: bool,
    kind: PermitKind,
    /// The probe's span: its start and result are logged inside it.
    span: tracing::Span,
}

/// Who granted a probe permit, and so who hears its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// The store: fleet-wide half-open.
    Fleet,
    /// The private breaker of degraded mode (the store is unreachable).
    Degraded,
    /// This replica, which tripped on its own outcomes while the fleet stayed
    /// closed.
    Own,
}

impl PermitKind {
    fn as_str(self) -> &'static str {
        match self {
            PermitKind::Fleet => "store",
            PermitKind::Degraded => "degraded",
            PermitKind::Own => "own",
        }
    }
}

impl ProbePermit {
    pub(crate) fn new(replica: Arc<Replica>, generation: u64, lease: u64) -> Self {
        Self::of(PermitKind::Fleet, replica, generation, lease)
    }

    /// A permit of the private breaker (degraded mode).
    pub(crate) fn local(replica: Arc<Replica>, generation: u64, lease: u64) -> Self {
        Self::of(PermitKind::Degraded, replica, generation, lease)
    }

    /// This replica's own probe after a trip of its own.
    pub(crate) fn own(replica: Arc<Replica>, generation: u64) -> Self {
        Self::of(PermitKind::Own, replica, generation, 0)
    }

    fn of(kind: PermitKind, replica: Arc<Replica>, generation: u64, lease: u64) -> Self {
        let span = tracing::info_span!(
            "probe",
            breaker = %replica.name,
            generation,
            granted_by = kind.as_str(),
        );
        span.in_scope(|| tracing::debug!("probe started"));
        replica.observer.push(Event::ProbeStarted { generation });
        replica.mail.notify_one();
        Self {
            replica,
            generation,
            lease,
            done: false,
            kind,
            span,
        }
    }

    fn finish(mut self, outcome: Outcome, slow: bool) {
        let result = match outcome {
            Outcome::Failure => ProbeResult::Failure,
            // A slow probe is a failed probe when the policy judges slowness.
            Outcome::Success if slow && self.replica.policy.slow_call_rate().is_some() => {
                ProbeResult::Failure
            }
            Outcome::Success => ProbeResult::Success,
            Outcome::Ignore => ProbeResult::Cancelled,
        };
        self.done = true;
        self.send(result);
    }

    /// Reports the result in the background; the caller never waits for it.
    fn send(&self, result: ProbeResult) {
        let r = &self.replica;
        self.span
            .in_scope(|| tracing::debug!(result = ?result, "probe finished"));
        r.observer.push(Event::ProbeFinished {
            generation: self.generation,
            result,
        });
        r.mail.notify_one();
        match self.kind {
            PermitKind::Fleet => release_in_background(r, self.generation, self.lease, result),
            PermitKind::Degraded => {
                if let Some(snapshot) =
                    r.degraded
                        .release(r.policy.params(), self.generation, self.lease, result)
                {
                    r.apply_local(snapshot);
                }
            }
            PermitKind::Own => r.own_probe_result(self.generation, result),
        }
    }
}

/// Returns a permit to the store in the background (the caller never waits):
/// with `generation` 0, blindly (see [`Store::release`](crate::Store::release)).
/// If the store cannot be reached, the lease frees itself after `probe_lease`.
pub(crate) fn release_in_background(
    replica: &Arc<Replica>,
    generation: u64,
    lease: u64,
    result: ProbeResult,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(breaker = %replica.name, "no tokio runtime to return a probe permit; it frees itself when its lease ends");
        return;
    };
    let replica = replica.clone();
    runtime.spawn(async move {
        let ticket = replica.ticket();
        let release = replica
            .store
            .release(&replica.name, &replica.policy, generation, lease, result);
        match tokio::time::timeout(replica.policy.store_timeout(), release).await {
            Ok(Ok(snapshot)) => {
                replica.adopt(ticket, snapshot);
                // A permit is free again: callers waiting for one ask now.
                replica.notify_changed();
            }
            Ok(Err(error)) => {
                tracing::warn!(breaker = %replica.name, %error, "could not return a probe permit; it frees itself when its lease ends")
            }
            Err(_) => {
                tracing::warn!(breaker = %replica.name, "returning a probe permit timed out; it frees itself when its lease ends")
            }
        }
    });
}

impl Drop for ProbePermit {
    fn drop(&mut self) {
        if !self.done {
            self.send(ProbeResult::Cancelled);
        }
    }
}
