//! The contenders' common parts, shared by `benches/overhead.rs` and
//! `examples/instructions.rs` (each includes this file with `#[path]`).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use tower::Service;

/// The cheapest possible inner service: answers at once, allocates nothing.
#[derive(Clone, Copy)]
pub struct Plain;

impl Service<u64> for Plain {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

/// recloser wrapped as a tower service, the way a user would wrap it.
#[derive(Clone)]
pub struct RecloserService<S> {
    pub inner: S,
    pub recloser: recloser::AsyncRecloser,
}

impl<S> Service<u64> for RecloserService<S>
where
    S: Service<u64, Error = Infallible>,
{
    type Response = S::Response;
    type Error = recloser::Error<Infallible>;
    type Future = recloser::RecloserFuture<S::Future, recloser::AnyError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(recloser::Error::Inner)
    }

    fn call(&mut self, request: u64) -> Self::Future {
        self.recloser.call(self.inner.call(request))
    }
}

/// Ten keys borrowed from a table, by the request's number.
#[derive(Clone)]
pub struct TenKeys;

const KEYS: [&str; 10] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"];

impl distributed_circuit_breaker::KeyExtractor<u64> for TenKeys {
    fn extract<'r>(&self, request: &'r u64) -> Option<std::borrow::Cow<'r, str>> {
        Some(std::borrow::Cow::Borrowed(KEYS[(*request % 10) as usize]))
    }
}
