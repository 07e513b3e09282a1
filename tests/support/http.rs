//! Real HTTP servers on loopback for end-to-end tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::{extract::State, http::StatusCode, routing::get, Router};
use tokio::net::TcpListener;

/// An axum server that answers 200, or 500 while `down`, counting requests.
#[derive(Clone, Default)]
pub struct FlakyServer {
    pub down: Arc<AtomicBool>,
    pub hits: Arc<AtomicUsize>,
}

impl FlakyServer {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Serves on a free loopback port until the runtime ends.
    pub async fn start(&self) -> SocketAddr {
        async fn handler(State(s): State<FlakyServer>) -> (StatusCode, &'static str) {
            s.hits.fetch_add(1, Ordering::SeqCst);
            if s.down.load(Ordering::SeqCst) {
                (StatusCode::INTERNAL_SERVER_ERROR, "down")
            } else {
                (StatusCode::OK, "up")
            }
        }
        let app = Router::new()
            .route("/", get(handler))
            .with_state(self.clone());
        serve(app).await
    }
}

/// Serves `app` on a free loopback port until the runtime ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
