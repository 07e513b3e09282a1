//! A downstream dependency for tests: healthy or failing on demand, counting
//! every call that reaches it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

#[derive(Clone, Default, Debug)]
pub struct Dependency {
    state: Arc<DependencyState>,
}

#[derive(Default, Debug)]
struct DependencyState {
    down: AtomicBool,
    delay_ms: AtomicU64,
    calls: AtomicUsize,
    failures: AtomicUsize,
}

/// The error a failing dependency answers with.
#[derive(Debug)]
pub struct DependencyDown;

impl std::fmt::Display for DependencyDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dependency down")
    }
}

impl std::error::Error for DependencyDown {}

impl Dependency {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Calls that reached the dependency.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Calls that reached it while it was down.
    pub fn failures(&self) -> usize {
        self.state.failures.load(Ordering::SeqCst)
    }

    /// The same dependency as an HTTP-ish service answering 200 or 503.
    pub fn http(&self) -> HttpDependency {
        HttpDependency(self.clone())
    }
}

impl<R> Service<R> for Dependency {
    type Response = &'static str;
    type Error = DependencyDown;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, DependencyDown>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: R) -> Self::Future {
        let state = self.state.clone();
        state.calls.fetch_add(1, Ordering::SeqCst);
        let down = state.down.load(Ordering::SeqCst);
        if down {
            state.failures.fetch_add(1, Ordering::SeqCst);
        }
        let delay = Duration::from_millis(state.delay_ms.load(Ordering::SeqCst));
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if down {
                Err(DependencyDown)
            } else {
                Ok("ok")
            }
        })
    }
}

#[derive(Clone, Debug)]
pub struct HttpDependency(Dependency);

impl<R> Service<R> for HttpDependency {
    type Response = http::Response<&'static str>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, r: R) -> Self::Future {
        let fut = Service::<R>::call(&mut self.0, r);
        Box::pin(async move {
            let status = if fut.await.is_ok() { 200 } else { 503 };
            Ok(http::Response::builder()
                .status(status)
                .body("")
                .unwrap_or_default())
        })
    }
}
