//! The JSON routes: list, show, and the operator's actions.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as Extract};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri};
use serde_json::{json, Value};

use super::{auth, query, Shared};
use crate::ops::{self, Action, ApplyError};
use crate::store::{BreakerInfo, BreakerName, ForceNote, StoreError, StoreErrorKind};

/// The actor of a command that names none.
const DEFAULT_ACTOR: &str = "admin-api";

/// A JSON response.
pub(super) fn json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json(status, &json!({ "error": message.to_string() }))
}

/// A request refused before anything was done: a status and why.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn store_error(e: &crate::store::StoreError) -> Response {
    let status = match e.kind() {
        StoreErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    error(status, e)
}

pub(super) async fn list(Extract(shared): Extract<Arc<Shared>>, uri: Uri) -> Response {
    let prefix = query::param(uri.query(), "prefix");
    let wanted = match query::param(uri.query(), "state").filter(|s| !s.is_empty()) {
        None => None,
        Some(word) => match crate::ops::states_matching(&word) {
            Some(states) => Some(states),
            None => return error(StatusCode::BAD_REQUEST, format!("unknown state `{word}`")),
        },
    };
    match list_all(&shared).await {
        // Every dashboard asks for all of them: serialized once per read.
        Ok(all) if prefix.is_none() && wanted.is_none() => {
            let body = all.json.get_or_init(|| {
                let listed: Vec<Value> = all.infos.iter().map(ops::info_json).collect();
                Bytes::from(Value::Array(listed).to_string())
            });
            (
                StatusCode::OK,
                [(http::header::CONTENT_TYPE, "application/json")],
                body.clone(),
            )
                .into_response()
        }
        Ok(all) => {
            let listed: Vec<Value> = all
                .infos
                .iter()
                .filter(|i| prefix.as_deref().is_none_or(|p| i.name.starts_with(p)))
                .filter(|i| wanted.as_ref().is_none_or(|w| w.contains(&i.state)))
                .map(ops::info_json)
                .collect();
            json(StatusCode::OK, &Value::Array(listed))
        }
        Err(e) => store_error(&e),
    }
}

/// A read of every breaker (or its failure), and when it began.
#[derive(Debug)]
pub(super) struct Listed {
    began: tokio::time::Instant,
    answer: Result<Arc<Listing>, StoreError>,
}

/// Every breaker, and their JSON once a request wanted all of them.
#[derive(Debug)]
struct Listing {
    infos: Vec<BreakerInfo>,
    json: std::sync::OnceLock<Bytes>,
}

/// Every breaker, read after this call began: concurrent callers share one
/// read of the store (one at a time), failures included.
async fn list_all(shared: &Shared) -> Result<Arc<Listing>, StoreError> {
    let arrived = tokio::time::Instant::now();
    let mut last = shared.last_list.lock().await;
    if let Some(listed) = last.as_ref().filter(|l| l.began >= arrived) {
        return listed.answer.clone();
    }
    let began = tokio::time::Instant::now();
    let answer = shared.store.list_info().await.map(|infos| {
        Arc::new(Listing {
            infos,
            json: std::sync::OnceLock::new(),
        })
    });
    *last = Some(Listed {
        began,
        answer: answer.clone(),
    });
    answer
}

fn breaker_name(text: &str) -> Result<BreakerName, Refusal> {
    BreakerName::new(text).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))
}

pub(super) async fn show(
    Extract(shared): Extract<Arc<Shared>>,
    Path(name): Path<String>,
) -> Response {
    let name = match breaker_name(&name) {
        Ok(name) => name,
        Err(refusal) => return refusal.into_response(),
    };
    match shared.store.info(&name).await {
        Ok(Some(info)) => json(StatusCode::OK, &ops::info_json(&info)),
        Ok(None) => error(StatusCode::NOT_FOUND, ApplyError::Unknown(name)),
        Err(e) => store_error(&e),
    }
}

/// What a command's body may say.
struct Body {
    duration: Option<std::time::Duration>,
    note: ForceNote,
    create: bool,
}

/// The fields a POST body may have.
const BODY_FIELDS: [&str; 4] = ["for", "reason", "actor", "create"];

fn body(bytes: &[u8]) -> Result<Body, Refusal> {
    let bad = |m: String| Refusal(StatusCode::BAD_REQUEST, m);
    let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON body: {e}")))?
    };
    let Value::Object(fields) = value else {
        return Err(bad("the body must be a JSON object".into()));
    };
    // A typo (`duration` for `for`) must not force a breaker until reset.
    if let Some(unknown) = fields.keys().find(|k| !BODY_FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown field `{unknown}`: the body takes `for`, `reason`, `actor` and `create`"
        )));
    }
    let text = |key: &str| match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("`{key}` must be a string"))),
    };
    let duration = text("for")?
        .map(|d| ops::parse_duration(&d))
        .transpose()
        .map_err(bad)?;
    let mut note = ForceNote::new().actor(text("actor")?.unwrap_or_else(|| DEFAULT_ACTOR.into()));
    if let Some(reason) = text("reason")? {
        note = note.reason(reason);
    }
    let create = match fields.get("create") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("`create` must be true or false".into())),
    };
    Ok(Body {
        duration,
        note,
        create,
    })
}

pub(super) async fn act(
    Extract(shared): Extract<Arc<Shared>>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no action `{action}`: open, close, disable or reset"),
        );
    };
    let config = &shared.config;
    if !config.mutable() {
        let why = if config.read_only {
            "the admin API is read-only"
        } else {
            "no admin token is configured: the admin API changes nothing"
        };
        return error(StatusCode::FORBIDDEN, why);
    }
    let authorized = config
        .token
        .as_ref()
        .is_some_and(|token| auth::authorized(&headers, token));
    if !authorized {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "a valid `Authorization: Bearer <token>` is needed to change breakers",
        );
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let (name, body) = match breaker_name(&name).and_then(|n| Ok((n, body(&bytes)?))) {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal.into_response(),
    };
    let store = &*shared.store;
    match ops::apply(store, &name, action, body.duration, &body.note, body.create).await {
        Ok(info) => {
            tracing::info!(
                breaker = %name,
                action = %action,
                actor = body.note.actor_str().unwrap_or_default(),
                reason = body.note.reason_str().unwrap_or_default(),
                "breaker changed through the admin API"
            );
            json(StatusCode::OK, &ops::info_json(&info))
        }
        Err(e @ ApplyError::Unknown(_)) => error(
            StatusCode::NOT_FOUND,
            format!("{e}; send \"create\": true to force it anyway"),
        ),
        Err(ApplyError::Store(e)) => store_error(&e),
    }
}
