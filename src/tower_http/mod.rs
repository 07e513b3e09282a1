//! tower-http's classifiers as breaker classifiers, including outcomes known
//! only at the end of the response stream (gRPC's status in trailers).
//!
//! [`DistributedCircuitBreakerLayer::classify_with`] takes any tower-http
//! [`MakeClassifier`] (`ServerErrorsAsFailures::make_classifier()`,
//! `GrpcErrorsAsFailures::make_classifier()`, your own). Responses it can
//! judge from their head count at once; for the others
//! ([`ClassifiedResponse::RequiresEos`](tower_http::classify::ClassifiedResponse))
//! the body is wrapped and the outcome counts when the stream ends, fails, or
//! (as ignored) when the body is dropped first.
//!
//! ```
//! use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, MemoryStore, Policy};
//! use tower_http::classify::GrpcErrorsAsFailures;
//!
//! let layer = DistributedCircuitBreakerLayer::new("grpc-backend", Policy::default(), MemoryStore::new())?
//!     .classify_with(GrpcErrorsAsFailures::make_classifier());
//! # drop(layer);
//! # Ok::<(), distributed_circuit_breaker::ConfigError>(())
//! ```

mod body;
mod classify;

pub use self::body::{ClassifiedBody, Verdict};
pub use self::classify::{Classify, ClassifyFuture, ClassifyWithLayer, TowerHttpClassifier};

use tower_http::classify::MakeClassifier;

use crate::DistributedCircuitBreakerLayer;

impl<C> DistributedCircuitBreakerLayer<C> {
    /// Classifies with a tower-http [`MakeClassifier`] instead; the service's
    /// responses get a [`ClassifiedBody`].
    pub fn classify_with<M: MakeClassifier>(self, make: M) -> ClassifyWithLayer<M> {
        ClassifyWithLayer::new(self.classifier(TowerHttpClassifier), make)
    }
}
