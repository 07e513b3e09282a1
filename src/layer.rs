//! The tower [`Layer`] that puts a breaker in front of a service.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::store::Store;
use crate::sync::hub::Hub;
use crate::sync::replica::Replica;
use crate::timer::{Timed, Untimed};
use crate::StoreFailure;
use crate::{
    Breaker, BreakerName, Classifier, ConfigError, DistributedCircuitBreaker, ErrorsAsFailures,
    Policy,
};

/// How a service answers while its breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rejection {
    /// `poll_ready` reports ready and `call` fails at once with
    /// [`CircuitOpen`](crate::CircuitOpen) (tower's `LoadShed` style; the default).
    #[default]
    Fail,
    /// `poll_ready` stays pending until a probe may be let through, so callers
    /// such as `tower::buffer` queue instead of failing.
    Backpressure,
}

/// Puts a [`DistributedCircuitBreaker`] in front of a service.
///
/// The layer holds one replica of the breaker named at construction: every
/// service it builds, and every clone of the layer or of those services, shares
/// it. Layers built separately on the same store and name are separate replicas
/// of one shared breaker, as separate processes are.
///
/// ```
/// use std::time::Duration;
/// use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, HttpClassifier, MemoryStore, Policy};
/// use tower::ServiceBuilder;
///
/// let policy = Policy::builder()
///     .failure_rate(0.5)
///     .minimum_calls(20)
///     .window(Duration::from_secs(10))
///     .break_duration(Duration::from_secs(5))
///     .build()?;
/// let layer = DistributedCircuitBreakerLayer::new("payments", policy, MemoryStore::new())?
///     .classifier(HttpClassifier::default())
///     .call_timeout(Duration::from_secs(2));
/// let service = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|_req: http::Request<()>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(()))
///     });
/// # drop(service);
/// # Ok::<(), distributed_circuit_breaker::ConfigError>(())
/// ```
pub struct DistributedCircuitBreakerLayer<C = ErrorsAsFailures, T = Untimed> {
    pub(crate) shared: Arc<Shared<C>>,
    lanes: Lanes<C>,
    timer: PhantomData<fn() -> T>,
}

/// What every service built by one layer shares. Aligned so that the
/// reference count of one copy (see [`Lanes`]) never shares a cache line
/// with another copy's fields.
#[repr(align(64))]
pub(crate) struct Shared<C> {
    pub(crate) replica: Arc<Replica>,
    pub(crate) classifier: Arc<C>,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) rejection: Rejection,
}

impl<C> Shared<C> {
    /// Another copy of the same breaker, classifier and settings.
    fn copy(&self) -> Self {
        Shared {
            replica: self.replica.clone(),
            classifier: self.classifier.clone(),
            call_timeout: self.call_timeout,
            rejection: self.rejection,
        }
    }

    /// Whether a call's duration must be measured.
    #[inline(always)]
    pub(crate) fn timed<Res, Err>(&self) -> bool
    where
        C: Classifier<Res, Err>,
    {
        self.replica.policy.slow_call_duration().is_some() || self.classifier.uses_elapsed()
    }
}

impl DistributedCircuitBreakerLayer {
    /// A layer for the breaker `name` under `policy`, sharing state through `store`.
    ///
    /// Fails if `name` is not a valid [`BreakerName`].
    pub fn new(
        name: impl AsRef<str>,
        policy: Policy,
        store: impl Store,
    ) -> Result<Self, ConfigError> {
        let name = BreakerName::new(name)?;
        Ok(Self::with_store(name, policy, Arc::new(store)))
    }

    /// Like [`new`](Self::new), for a store already behind an `Arc<dyn Store>`.
    pub fn with_store(name: BreakerName, policy: Policy, store: Arc<dyn Store>) -> Self {
        Self::from_shared(Shared {
            replica: Replica::spawn(
                name,
                policy,
                Hub::new(store),
                crate::sync::dispatch::Dispatcher::silent(),
            ),
            classifier: Arc::new(ErrorsAsFailures),
            call_timeout: None,
            rejection: Rejection::Fail,
        })
    }
}

