//! A handle to inspect and command one breaker from inside the process.

use std::fmt;
use std::sync::Arc;

use crate::replica::Replica;
use crate::store::{Force, StoreError};
use crate::{BreakerName, Policy, Snapshot};

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
        self.replica.fallback.is_degraded()
    }

    /// Hands counted outcomes to the store now and refreshes the view; returns
    /// whether the store answered.
    pub async fn sync(&self) -> bool {
        crate::driver::sync_once(&self.replica, true).await
    }

    /// Sends an operator's command to the store and adopts the result.
    pub async fn force(&self, force: Force) -> Result<Snapshot, StoreError> {
        let r = &self.replica;
        let snapshot = r.store.force(&r.name, &r.policy, force).await?;
        r.apply(snapshot);
        Ok(snapshot)
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
