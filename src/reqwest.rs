//! Breakers for reqwest clients, as a `reqwest-middleware` middleware.
//!
//! ```
//! use distributed_circuit_breaker::{reqwest::ReqwestCircuitBreaker, DistributedCircuitBreakerLayer, MemoryStore, Policy};
//!
//! let breakers = DistributedCircuitBreakerLayer::new("client", Policy::default(), MemoryStore::new())?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(ReqwestCircuitBreaker::per_host(breakers))
//!     .build();
//! # drop(client);
//! # Ok::<(), distributed_circuit_breaker::ConfigError>(())
//! ```
//!
//! A rejected request fails with `reqwest_middleware::Error::Middleware`
//! holding the [`CircuitOpen`](crate::CircuitOpen) (`error.downcast_ref::<CircuitOpen>()`).

use std::fmt;
use std::sync::Arc;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};

use crate::{Breaker, ByAuthority, DistributedCircuitBreakerLayer, HttpClassifier};

type PerKey = Arc<dyn Fn(&str) -> Breaker + Send + Sync>;

/// The middleware: one breaker for every request, or one per host.
/// Responses are classified by an [`HttpClassifier`] (5xx, 429 and transport
/// errors fail by default).
#[derive(Clone)]
pub struct ReqwestCircuitBreaker {
    base: Breaker,
    per_host: Option<PerKey>,
    classifier: HttpClassifier,
}

impl ReqwestCircuitBreaker {
    /// Every request goes through the layer's one breaker.
    pub fn new<C>(layer: DistributedCircuitBreakerLayer<C>) -> Self {
        Self {
            base: layer.breaker(),
            per_host: None,
            classifier: HttpClassifier::default(),
        }
    }

    /// One breaker per target `host:port`, named `{name}/{host:port}`, in the
    /// layer's bounded registry.
    pub fn per_host<C: Clone + Send + Sync + 'static>(
        layer: DistributedCircuitBreakerLayer<C>,
    ) -> Self {
        let base = layer.breaker();
        let keyed = layer.key_by(ByAuthority);
        Self {
            base,
            per_host: Some(Arc::new(move |host| keyed.breaker_for(host))),
            classifier: HttpClassifier::default(),
        }
    }

    /// Classifies with `classifier` instead.
    pub fn classifier(mut self, classifier: HttpClassifier) -> Self {
        self.classifier = classifier;
        self
    }

    fn breaker_for(&self, request: &Request) -> Breaker {
        let url = request.url();
        match (&self.per_host, url.host_str()) {
            (Some(per_host), Some(host)) => match url.port_or_known_default() {
                Some(port) => per_host(&format!("{host}:{port}")),
                None => per_host(host),
            },
            _ => self.base.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Middleware for ReqwestCircuitBreaker {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let breaker = self.breaker_for(&request);
        let permit = breaker
            .admit()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let result = next.run(request, extensions).await;
        let outcome = match &result {
            Ok(response) => self.classifier.classify_status(response.status()),
            Err(_) => self.classifier.classify_error(),
        };
        permit.finish(outcome);
        result
    }
}

impl fmt::Debug for ReqwestCircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestCircuitBreaker")
            .field("base", &self.base)
            .field("per_host", &self.per_host.is_some())
            .field("classifier", &self.classifier)
            .finish()
    }
}