impl<C, T> DistributedCircuitBreakerLayer<C, T> {
    /// Classifies results with `classifier` instead.
    pub fn classifier<C2>(self, classifier: C2) -> DistributedCircuitBreakerLayer<C2, T> {
        DistributedCircuitBreakerLayer::from_shared(Shared {
            replica: self.shared.replica.clone(),
            classifier: Arc::new(classifier),
            call_timeout: self.shared.call_timeout,
            rejection: self.shared.rejection,
        })
    }

    /// Fails a call that takes longer than `timeout` with
    /// [`CallTimeout`](crate::CallTimeout) and counts it as a failure.
    ///
    /// The timer lives in the response future (no allocation) and is armed
    /// only if the inner future is not ready when first polled: a call that
    /// answers at once never touches tokio's timer. It counts from the call
    /// when the call's duration is measured anyway (slow-call rule, or a
    /// classifier that uses it), else from that first poll, which for a
    /// response future polled at once is the same moment.
    pub fn call_timeout(self, timeout: Duration) -> DistributedCircuitBreakerLayer<C, Timed>
    where
        C: Clone,
    {
        let mut shared = self.shared.copy();
        shared.call_timeout = Some(timeout);
        DistributedCircuitBreakerLayer::from_shared(shared)
    }

    /// Chooses how calls are turned away while the breaker is open.
    pub fn rejection(self, rejection: Rejection) -> Self
    where
        C: Clone,
    {
        self.map_shared(|s| s.rejection = rejection)
    }

    /// Chooses what the breaker does while its store is unreachable (default:
    /// [`StoreFailure::Local`], decide alone). Applies to every clone.
    pub fn on_store_failure(self, mode: StoreFailure) -> Self {
        self.shared.replica.degraded.set_mode(mode);
        self
    }

    /// Tells `listener` what happens to the breaker: transitions (this
    /// process's, and the fleet's once per fleet), rejection counts, probes,
    /// store trouble, operator commands; see [`Event`](crate::events::Event).
    ///
    /// The listener belongs to the breaker, so it replaces the one of every
    /// clone of this layer and of the services built from it. A keyed
    /// layer's breakers hear it too (its listener is called with each key's
    /// breaker name).
    ///
    /// ```
    /// use distributed_circuit_breaker::events::Event;
    /// use distributed_circuit_breaker::{BreakerName, DistributedCircuitBreakerLayer, MemoryStore, Policy};
    ///
    /// let layer = DistributedCircuitBreakerLayer::new("search", Policy::default(), MemoryStore::new())?
    ///     .on_event(|name: &BreakerName, event: &Event| {
    ///         if let Event::FleetTransition(t) = event {
    ///             eprintln!("{name} went {} -> {}", t.from, t.to);
    ///         }
    ///     });
    /// # drop(layer);
    /// # Ok::<(), distributed_circuit_breaker::ConfigError>(())
    /// ```
    pub fn on_event(self, listener: impl crate::events::Listener) -> Self {
        self.shared
            .replica
            .observer
            .set_listener(Arc::new(listener));
        self
    }

