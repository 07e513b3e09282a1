//! An admin API and a live dashboard for a fleet's breakers: an axum
//! [`axum::Router`] to mount in your own app (feature `admin`).
//!
//! | route | what |
//! | --- | --- |
//! | `GET /` | the dashboard: one self-contained page, live |
//! | `GET /breakers` | every breaker as JSON (`?prefix=..&state=..`) |
//! | `GET /breakers/{name}` | one breaker, 404 if the store holds no record |
//! | `POST /breakers/{name}/open` | also `close`, `disable`, `reset`; JSON body `{"for": "10m", "reason": "..", "actor": "..", "create": false}`, every field optional, any other field refused (400) |
//! | `GET /events` | transitions as server-sent events (`transition`, `resync`) |
//!
//! Mutations need `Authorization: Bearer <token>` matching the configured
//! token (compared in constant time): 401 without it or with another, 403
//! when no token is configured or the API is read-only. Reads need none:
//! mount the router where only operators reach it.
//!
//! Reading every breaker is one `list_info` of the store however many
//! dashboards ask at once: requests that arrive while a read is under way
//! get the next one (never one that began before they arrived).
//!
//! ```
//! use distributed_circuit_breaker::admin::{self, AdminConfig};
//! use distributed_circuit_breaker::MemoryStore;
//!
//! let store = MemoryStore::new(); // or your RedisStore
//! let app: axum::Router = axum::Router::new()
//!     .nest("/admin/breakers", admin::router(store, AdminConfig::new().token("s3cret")));
//! ```
//!
//! A breaker's JSON is [`ops::info_json`](crate::ops::info_json); a
//! transition's, [`ops::transition_json`](crate::ops::transition_json).

mod auth;
mod config;
mod dashboard;
mod events;
mod handlers;
mod query;

pub use config::AdminConfig;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::store::Store;

/// What every handler shares.
#[derive(Debug)]
struct Shared {
    store: Arc<dyn Store>,
    config: AdminConfig,
    /// The last read of every breaker and when it began: requests that
    /// arrived before it began share it (dashboards re-read together).
    last_list: tokio::sync::Mutex<Option<handlers::Listed>>,
}

/// The admin API and dashboard over `store`, configured by `config`.
pub fn router<S: Store>(store: S, config: AdminConfig) -> Router {
    let shared = Arc::new(Shared {
        store: Arc::new(store),
        config,
        last_list: tokio::sync::Mutex::new(None),
    });
    Router::new()
        .route("/", get(dashboard::page))
        .route("/breakers", get(handlers::list))
        .route("/breakers/{name}", get(handlers::show))
        .route("/breakers/{name}/{action}", post(handlers::act))
        .route("/events", get(events::stream))
        .with_state(shared)
}
