use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::registry::Registry;
use super::KeyedCircuitBreaker;
use crate::layer::Shared;
use crate::timer::Untimed;
use crate::{Breaker, ConfigError, DistributedCircuitBreakerLayer, PolicySet};

/// The default cap on breakers per keyed layer.
const DEFAULT_MAX_BREAKERS: usize = 1024;
/// The default time after which an unused keyed breaker is dropped.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Puts one breaker per request key in front of a service; built by
/// [`DistributedCircuitBreakerLayer::key_by`].
///
/// ```
/// use std::time::Duration;
/// use distributed_circuit_breaker::{
///     ByAuthority, DistributedCircuitBreakerLayer, HttpClassifier, MemoryStore, Policy, PolicySet,
/// };
///
/// let strict = Policy::builder().consecutive_failures(2).build()?;
/// let layer = DistributedCircuitBreakerLayer::new("downstream", Policy::default(), MemoryStore::new())?
///     .classifier(HttpClassifier::default())
///     .key_by(ByAuthority)
///     .policies(PolicySet::new(Policy::default()).with("payments.internal*", strict))
///     .limits(256, Duration::from_secs(300))?;
/// # drop(layer);
/// # Ok::<(), distributed_circuit_breaker::ConfigError>(())
/// ```
pub struct KeyedCircuitBreakerLayer<K, C, T = Untimed> {
    registry: Arc<Registry<C>>,
    extractor: K,
    timer: PhantomData<fn() -> T>,
}

impl<C: Clone, T> DistributedCircuitBreakerLayer<C, T> {
    /// One breaker per key that `extractor` reads from each request, named
    /// `{name}/{key}`; requests without a key use this layer's breaker. Every
    /// key gets this layer's policy until [`policies`](KeyedCircuitBreakerLayer::policies)
    /// says otherwise; classifier, call timeout and store-failure mode carry over.
    pub fn key_by<K>(self, extractor: K) -> KeyedCircuitBreakerLayer<K, C, T> {
        let store = self.shared.replica.store.clone();
        let policies = PolicySet::new(self.shared.replica.policy.clone());
        KeyedCircuitBreakerLayer {
            registry: Arc::new(Registry::new(
                self.shared,
                policies,
                store,
                DEFAULT_MAX_BREAKERS,
                DEFAULT_IDLE_TIMEOUT,
            )),
            extractor,
            timer: PhantomData,
        }
    }
}

impl<K, C: Clone, T> KeyedCircuitBreakerLayer<K, C, T> {
    /// Policies by key pattern (the default for keys without an override).
    pub fn policies(self, policies: impl Into<PolicySet>) -> Self {
        let (max, idle) = (self.registry.max_breakers, self.registry.idle_timeout);
        self.rebuild(policies.into(), max, idle)
    }

    /// At most `max_breakers` breakers (default 1024), each dropped once
    /// unused for `idle_timeout` (default 10 min; checked as new keys
    /// arrive, at most every half timeout). Eviction is O(1) and
    /// scan-resistant (quick_cache's S3-FIFO): a flood of one-off keys
    /// evicts one-off keys, while keys in steady use stay.
    pub fn limits(self, max_breakers: usize, idle_timeout: Duration) -> Result<Self, ConfigError> {
        if max_breakers == 0 {
            return Err(ConfigError::new("max_breakers", "must be at least 1"));
        }
        if idle_timeout < Duration::from_millis(1) {
            return Err(ConfigError::new("idle_timeout", "must be at least 1ms"));
        }
        let policies = self.registry.policies.clone();
        Ok(self.rebuild(policies, max_breakers, idle_timeout))
    }

    /// The breaker of `key`, if it exists now.
    pub fn breaker(&self, key: &str) -> Option<Breaker> {
        let shared = self.registry.find(key)?;
        Some(Breaker::new(shared.replica.clone()))
    }

    /// The breaker of `key`, created now if it does not exist (for callers
    /// outside tower, with [`Breaker::admit`]).
    pub fn breaker_for(&self, key: &str) -> Breaker {
        let shared = self.registry.get(Some(std::borrow::Cow::Borrowed(key)));
        Breaker::new(shared.replica.clone())
    }

    /// The breaker of requests without a key.
    pub fn base_breaker(&self) -> Breaker {
        Breaker::new(self.registry.base.replica.clone())
    }

    /// How many keyed breakers exist now.
    pub fn breakers(&self) -> usize {
        self.registry.len()
    }

    fn rebuild(self, policies: PolicySet, max: usize, idle: Duration) -> Self {
        let base: Arc<Shared<C>> = self.registry.base.clone();
        let store = self.registry.store.clone();
        KeyedCircuitBreakerLayer {
            registry: Arc::new(Registry::new(base, policies, store, max, idle)),
            extractor: self.extractor,
            timer: PhantomData,
        }
    }
}

impl<K: Clone, C, T> Clone for KeyedCircuitBreakerLayer<K, C, T> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            extractor: self.extractor.clone(),
            timer: PhantomData,
        }
    }
}

impl<K: fmt::Debug, C, T> fmt::Debug for KeyedCircuitBreakerLayer<K, C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("base", &self.registry.base.replica.name)
            .field("extractor", &self.extractor)
            .field("max_breakers", &self.registry.max_breakers)
            .field("idle_timeout", &self.registry.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl<S, K: Clone, C, T> Layer<S> for KeyedCircuitBreakerLayer<K, C, T> {
    type Service = KeyedCircuitBreaker<S, K, C, T>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker::new(inner, self.registry.clone(), self.extractor.clone())
    }
}