    /// Checks the dependency actively while the breaker is open: every
    /// `interval`, one process of the fleet (whichever holds the turn in the
    /// store; a holder that dies hands it on within three intervals) runs
    /// `check`. A check that answers `true` moves the breaker to half-open
    /// at once, ending the break early; probes then decide as after any
    /// break (`successes_to_close` of them close it). One that answers
    /// `false`, or not within `interval`, keeps the breaker open until the
    /// next check at least.
    ///
    /// Needs a tokio runtime when called. Fails if `interval` is under 10 ms
    /// or over [`MAX_DURATION`](crate::MAX_DURATION), or if the breaker has
    /// a health check already. A keyed layer's breakers have none: the check
    /// is the base breaker's.
    ///
    /// ```
    /// use std::time::Duration;
    /// use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, MemoryStore, Policy};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distributed_circuit_breaker::ConfigError> {
    /// let layer = DistributedCircuitBreakerLayer::new("inventory", Policy::default(), MemoryStore::new())?
    ///     .health_check(Duration::from_secs(2), || async {
    ///         // e.g. GET http://inventory/healthz answered 200
    ///         true
    ///     })?;
    /// # drop(layer); Ok(()) }
    /// ```
    pub fn health_check<F, Fut>(self, interval: Duration, check: F) -> Result<Self, ConfigError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        if interval < Duration::from_millis(10) || interval > crate::MAX_DURATION {
            return Err(ConfigError::new(
                "health_check.interval",
                format!(
                    "must be between 10ms and {:?}, got {interval:?}",
                    crate::MAX_DURATION
                ),
            ));
        }
        if !self.shared.replica.claim_health_check() {
            return Err(ConfigError::new(
                "health_check",
                "this breaker has a health check already (one per breaker)",
            ));
        }
        let check: crate::sync::health::CheckFn = Arc::new(move || Box::pin(check()));
        crate::sync::health::start(&self.shared.replica, check, interval);
        Ok(self)
    }

    /// A handle to inspect and command the breaker.
    pub fn breaker(&self) -> Breaker {
        Breaker::new(self.shared.replica.clone())
    }

    fn map_shared(self, f: impl FnOnce(&mut Shared<C>)) -> Self
    where
        C: Clone,
    {
        let mut shared = self.shared.copy();
        f(&mut shared);
        Self::from_shared(shared)
    }

    fn from_shared(shared: Shared<C>) -> Self {
        let shared = Arc::new(shared);
        Self {
            lanes: Lanes::new(&shared),
            shared,
            timer: PhantomData,
        }
    }
}

impl<C, T> Clone for DistributedCircuitBreakerLayer<C, T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            lanes: self.lanes.clone(),
            timer: PhantomData,
        }
    }
}

impl<C, T> fmt::Debug for DistributedCircuitBreakerLayer<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedCircuitBreakerLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<C> fmt::Debug for Shared<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.replica.name)
            .field("snapshot", &self.replica.current())
            .field("call_timeout", &self.call_timeout)
            .field("rejection", &self.rejection)
            .finish_non_exhaustive()
    }
}

impl<S, C, T> Layer<S> for DistributedCircuitBreakerLayer<C, T> {
    type Service = DistributedCircuitBreaker<S, C, T>;

    fn layer(&self, inner: S) -> Self::Service {
        DistributedCircuitBreaker::new(inner, self.lanes.clone())
    }
}

/// Copies of a layer's [`Shared`], one per thread lane: a call's response
/// future holds a reference to its thread's copy, so threads calling one
/// breaker each count references on their own cache line.
pub(crate) struct Lanes<C>(Arc<[Arc<Shared<C>>]>);

impl<C> Lanes<C> {
    fn new(shared: &Arc<Shared<C>>) -> Self {
        let copies = (0..crate::lanes::count())
            .map(|lane| {
                if lane == 0 {
                    shared.clone()
                } else {
                    Arc::new(shared.copy())
                }
            })
            .collect();
        Lanes(copies)
    }

    /// The layer's settings and breaker (any copy will do).
    #[inline(always)]
    pub(crate) fn shared(&self) -> &Arc<Shared<C>> {
        // Never empty: `new` makes at least one copy (`lanes::count() >= 1`).
        &self.0[0]
    }

    /// This thread's copy.
    #[inline(always)]
    pub(crate) fn pick(&self) -> &Arc<Shared<C>> {
        let mask = self.0.len() - 1;
        // In bounds: the length is a power of two and `mask` one less.
        &self.0[crate::lanes::current() & mask]
    }
}

impl<C> Clone for Lanes<C> {
    fn clone(&self) -> Self {
        Lanes(self.0.clone())
    }
}
