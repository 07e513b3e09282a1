//! The admin API over real HTTP, in front of a real redis-server whose
//! breakers were made by real traffic.
#![cfg(feature = "admin")]

mod support;

use std::time::Duration;

use distributed_circuit_breaker::admin::{self, AdminConfig};
use distributed_circuit_breaker::{Policy, RedisStore, State, Store, StoreFailure};
use serde_json::Value;
use support::dependency::Dependency;
use support::fleet::{call_until, drive_until, Call, Instance};
use support::http_raw::{open_stream, read_until, request, Reply};
use support::redis::RedisServer;

const TOKEN: &str = "s3cret-token";

/// Serves the admin router over `store` on a free loopback port.
async fn serve(store: RedisStore, config: AdminConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().nest("/admin", admin::router(store, config));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn counting() -> Policy {
    Policy::builder()
        .failure_rate(0.5)
        .minimum_calls(1000)
        .sync_interval(Duration::from_millis(50))
        .store_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
}

/// Two instances of `payments` serving real calls (so the store holds it).
async fn fleet(url: &str) -> Vec<Instance> {
    let dependency = Dependency::new();
    let mut fleet = Vec::new();
    for _ in 0..2 {
        let i = Instance::connect_policy(
            url,
            "payments",
            &dependency,
            StoreFailure::Local,
            counting(),
        )
        .await;
        for _ in 0..5 {
            assert_eq!(i.call().await, Call::Ok);
        }
        assert!(i.breaker.sync().await);
        fleet.push(i);
    }
    fleet
}

async fn post(addr: &str, path: &str, auth: Option<&str>, body: &str) -> Reply {
    let header = auth.map(|a| format!("Bearer {a}"));
    let headers: Vec<(&str, &str)> = header
        .iter()
        .map(|h| ("Authorization", h.as_str()))
        .collect();
    request(addr, "POST", path, &headers, body).await
}

fn json(reply: &Reply) -> Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_token_guarded_mutations() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let fleet = fleet(&redis.url()).await;
    let addr = serve(store.clone(), AdminConfig::new().token(TOKEN)).await;

    let page = request(&addr, "GET", "/admin", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(
        page.head.contains("content-type: text/html"),
        "{}",
        page.head
    );
    assert!(page.body.contains("new EventSource(base + \"events\")"));
    let all = request(&addr, "GET", "/admin/breakers", &[], "").await;
    assert_eq!(all.status, 200);
    assert!(
        all.head.contains("content-type: application/json"),
        "{}",
        all.head
    );
    let all = json(&all);
    assert_eq!(all[0]["name"], "payments");
    assert_eq!(all[0]["calls"], 10);
    let one = request(&addr, "GET", "/admin/breakers/payments", &[], "").await;
    assert_eq!(
        (one.status, json(&one)["state"].as_str()),
        (200, Some("closed"))
    );
    let generation = json(&one)["generation"].clone();
    assert_eq!(
        request(&addr, "GET", "/admin/breakers/nope", &[], "")
            .await
            .status,
        404
    );
    let open = request(&addr, "GET", "/admin/breakers?state=open", &[], "").await;
    assert_eq!(json(&open), serde_json::json!([]));

    // Without the token, or with another: 401, and nothing changes.
    let body = r#"{"for": "10m", "reason": "provider incident", "actor": "alice"}"#;
    for auth in [
        None,
        Some("wrong"),
        Some("s3cret-toke"),
        Some("s3cret-token2"),
        Some(""),
    ] {
        let reply = post(&addr, "/admin/breakers/payments/open", auth, body).await;
        assert_eq!(reply.status, 401, "{auth:?}: {}", reply.body);
        assert!(reply
            .head
            .to_lowercase()
            .contains("www-authenticate: bearer"));
    }
    let basic = request(
        &addr,
        "POST",
        "/admin/breakers/payments/open",
        &[("Authorization", TOKEN)],
        body,
    )
    .await;
    assert_eq!(basic.status, 401, "the scheme is required");
    let after = json(&request(&addr, "GET", "/admin/breakers/payments", &[], "").await);
    assert_eq!(
        (after["state"].as_str(), &after["generation"]),
        (Some("closed"), &generation)
    );
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok);
    }

    // Bad requests are refused before anything changes.
    let bad = post(
        &addr,
        "/admin/breakers/payments/open",
        Some(TOKEN),
        r#"{"for": "10 parsecs"}"#,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(json(&bad)["error"]
        .as_str()
        .unwrap()
        .contains("invalid duration"));
    assert_eq!(
        post(&addr, "/admin/breakers/payments/open", Some(TOKEN), "[1]")
            .await
            .status,
        400
    );
    assert_eq!(
        post(&addr, "/admin/breakers/payments/explode", Some(TOKEN), "")
            .await
            .status,
        404
    );
    assert_eq!(
        post(&addr, "/admin/breakers/paymnets/open", Some(TOKEN), "")
            .await
            .status,
        404
    );

    // The right token: open for ten minutes, fleet-wide.
    let opened = post(&addr, "/admin/breakers/payments/open", Some(TOKEN), body).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let opened = json(&opened);
    assert_eq!(opened["state"], "forced_open");
    assert_eq!(opened["forced_by"], "alice");
    assert_eq!(opened["reason"], "provider incident");
    assert!(opened["remaining_ms"].as_u64().unwrap() > 590_000);
    call_until(&fleet, "forced open everywhere", |i| {
        i.state() == State::ForcedOpen
    })
    .await;
    assert_eq!(fleet[1].call().await, Call::Rejected);
    // Reset, with no body at all.
    let reset = post(&addr, "/admin/breakers/payments/reset", Some(TOKEN), "").await;
    assert_eq!(
        (reset.status, json(&reset)["state"].as_str()),
        (200, Some("closed"))
    );
    call_until(&fleet, "closed everywhere", |i| i.state() == State::Closed).await;
    // A name the store holds no record of needs "create".
    let created = post(
        &addr,
        "/admin/breakers/ledger/disable",
        Some(TOKEN),
        r#"{"create": true}"#,
    )
    .await;
    assert_eq!(
        (created.status, json(&created)["until_reset"].as_bool()),
        (200, Some(true))
    );
    assert_eq!(json(&created)["forced_by"], "admin-api");
    // Keyed breakers' names hold slashes and spaces: percent-encoded.
    let keyed = "/admin/breakers/api%2FGET%20%2Fv1%2Fusers";
    let made = post(
        &addr,
        &format!("{keyed}/open"),
        Some(TOKEN),
        r#"{"create": true, "reason": "bad deploy"}"#,
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let shown = json(&request(&addr, "GET", keyed, &[], "").await);
    assert_eq!(
        (shown["name"].as_str(), shown["reason"].as_str()),
        (Some("api/GET /v1/users"), Some("bad deploy"))
    );
    let prefixed = json(
        &request(
            &addr,
            "GET",
            "/admin/breakers?prefix=api%2F&state=forced_open",
            &[],
            "",
        )
        .await,
    );
    assert_eq!(prefixed.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_tokenless_apis_change_nothing() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let fleet = fleet(&redis.url()).await;
    let read_only = serve(
        store.clone(),
        AdminConfig::new().token(TOKEN).read_only(true),
    )
    .await;
    let tokenless = serve(store.clone(), AdminConfig::new()).await;
    let empty_token = serve(store.clone(), AdminConfig::new().token("")).await;
    for addr in [&read_only, &tokenless, &empty_token] {
        for action in ["open", "close", "disable", "reset"] {
            for auth in [Some(TOKEN), None, Some("")] {
                let reply = post(
                    addr,
                    &format!("/admin/breakers/payments/{action}"),
                    auth,
                    "",
                )
                .await;
                assert_eq!(reply.status, 403, "{addr} {action} {auth:?}");
            }
        }
        assert_eq!(
            request(addr, "GET", "/admin/breakers/payments", &[], "")
                .await
                .status,
            200
        );
    }
    let name = distributed_circuit_breaker::BreakerName::new("payments").unwrap();
    let info = store.info(&name).await.unwrap().unwrap();
    assert_eq!(info.state, State::Closed);
    assert!(info.note.is_none());
    assert_eq!(fleet[0].call().await, Call::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_a_transition_made_elsewhere() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store, AdminConfig::new()).await;
    let mut events = open_stream(&addr, "/admin/events").await;
    let head = read_until(&mut events, Duration::from_secs(5), |s| {
        s.contains("\r\n\r\n")
    })
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");

    // Another process's traffic opens `search`; the stream says so.
    let down = Dependency::new();
    down.set_down(true);
    let mut fleet = Vec::new();
    for _ in 0..2 {
        fleet.push(Instance::connect(&redis.url(), "search", &down).await);
    }
    drive_until(&fleet, State::Open).await;
    let seen = read_until(&mut events, Duration::from_secs(10), |s| {
        s.contains("event: transition") && s.contains(r#""name":"search""#)
    })
    .await;
    let data = seen
        .lines()
        .skip_while(|l| *l != "event: transition")
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no transition in {seen:?}"));
    let transition: Value = serde_json::from_str(data).unwrap();
    assert_eq!(transition["name"], "search");
    assert_eq!(transition["state"], "open");
    assert!(transition["remaining_ms"].as_u64().unwrap() > 0);
}
