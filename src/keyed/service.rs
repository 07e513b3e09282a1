use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::registry::Registry;
use super::KeyedResponseFuture;
use crate::future::ResponseFuture;
use crate::sync::permit::Admission;
use crate::sync::replica::Peek;
use crate::{BoxError, Classifier, KeyExtractor};

/// A service behind one breaker per request key; built by
/// [`KeyedCircuitBreakerLayer`](super::KeyedCircuitBreakerLayer).
///
/// Its error is [`BoxError`], as for
/// [`DistributedCircuitBreaker`](crate::DistributedCircuitBreaker).
pub struct KeyedCircuitBreaker<S, K, C> {
    inner: S,
    registry: Arc<Registry<C>>,
    extractor: K,
}

impl<S, K, C> KeyedCircuitBreaker<S, K, C> {
    pub(crate) fn new(inner: S, registry: Arc<Registry<C>>, extractor: K) -> Self {
        Self {
            inner,
            registry,
            extractor,
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
}

impl<S, K, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: KeyExtractor<Req>,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = KeyedResponseFuture<S::Future, S, Req, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let shared = self.registry.get(self.extractor.extract(&request));
        match shared.replica.peek() {
            Peek::Pass { generation, count } => {
                let admission = Admission::Pass { generation, count };
                let future = self.inner.call(request);
                KeyedResponseFuture::running(ResponseFuture::called(future, shared, admission))
            }
            Peek::Reject { state, retry_after } => {
                let open = shared.replica.open_error(state, retry_after);
                KeyedResponseFuture::running(ResponseFuture::rejected(
                    Box::new(open),
                    &shared.replica,
                ))
            }
            Peek::NeedsPermit => {
                // The permit is asked for in the future; the service that
                // was polled ready goes with it (tower's clone-and-replace).
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let acquire = Box::pin(shared.replica.clone().acquire());
                KeyedResponseFuture::acquiring(acquire, inner, request, shared)
            }
        }
    }
}

impl<S: Clone, K: Clone, C> Clone for KeyedCircuitBreaker<S, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            extractor: self.extractor.clone(),
        }
    }
}

impl<S: fmt::Debug, K: fmt::Debug, C> fmt::Debug for KeyedCircuitBreaker<S, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("base", &self.registry.base.replica.name)
            .field("extractor", &self.extractor)
            .finish()
    }
}
