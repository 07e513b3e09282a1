//! One breaker per key: per downstream host, per route, per tenant.
//!
//! [`DistributedCircuitBreakerLayer::key_by`](crate::DistributedCircuitBreakerLayer::key_by)
//! turns a layer into a [`KeyedCircuitBreakerLayer`]: each request's
//! [`KeyExtractor`](crate::KeyExtractor) picks its breaker, created on first
//! use with the policy a [`PolicySet`](crate::PolicySet) gives its key, and
//! kept in a bounded registry.
//!
//! The breaker is only known once the request is, so a keyed service is ready
//! when its inner service is, and a call that needs a half-open permit asks
//! for it in its response future before calling the inner service (which is
//! why the inner service must be `Clone`, as tower clients are). Rejection is
//! always by failing the call ([`Rejection::Fail`](crate::Rejection::Fail)).

mod future;
mod layer;
mod registry;
mod service;

pub use self::future::KeyedResponseFuture;
pub use self::layer::KeyedCircuitBreakerLayer;
pub use self::service::KeyedCircuitBreaker;
