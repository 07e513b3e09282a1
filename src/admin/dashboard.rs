//! `GET /`: the dashboard, one self-contained page (no build step, no CDN).

use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("dashboard.html");

pub(super) async fn page() -> Response {
    (
        [
            (http::header::CACHE_CONTROL, "no-cache"),
            // Everything is inline: allow nothing from elsewhere.
            (
                http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(PAGE),
    )
        .into_response()
}
