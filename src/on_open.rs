//! Answering for an open circuit: a fallback response (cached or stale data, a
//! default) instead of an error.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{BoxError, CircuitOpen};

/// Wraps a breaker service so that a rejected call answers `fallback(&open)`
/// instead of failing with [`CircuitOpen`]; other errors pass through.
///
/// Put it outside the breaker layer:
///
/// ```
/// use distributed_circuit_breaker::{CircuitOpen, DistributedCircuitBreakerLayer, MemoryStore, OnOpenLayer, Policy};
/// use tower::ServiceBuilder;
///
/// let breaker = DistributedCircuitBreakerLayer::new("prices", Policy::default(), MemoryStore::new())?;
/// let prices = ServiceBuilder::new()
///     .layer(OnOpenLayer::new(|open: &CircuitOpen| {
///         format!("cached prices (live ones back in {}s)", open.retry_after_secs())
///     }))
///     .layer(breaker)
///     .service_fn(|_: ()| async { Ok::<_, std::io::Error>(String::from("live prices")) });
/// # drop(prices);
/// # Ok::<(), distributed_circuit_breaker::ConfigError>(())
/// ```
///
/// With the `axum` feature, `OnOpenLayer::new(|open: &CircuitOpen| open.clone().into_response())`
/// answers 503 with `Retry-After`.
#[derive(Clone)]
pub struct OnOpenLayer<F> {
    fallback: F,
}

impl<F> OnOpenLayer<F> {
    /// Answers `fallback(&open)` for rejected calls.
    pub fn new(fallback: F) -> Self {
        Self { fallback }
    }
}

impl<S, F: Clone> Layer<S> for OnOpenLayer<F> {
    type Service = OnOpen<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        OnOpen {
            inner,
            fallback: self.fallback.clone(),
        }
    }
}

/// The service of [`OnOpenLayer`].
#[derive(Clone)]
pub struct OnOpen<S, F> {
    inner: S,
    fallback: F,
}

impl<S, F, Req> Service<Req> for OnOpen<S, F>
where
    S: Service<Req, Error = BoxError>,
    F: Fn(&CircuitOpen) -> S::Response + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = OnOpenFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        OnOpenFuture {
            inner: self.inner.call(request),
            fallback: self.fallback.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`OnOpen`].
    pub struct OnOpenFuture<Fut, F> {
        #[pin]
        inner: Fut,
        fallback: F,
    }
}

impl<Fut, F, T> Future for OnOpenFuture<Fut, F>
where
    Fut: Future<Output = Result<T, BoxError>>,
    F: Fn(&CircuitOpen) -> T,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Err(error) => match error.downcast::<CircuitOpen>() {
                Ok(open) => Ok((this.fallback)(&open)),
                Err(error) => Err(error),
            },
            ok => ok,
        })
    }
}

impl<F> fmt::Debug for OnOpenLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnOpenLayer").finish_non_exhaustive()
    }
}

impl<S: fmt::Debug, F> fmt::Debug for OnOpen<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnOpen")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<Fut, F> fmt::Debug for OnOpenFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnOpenFuture").finish_non_exhaustive()
    }
}
