//! Answering for an open dependency in axum: `503 Service Unavailable` with a
//! `Retry-After` header.
//!
//! ```
//! use axum::{error_handling::HandleErrorLayer, routing::get, Router};
//! use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, MemoryStore, Policy};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), distributed_circuit_breaker::ConfigError> {
//! let breaker = DistributedCircuitBreakerLayer::new("reports", Policy::default(), MemoryStore::new())?;
//! let app: Router = Router::new().route(
//!     "/reports",
//!     get(|| async { "fresh report" }).layer(
//!         ServiceBuilder::new()
//!             .layer(HandleErrorLayer::new(distributed_circuit_breaker::axum::handle_error))
//!             .layer(breaker),
//!     ),
//! );
//! # drop(app);
//! # Ok(())
//! # }
//! ```

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::{BoxError, BreakerError, CircuitOpen};

impl IntoResponse for CircuitOpen {
    fn into_response(self) -> Response {
        self.http_response().into_response()
    }
}

/// An error handler for axum's `HandleErrorLayer`: `503` with `Retry-After` for
/// an open circuit, `504` for a call timeout, `500` for anything else.
///
/// Bodies never echo an inner error (it may hold internal addresses or
/// credentials); the error is logged with `tracing` instead. The breaker's name
/// is not in the body either (see [`CircuitOpen::http_response_with_name`]).
pub async fn handle_error(error: BoxError) -> Response {
    match BreakerError::from(error) {
        BreakerError::Open(open) => open.into_response(),
        BreakerError::Timeout(timeout) => {
            tracing::warn!(error = %timeout, "call timed out");
            (StatusCode::GATEWAY_TIMEOUT, "upstream timed out").into_response()
        }
        BreakerError::Inner(error) => {
            tracing::error!(%error, "inner service failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}
