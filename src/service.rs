//! The breaker [`Service`]: admits, rejects or probes each call.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use crate::layer::{Lanes, Rejection};
use crate::sync::permit::Admission;
use crate::sync::replica::Peek;
use crate::timer::{CallTimer, Untimed};
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
pub struct DistributedCircuitBreaker<S, C, T = Untimed> {
    inner: S,
    lanes: Lanes<C>,
    /// The hot path's decision: the next call passes a closed breaker.
    /// Plain data apart from `readiness`, so that deciding and taking it
    /// never runs `Readiness`'s drop glue.
    pass: Option<Pass>,
    readiness: Readiness,
    timer: PhantomData<fn() -> T>,
}

/// A call admitted through a closed (or forced-closed, or disabled) breaker.
#[derive(Debug, Clone, Copy)]
struct Pass {
    generation: u64,
    count: bool,
}

/// What `poll_ready` decided for the next `call`. A clone starts from `Idle`:
/// a permit belongs to the service that acquired it.
enum Readiness {
    /// Nothing decided beyond `pass`: `call` decides from the breaker's state.
    Idle,
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

impl<S, C, T> DistributedCircuitBreaker<S, C, T> {
    pub(crate) fn new(inner: S, lanes: Lanes<C>) -> Self {
        Self {
            inner,
            lanes,
            pass: None,
            timer: PhantomData,
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

impl<S, C, T, Req> Service<Req> for DistributedCircuitBreaker<S, C, T>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, S::Error>,
    T: CallTimer,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, T>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The hot path: a closed breaker.
        if self.pass.is_none() && matches!(self.readiness, Readiness::Idle) {
            match self.lanes.shared().replica.peek() {
                Peek::Pass { generation, count } => self.pass = Some(Pass { generation, count }),
                other => self.readiness = self.decide(other),
            }
        }
        if self.pass.is_some() {
            let ready = self.inner.poll_ready(cx);
            if ready.is_pending() {
                // Decide again once the inner service is ready: the breaker
                // may have opened meanwhile.
                self.pass = None;
            }
            return ready.map_err(Into::into);
        }
        self.poll_slow(cx)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        if let Some(Pass { generation, count }) = self.pass.take() {
            return self.start(request, Admission::Pass { generation, count });
        }
        self.call_slow(request)
    }
}

impl<S, C, T: CallTimer> DistributedCircuitBreaker<S, C, T> {
    /// What `poll_ready` holds after a peek that did not pass.
    fn decide(&self, peek: Peek) -> Readiness {
        let replica = &self.lanes.shared().replica;
        match peek {
            // Never given: a pass goes to `pass`.
            Peek::Pass { .. } => Readiness::Idle,
            Peek::Reject { state, retry_after } => {
                Readiness::Rejected(Box::new(replica.open_error(state, retry_after)))
            }
            Peek::NeedsPermit => {
                let acquire = replica.clone().acquire();
                Readiness::Acquiring(Mutex::new(Box::pin(acquire)))
            }
        }
    }

    /// `poll_ready` off the hot path: asking for a permit, rejecting, waiting.
    fn poll_slow<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        loop {
            match &mut self.readiness {
                Readiness::Idle => match self.lanes.shared().replica.peek() {
                    Peek::Pass { generation, count } => {
                        let ready = self.inner.poll_ready(cx);
                        if ready.is_ready() {
                            self.pass = Some(Pass { generation, count });
                        }
                        return ready.map_err(Into::into);
                    }
                    peek => self.readiness = self.decide(peek),
                },
                Readiness::Acquiring(acquire) => {
                    let acquire = acquire.get_mut().unwrap_or_else(PoisonError::into_inner);
                    self.readiness = match ready!(acquire.as_mut().poll(cx)) {
                        Ok(admission) => Readiness::Admitted(admission),
                        Err(open) => Readiness::Rejected(Box::new(open)),
                    };
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

    /// `call` off the hot path: a permit, a rejection, or no `poll_ready`.
    fn call_slow<Req>(&mut self, request: Req) -> ResponseFuture<S::Future, C, T>
    where
        S: Service<Req>,
        C: Classifier<S::Response, S::Error>,
    {
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

    /// Calls the inner service for an admitted request.
    #[inline(always)]
    fn start<Req>(&mut self, request: Req, admission: Admission) -> ResponseFuture<S::Future, C, T>
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

impl<S: Clone, C, T> Clone for DistributedCircuitBreaker<S, C, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            lanes: self.lanes.clone(),
            pass: None,
            readiness: Readiness::Idle,
            timer: PhantomData,
        }
    }
}

impl<S: fmt::Debug, C, T> fmt::Debug for DistributedCircuitBreaker<S, C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let readiness = match &self.readiness {
            Readiness::Idle if self.pass.is_some() => "admitted (closed)",
            Readiness::Idle => "idle",
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
