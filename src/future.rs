//! The response future of [`DistributedCircuitBreaker`](crate::DistributedCircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::deferred::Recorder;
use crate::layer::Shared;
use crate::sync::permit::Admission;
use crate::sync::replica::Replica;
use crate::{BoxError, CallTimeout, CircuitOpen, Classifier, Deferred, Outcome};

pin_project! {
    /// Resolves to the inner service's response, or fails with
    /// [`CircuitOpen`] (rejected without calling the inner service) or
    /// [`CallTimeout`]. Classifies and counts the result when it completes; a
    /// probe dropped before completing returns its permit; a call whose inner
    /// future panics counts as a failure.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Rejected { open: Option<Box<CircuitOpen>> },
        Called {
            #[pin]
            future: F,
            // Armed when the inner future is first found pending: a call
            // answered at once never touches tokio's timer, and no call
            // allocates for one.
            #[pin]
            timeout: Option<Sleep>,
            call: Option<Call<C>>,
        },
    }
}

/// What a running call must report when it ends.
struct Call<C> {
    shared: Arc<Shared<C>>,
    admission: Admission,
    /// Read only when someone needs the call's duration.
    started: Option<Instant>,
}

impl<F, C> ResponseFuture<F, C> {
    /// A call turned away by `replica`'s breaker (counted for its listener
    /// and metrics).
    pub(crate) fn rejected(open: Box<CircuitOpen>, replica: &Replica) -> Self {
        replica.observer.rejected(open.state());
        Self {
            kind: Kind::Rejected { open: Some(open) },
        }
    }

    #[inline(always)]
    pub(crate) fn called<T, E>(future: F, shared: Arc<Shared<C>>, admission: Admission) -> Self
    where
        C: Classifier<T, E>,
    {
        let timed = shared.timed();
        Self {
            kind: Kind::Called {
                future,
                timeout: None,
                call: Some(Call {
                    shared,
                    admission,
                    started: timed.then(Instant::now),
                }),
            },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classifier<T, E>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { open } => {
                // Taken once; a future polled again after completing gets a
                // generic open error rather than a panic.
                let error: BoxError = match open.take() {
                    Some(open) => open,
                    None => "circuit breaker future polled after completion".into(),
                };
                Poll::Ready(Err(error))
            }
            KindProj::Called {
                future,
                mut timeout,
                call,
            } => {
                // If the inner future panics, the guard counts a failure
                // while the stack unwinds; on every other path it is forgotten.
                let guard = UnwindGuard(&mut *call);
                let poll = future.poll(cx);
                std::mem::forget(guard);
                if let Poll::Ready(result) = poll {
                    if let Some(call) = call.take() {
                        let elapsed = call.elapsed();
                        let classifier = &call.shared.classifier;
                        match classifier.defer(result.as_ref()) {
                            Some(deferred) => call.defer(&deferred, elapsed),
                            None => {
                                let outcome = classifier.classify(result.as_ref(), elapsed);
                                call.finish(outcome, elapsed);
                            }
                        }
                    }
                    return Poll::Ready(result.map_err(Into::into));
                }
                if timeout.is_none() {
                    if let Some(sleep) = call.as_ref().and_then(Call::timer) {
                        timeout.set(Some(sleep));
                    }
                }
                if let Some(timeout) = timeout.as_pin_mut() {
                    if timeout.poll(cx).is_ready() {
                        let error = call.take().map(|call| {
                            let elapsed = call.elapsed();
                            let replica = &call.shared.replica;
                            let limit = call.shared.call_timeout.unwrap_or(elapsed);
                            let error = CallTimeout::new(replica.name.clone(), limit);
                            call.finish(Outcome::Failure, elapsed);
                            error
                        });
                        let error: BoxError = match error {
                            Some(error) => Box::new(error),
                            None => "circuit breaker future polled after completion".into(),
                        };
                        return Poll::Ready(Err(error));
                    }
                }
                Poll::Pending
            }
        }
    }
}

/// Counts a call as failed if dropped while its thread unwinds from a panic
/// in the inner future's `poll`.
struct UnwindGuard<'a, C>(&'a mut Option<Call<C>>);

impl<C> Drop for UnwindGuard<'_, C> {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            let elapsed = call.elapsed();
            call.finish(Outcome::Failure, elapsed);
        }
    }
}

impl<C> Call<C> {
    /// The call's timer, if it has a timeout: from the call's start when
    /// that was measured, else from now (the first poll that found the
    /// inner future pending).
    #[cold]
    fn timer(&self) -> Option<Sleep> {
        let limit = self.shared.call_timeout?;
        // A tokio timer outside a tokio runtime panics; run the call
        // without one rather than take the caller down (said once).
        if tokio::runtime::Handle::try_current().is_err() {
            crate::sync::driver::no_runtime(&self.shared.replica);
            return None;
        }
        let start = self.started.unwrap_or_else(Instant::now);
        Some(tokio::time::sleep_until(start + limit))
    }

    #[inline(always)]
    fn elapsed(&self) -> std::time::Duration {
        self.started
            .map_or(std::time::Duration::ZERO, |at| at.elapsed())
    }

    #[inline(always)]
    fn finish(self, outcome: Outcome, elapsed: std::time::Duration) {
        let slow = self.is_slow(elapsed);
        self.admission.finish(&self.shared.replica, outcome, slow);
    }

    /// Hands the call to whoever will learn its outcome.
    fn defer(self, deferred: &Deferred, elapsed: std::time::Duration) {
        let slow = self.is_slow(elapsed);
        deferred.attach(Recorder {
            admission: self.admission,
            replica: self.shared.replica.clone(),
            slow,
        });
    }

    #[inline(always)]
    fn is_slow(&self, elapsed: std::time::Duration) -> bool {
        let policy = &self.shared.replica.policy;
        policy
            .slow_call_duration()
            .is_some_and(|limit| elapsed >= limit)
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Rejected { .. } => "rejected",
            Kind::Called { .. } => "called",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
