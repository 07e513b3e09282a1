//! `GET /events`: the store's transitions as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as Extract;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use super::Shared;
use crate::ops;
use crate::StoreEvent;

/// A comment this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `event: transition` with [`ops::transition_json`] as data; `event:
/// resync` when announcements may have been missed (re-read `/breakers`).
pub(super) async fn stream(Extract(shared): Extract<Arc<Shared>>) -> Response {
    let events = shared.store.subscribe();
    let stream = futures_util::stream::unfold(events, |mut events| async move {
        let event = match tokio::time::timeout(KEEP_ALIVE, events.recv()).await {
            Err(_) => Event::default().comment("keep-alive"),
            Ok(Ok(StoreEvent::Transition(t))) => Event::default()
                .event("transition")
                .data(ops::transition_json(&t).to_string()),
            Ok(Ok(StoreEvent::Resync)) | Ok(Err(RecvError::Lagged(_))) => {
                Event::default().event("resync").data("{}")
            }
            Ok(Err(RecvError::Closed)) => return None,
        };
        Some((Ok::<_, Infallible>(event), events))
    });
    Sse::new(stream).into_response()
}
