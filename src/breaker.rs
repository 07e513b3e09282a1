//! A handle to inspect and command one breaker from inside the process.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::store::{Force, ForceNote, StoreError};
use crate::sync::permit::Admission;
use crate::sync::replica::{Peek, Replica};
use crate::{BreakerName, CircuitOpen, Outcome, Policy, Snapshot};

/// A handle to a breaker: its local view, and commands that go to the store
/// (and so reach every process sharing the breaker).
///
/// Get one from [`DistributedCircuitBreakerLayer::breaker`](crate::DistributedCircuitBreakerLayer::breaker)
/// or [`DistributedCircuitBreaker::breaker`](crate::DistributedCircuitBreaker::breaker).
///
/// ```
/// use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, Force, MemoryStore, Policy, State};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = DistributedCircuitBreakerLayer::new("search", Policy::default(), MemoryStore::new())?;
/// let breaker = layer.breaker();
/// breaker.force(Force::Open(None)).await?;
/// assert_eq!(breaker.snapshot().state, State::ForcedOpen);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Breaker {
    replica: Arc<Replica>,
}

impl Breaker {
    pub(crate) fn new(replica: Arc<Replica>) -> Self {
        Self { replica }
    }

    /// The breaker's name.
    pub fn name(&self) -> &BreakerName {
        &self.replica.name
    }

    /// Its policy.
    pub fn policy(&self) -> &Policy {
        &self.replica.policy
    }

    /// This process's current view of the shared state (no store call).
    pub fn snapshot(&self) -> Snapshot {
        self.replica.current()
    }

    /// Whether this process is deciding alone because its store did not answer
    /// (see [`StoreFailure`](crate::StoreFailure)).
    pub fn is_degraded(&self) -> bool {
        self.replica.degraded.is_degraded()
    }

    /// Hands counted outcomes to the store now and refreshes the view; returns
    /// whether the store answered.
    pub async fn sync(&self) -> bool {
        crate::sync::driver::sync_once(&self.replica, true).await
    }

    /// Asks to make a call outside tower (another client's middleware, a job
    /// runner): `Ok` with a [`Permit`] to report the outcome to, or the
    /// rejection. Waits on the store only when a half-open permit is needed,
    /// and then at most the policy's `store_timeout`.
    ///
    /// ```
    /// use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, MemoryStore, Outcome, Policy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let breaker = DistributedCircuitBreakerLayer::new("job", Policy::default(), MemoryStore::new())?.breaker();
    /// let permit = breaker.admit().await?; // Err(CircuitOpen) while open
    /// let worked = true; // ... make the call ...
    /// permit.finish(if worked { Outcome::Success } else { Outcome::Failure });
    /// # Ok(()) }
    /// ```
    pub async fn admit(&self) -> Result<Permit, CircuitOpen> {
        let replica = &self.replica;
        let admission = match replica.peek() {
            Peek::Pass { generation, count } => Admission::Pass { generation, count },
            Peek::Reject { state, retry_after } => {
                replica.observer.rejected(state);
                return Err(replica.open_error(state, retry_after));
            }
            Peek::NeedsPermit => match replica.clone().acquire().await {
                Ok(admission) => admission,
                Err(open) => {
                    replica.observer.rejected(open.state());
                    return Err(open);
                }
            },
        };
        Ok(Permit {
            admission: Some(admission),
            replica: replica.clone(),
            started: Instant::now(),
        })
    }

    /// Sends an operator's command to the store and adopts the result.
    pub async fn force(&self, force: Force) -> Result<Snapshot, StoreError> {
        self.force_noted(force, &ForceNote::new()).await
    }

    /// [`force`](Self::force), with who and why: the store keeps the note
    /// beside the forced state (`dcb show`, the admin API and the dashboard
    /// show it) and the [`Event::Forced`](crate::events::Event::Forced) of
    /// this process carries it.
    ///
    /// ```
    /// # async fn demo(breaker: distributed_circuit_breaker::Breaker) -> Result<(), distributed_circuit_breaker::store::StoreError> {
    /// use std::time::Duration;
    /// use distributed_circuit_breaker::{Force, ForceNote};
    ///
    /// let note = ForceNote::new().reason("provider incident #4411").actor("alice");
    /// breaker.force_noted(Force::Open(Some(Duration::from_secs(600))), &note).await?;
    /// # Ok(()) }
    /// ```
    pub async fn force_noted(
        &self,
        force: Force,
        note: &ForceNote,
    ) -> Result<Snapshot, StoreError> {
        let r = &self.replica;
        let before = r.current();
        let ticket = r.ticket();
        let snapshot = r.store.force_noted(&r.name, &r.policy, force, note).await?;
        if snapshot.generation > before.generation {
            // This command made the fleet's transition: told here, once.
            r.observer.fleet_transition(
                &r.name,
                crate::events::TransitionEvent {
                    from: before.state,
                    to: snapshot.state,
                    generation: snapshot.generation,
                    scope: crate::events::Scope::Fleet,
                    cause: crate::events::Cause::rule(crate::events::Rule::Operator),
                },
            );
        }
        r.observer.push(crate::events::Event::Forced {
            force,
            note: note.clone(),
        });
        tracing::info!(
            breaker = %r.name,
            force = ?force,
            reason = note.reason_str().unwrap_or(""),
            actor = note.actor_str().unwrap_or(""),
            state = snapshot.state.as_str(),
            generation = snapshot.generation,
            "breaker forced"
        );
        r.adopt(ticket, snapshot);
        r.mail.notify_one();
        Ok(snapshot)
    }
}

/// A call admitted by [`Breaker::admit`]. Report its outcome with
/// [`finish`](Self::finish); dropped unfinished, it counts as ignored (and a
/// half-open probe permit goes back to the store), unless dropped by a panic,
/// which counts as a failure.
pub struct Permit {
    admission: Option<Admission>,
    replica: Arc<Replica>,
    started: Instant,
}

impl Permit {
    /// Counts the call's outcome; slowness is judged from when it was admitted.
    pub fn finish(mut self, outcome: Outcome) {
        let slow = self
            .replica
            .policy
            .slow_call_duration()
            .is_some_and(|limit| self.started.elapsed() >= limit);
        if let Some(admission) = self.admission.take() {
            admission.finish(&self.replica, outcome, slow);
        }
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        matches!(self.admission, Some(Admission::Probe(_)))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Dropped unfinished while its thread unwinds: the call panicked,
        // which counts as a failure (a probe's permit goes back as failed).
        if std::thread::panicking() {
            if let Some(admission) = self.admission.take() {
                admission.finish(&self.replica, Outcome::Failure, false);
            }
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.replica.name)
            .field("probe", &self.is_probe())
            .finish()
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.replica.name)
            .field("snapshot", &self.replica.current())
            .finish()
    }
}
