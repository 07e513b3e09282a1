//! A Tower circuit breaker whose state is shared by a whole fleet.
//!
//! In-process breakers keep their state in one process: with ten replicas of a
//! service, each replica must fail on its own before it stops calling a sick
//! dependency, so the dependency takes ten times the failed calls and ten times
//! the probes. Here every replica of a breaker shares one state in a [`Store`]
//! ([`MemoryStore`] in one process; Redis for a fleet), while a call through a
//! closed breaker still costs only a few atomic operations: outcomes are
//! counted locally and handed to the store in batches, and transitions come
//! back as announcements.
//!
//! ```
//! use std::time::Duration;
//! use distributed_circuit_breaker::{
//!     BreakerError, DistributedCircuitBreakerLayer, MemoryStore, Policy,
//! };
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = Policy::builder()
//!     .consecutive_failures(3)
//!     .break_duration(Duration::from_secs(5))
//!     .build()?;
//! let layer = DistributedCircuitBreakerLayer::new("flaky", policy, MemoryStore::new())?;
//! let breaker = layer.breaker();
//! let service = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_: ()| async { Err::<(), _>("dependency down") }));
//!
//! for _ in 0..3 {
//!     let _ = service.clone().oneshot(()).await; // three failures...
//! }
//! breaker.sync().await; // (the background task does this within a few ms)
//! let err = service.clone().oneshot(()).await.unwrap_err();
//! assert!(matches!(BreakerError::from(err), BreakerError::Open(_))); // ...and it is open
//! # Ok(())
//! # }
//! ```
//!
//! The pieces: a [`Policy`] says when to trip and how to recover; a
//! [`Classifier`] turns each result into an [`Outcome`]; a [`Store`] holds the
//! shared state; [`DistributedCircuitBreakerLayer`] puts it all in front of any
//! `tower::Service`.
//!
//! - **Sharing**: [`MemoryStore`] shares breakers within a process; `RedisStore`
//!   (feature `redis`, on by default; `redis-tls` for `rediss://`) shares them
//!   across a fleet, on one Redis or a Redis Cluster.
//! - **Local first**: every instance also judges its own outcomes at once and
//!   opens itself on its own trip (never later than a private breaker); a
//!   trip anywhere opens the fleet, or only once
//!   [`fleet_quorum`](PolicyBuilder::fleet_quorum) instances tripped.
//! - **Keys**: [`DistributedCircuitBreakerLayer::key_by`] gives one breaker per
//!   downstream host ([`ByAuthority`]), route (`ByMatchedPath`, feature `axum`),
//!   header ([`ByHeader`]) or closure, with per-key policies ([`PolicySet`],
//!   loadable from configuration with the `serde` feature).
//! - **Answers**: [`CircuitOpen::http_response`] (503 with `Retry-After`),
//!   `axum::handle_error` (feature `axum`), or a fallback with [`OnOpenLayer`].
//! - **Store trouble**: [`StoreFailure`] chooses between deciding locally (the
//!   default), failing open or failing closed; requests never wait on the
//!   store longer than the policy's `store_timeout`.
//! - **Other clients**: [`Breaker::admit`] for any caller; a `reqwest-middleware`
//!   middleware (feature `reqwest`); tower-http classifiers, with gRPC outcomes
//!   read from trailers (feature `tower-http`).
//! - **Operating**: [`Store::force_noted`] keeps who forced a breaker and why;
//!   the `dcb` command line (feature `cli`) and an axum admin API with a live
//!   dashboard (feature `admin`, module `admin`) list, force and watch a
//!   fleet's breakers.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(
    clippy::all,
    clippy::todo,
    clippy::dbg_macro,
    clippy::await_holding_lock,
    rust_2018_idioms,
    missing_docs,
    missing_debug_implementations
)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![deny(unreachable_pub)]
#![forbid(unsafe_code)]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod breaker;
mod classify;
#[cfg(feature = "serde")]
mod config;
mod config_error;
mod deferred;
mod error;
pub mod events;
mod future;
mod key;
pub mod keyed;
mod lanes;
mod layer;
mod machine;
#[cfg(feature = "metrics")]
mod metrics;
mod on_open;
#[cfg(any(feature = "cli", feature = "admin"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "cli", feature = "admin"))))]
pub mod ops;
mod policy;
mod policy_set;
mod rand;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
mod service;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod sim;
mod state;
pub mod store;
mod sync;
pub mod timer;
#[cfg(feature = "tower-http")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower-http")))]
pub mod tower_http;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

pub use breaker::{Breaker, Permit};
pub use classify::{Classifier, ErrorsAsFailures, HttpClassifier, Outcome};
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use config::{PolicyConfig, PolicySetConfig};
pub use config_error::ConfigError;
pub use deferred::Deferred;
pub use error::{BoxError, BreakerError, CallTimeout, CircuitOpen};
pub use future::ResponseFuture;
#[cfg(feature = "axum")]
pub use key::ByMatchedPath;
pub use key::{ByAuthority, ByHeader, KeyExtractor};
pub use keyed::{KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use layer::{DistributedCircuitBreakerLayer, Rejection};
pub use on_open::{OnOpen, OnOpenFuture, OnOpenLayer};
pub use policy::{Policy, PolicyBuilder, MAX_DURATION, MAX_HALF_OPEN_PERMITS, MAX_WINDOW_BUCKETS};
pub use policy_set::PolicySet;
pub use service::DistributedCircuitBreaker;
pub use state::{Snapshot, State, StoreEvent, Transition};
pub use store::{BreakerInfo, BreakerName, Force, ForceNote, MemoryStore, Store};
#[cfg(feature = "redis")]
pub use store::{RedisStore, RedisStoreBuilder};
pub use sync::StoreFailure;

/// Compiles the README's examples as doc tests.
#[cfg(all(
    doctest,
    feature = "admin",
    feature = "axum",
    feature = "redis",
    feature = "serde",
    feature = "reqwest",
    feature = "tower-http"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
