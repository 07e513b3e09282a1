//! The breaker [`Service`]: admits, rejects or probes each call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use crate::layer::{Lanes, Rejection};
use crate::sync::permit::Admission;
use crate::sync::replica::Peek;
use crate::{BoxError, Breaker, CircuitOpen, Classifier, ResponseFuture};

/// In backpressure mode, the shortest wait before asking again whether a probe
/// may pass (another call of this process may be asking right now).
const BACKPRESSURE_RETRY: Duration = Duration::from_millis(10);

type Acquiring = Pin<Box<dyn Future<Output = Result<Admission, CircuitOpen>> + Send>>;
type Waiting = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service behind a circuit breaker; built by
/// [`DistributedCircuitBreakerLayer`](crate::DistributedCircuitBreakerLayer).
///
/// While the breaker is closed, `poll_ready` is the inner service's and `call`
/// calls it at once. While it is open, `call` fails with [`CircuitOpen`] without
/// touching the inner service (or, in [`Rejection::Backpressure`] mode,
/// `poll_ready` waits). When the break is over, `poll_ready` asks the store for
/// a fleet-wide probe permit (waiting at most the policy's `store_timeout`) and
/// the call that gets it is the probe.
///
/// The error type is [`BoxError`]: the inner error, [`CircuitOpen`] or
/// [`CallTimeout`](crate::CallTimeout); [`BreakerError`](crate::BreakerError)
/// sorts them for `match`.
pub struct DistributedCircuitBreaker<S, C> {
    inner: S,
    lanes: Lanes<C>,
    readiness: Readiness,
}

/// What `poll_ready` decided for the next `call`. A clone starts from `Idle`:
/// a permit belongs to the service that acquired it.
enum Readiness {
    /// Nothing decided: `call` decides from the breaker's state.
    Idle,
    /// The next call passes a closed breaker (the hot path: plain data, no
    /// drop glue).
    Pass { generation: u64, count: bool },
    /// Asking the store for a probe permit. The mutex is never locked (only
    /// `get_mut` is used); it makes the service `Sync`, which axum requires,
    /// around a future that is only `Send`.
    Acquiring(Mutex<Acquiring>),
    /// The next call is admitted (perhaps as a probe).
    Admitted(Admission),
    /// The next call is rejected.
    Rejected(Box<CircuitOpen>),
    /// Backpressure mode: waiting for the break to end, a permit to free up
    /// or the state to change (whichever comes first). Wrapped as `Acquiring`.
    Waiting(Mutex<Waiting>),
}

impl<S, C> DistributedCircuitBreaker<S, C> {
    pub(crate) fn new(inner: S, lanes: Lanes<C>) -> Self {
        Self {
            inner,
            lanes,
            readiness: Readiness::Idle,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle to inspect and command the breaker.
    pub fn breaker(&self) -> Breaker {
        Breaker::new(self.lanes.shared().replica.clone())
    }
}

impl<S, C, Req> Service<Req> for DistributedCircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            match &mut self.readiness {
                Readiness::Idle => {
                    self.readiness = match self.lanes.shared().replica.peek() {
                        Peek::Pass { generation, count } => Readiness::Pass { generation, count },
                        Peek::Reject { state, retry_after } => {
                            let open = self.lanes.shared().replica.open_error(state, retry_after);
                            Readiness::Rejected(Box::new(open))
                        }
                        Peek::NeedsPermit => {
                            let acquire = self.lanes.shared().replica.clone().acquire();
                            Readiness::Acquiring(Mutex::new(Box::pin(acquire)))
                        }
                    }
                }
                Readiness::Acquiring(acquire) => {
                    let acquire = acquire.get_mut().unwrap_or_else(PoisonError::into_inner);
                    self.readiness = match ready!(acquire.as_mut().poll(cx)) {
                        Ok(admission) => Readiness::Admitted(admission),
                        Err(open) => Readiness::Rejected(Box::new(open)),
                    };
                }
                Readiness::Pass { .. } => {
                    let ready = self.inner.poll_ready(cx);
                    if ready.is_pending() {
                        // Decide again once the inner service is ready: the
                        // breaker may have opened meanwhile.
                        self.readiness = Readiness::Idle;
                    }
                    return ready.map_err(Into::into);
                }
                Readiness::Admitted(_) => return self.inner.poll_ready(cx).map_err(Into::into),
                Readiness::Rejected(open) => match self.lanes.shared().rejection {
                    Rejection::Fail => return Poll::Ready(Ok(())),
                    Rejection::Backpressure => {
                        let wait = open.retry_after().max(BACKPRESSURE_RETRY);
                        let replica = self.lanes.shared().replica.clone();
                        let waiting = async move {
                            tokio::select! {
                                biased;
                                () = replica.changed() => {}
                                () = tokio::time::sleep_until(Instant::now() + wait) => {}
                            }
                        };
                        self.readiness = Readiness::Waiting(Mutex::new(Box::pin(waiting)));
                    }
                },
                Readiness::Waiting(waiting) => {
                    let waiting = waiting.get_mut().unwrap_or_else(PoisonError::into_inner);
                    ready!(waiting.as_mut().poll(cx));
                    self.readiness = Readiness::Idle;
                }
            }
        }
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        if let Readiness::Pass { generation, count } = self.readiness {
            self.readiness = Readiness::Idle;
            return self.start(request, Admission::Pass { generation, count });
        }
        let admission = match std::mem::replace(&mut self.readiness, Readiness::Idle) {
            Readiness::Admitted(admission) => admission,
            Readiness::Rejected(open) => {
                return ResponseFuture::rejected(open, &self.lanes.shared().replica)
            }
            // `call` without `poll_ready` breaks the `Service` contract; decide
            // from the current state rather than panic.
            _ => match self.lanes.shared().replica.peek() {
                Peek::Pass { generation, count } => Admission::Pass { generation, count },
                Peek::Reject { state, retry_after } => {
                    let replica = &self.lanes.shared().replica;
                    let open = replica.open_error(state, retry_after);
                    return ResponseFuture::rejected(Box::new(open), replica);
                }
                // The next `poll_ready` asks for a permit.
                Peek::NeedsPermit => {
                    let replica = &self.lanes.shared().replica;
                    let open = replica.open_error(replica.current().state, Duration::ZERO);
                    return ResponseFuture::rejected(Box::new(open), replica);
                }
            },
        };
        self.start(request, admission)
    }
}

impl<S, C> DistributedCircuitBreaker<S, C> {
    /// Calls the inner service for an admitted request.
    #[inline(always)]
    fn start<Req>(&mut self, request: Req, admission: Admission) -> ResponseFuture<S::Future, C>
    where
        S: Service<Req>,
        C: Classifier<S::Response, S::Error>,
    {
        ResponseFuture::called(
            self.inner.call(request),
            self.lanes.pick().clone(),
            admission,
        )
    }
}

impl<S: Clone, C> Clone for DistributedCircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            lanes: self.lanes.clone(),
            readiness: Readiness::Idle,
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for DistributedCircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let readiness = match &self.readiness {
            Readiness::Idle => "idle",
            Readiness::Pass { .. } => "admitted (closed)",
            Readiness::Acquiring(_) => "acquiring a probe permit",
            Readiness::Admitted(_) => "admitted",
            Readiness::Rejected(_) => "rejected",
            Readiness::Waiting(_) => "waiting for the break to end",
        };
        f.debug_struct("DistributedCircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", self.lanes.shared())
            .field("readiness", &readiness)
            .finish()
    }
}
