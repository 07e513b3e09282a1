//! Outside attacks on the admin router over real HTTP, real redis-server.
#![cfg(feature = "admin")]

mod support;

use std::time::{Duration, Instant};

use distributed_circuit_breaker::admin::{self, AdminConfig};
use distributed_circuit_breaker::{BreakerName, Force, ForceNote, Policy, RedisStore, Store};
use serde_json::Value;
use support::http_raw::{open_stream, read_until, request, Reply};
use support::redis::RedisServer;

const TOKEN: &str = "s3cret-token";

async fn serve(store: RedisStore, config: AdminConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().nest("/admin", admin::router(store, config));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn post(addr: &str, path: &str, auth: Option<&str>, body: &str) -> Reply {
    let header = auth.map(|a| a.to_owned());
    let headers: Vec<(&str, &str)> = header
        .iter()
        .map(|h| ("Authorization", h.as_str()))
        .collect();
    request(addr, "POST", path, &headers, body).await
}

fn json(reply: &Reply) -> Value {
    serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("{e}: {} {}", reply.status, reply.body))
}

fn seed(redis: &RedisServer, name: &str) {
    redis.cli(&[
        "HSET",
        &format!("dcb:{{{name}}}"),
        "st",
        "0",
        "g",
        "1",
        "ou",
        "0",
        "fu",
        "0",
    ]);
}

/// Bearer variants: only the exact token passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_variants() {
    let redis = RedisServer::start();
    seed(&redis, "p");
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store, AdminConfig::new().token(TOKEN)).await;
    let bad = [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer  {TOKEN}"),
        format!("Bearer {}", TOKEN.to_uppercase()),
        format!("Basic {TOKEN}"),
        format!("Token {TOKEN}"),
        TOKEN.to_owned(),
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Bearer\t{TOKEN}"),
        format!("Bearer={TOKEN}"),
    ];
    for auth in &bad {
        let r = post(&addr, "/admin/breakers/p/open", Some(auth), "{}").await;
        assert_eq!(r.status, 401, "{auth:?}: {} {}", r.status, r.body);
    }
    let r = request(&addr, "GET", "/admin/breakers/p", &[], "").await;
    assert_eq!(json(&r)["state"], "closed");
    // Two Authorization headers, the second right.
    let r = request(
        &addr,
        "POST",
        "/admin/breakers/p/open",
        &[
            ("Authorization", "Bearer nope"),
            ("Authorization", &format!("Bearer {TOKEN}")),
        ],
        "{}",
    )
    .await;
    eprintln!("two headers: {}", r.status);
    for ok in [format!("Bearer {TOKEN}"), format!("bEaReR {TOKEN}")] {
        let r = post(
            &addr,
            "/admin/breakers/p/open",
            Some(&ok),
            r#"{"for":"1m"}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{ok:?}: {}", r.body);
    }
    // Empty and whitespace-only configured tokens: no mutation at all.
    for t in ["", " "] {
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let addr = serve(store, AdminConfig::new().token(t)).await;
        for auth in ["Bearer ", "Bearer  ", "Bearer"] {
            let r = post(&addr, "/admin/breakers/p/reset", Some(auth), "{}").await;
            eprintln!("token {t:?} auth {auth:?}: {}", r.status);
            assert!(
                r.status == 403 || r.status == 401,
                "token {t:?} auth {auth:?}: {}",
                r.status
            );
        }
    }
}

/// A typo'd field (`duration` for `for`) must not silently force a
/// breaker open until reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_refused() {
    let redis = RedisServer::start();
    seed(&redis, "p");
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store, AdminConfig::new().token(TOKEN)).await;
    let auth = format!("Bearer {TOKEN}");
    let r = post(
        &addr,
        "/admin/breakers/p/open",
        Some(&auth),
        r#"{"duration": "10m", "reason": "10 minutes only"}"#,
    )
    .await;
    eprintln!("typo'd body: {} {}", r.status, r.body);
    let after = json(&request(&addr, "GET", "/admin/breakers/p", &[], "").await);
    eprintln!("after: {after}");
    assert_eq!(
        r.status, 400,
        "unknown field `duration` accepted; breaker now {after}"
    );
}

/// Bad bodies: 400 and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_400_and_change_nothing() {
    let redis = RedisServer::start();
    seed(&redis, "p");
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store, AdminConfig::new().token(TOKEN)).await;
    let auth = format!("Bearer {TOKEN}");
    for body in [
        "{",
        "[]",
        "null",
        "\"10m\"",
        r#"{"for": 600}"#,
        r#"{"for": "0s"}"#,
        r#"{"for": "-1m"}"#,
        r#"{"for": "10 parsecs"}"#,
        r#"{"for": "99999999999999999999999999s"}"#,
        r#"{"create": "yes"}"#,
        r#"{"reason": 5}"#,
        r#"{"for": "10m"} trailing"#,
    ] {
        let r = post(&addr, "/admin/breakers/p/open", Some(&auth), body).await;
        assert_eq!(r.status, 400, "{body}: {} {}", r.status, r.body);
        let after = json(&request(&addr, "GET", "/admin/breakers/p", &[], "").await);
        assert_eq!(after["state"], "closed", "{body} changed it: {after}");
    }
}

/// Names needing percent-encoding reach the right breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_names() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store.clone(), AdminConfig::new().token(TOKEN)).await;
    let auth = format!("Bearer {TOKEN}");
    for (name, encoded) in [
        ("GET /pay", "GET%20%2Fpay"),
        ("a/b", "a%2Fb"),
        ("ü 支", "%C3%BC%20%E6%94%AF"),
        ("100%", "100%25"),
        ("a+b", "a+b"),
        ("a?b", "a%3Fb"),
        ("a#b", "a%23b"),
        (".", "%2E"),
    ] {
        let r = post(
            &addr,
            &format!("/admin/breakers/{encoded}/open"),
            Some(&auth),
            r#"{"for":"5m","create":true}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{name:?}: {} {}", r.status, r.body);
        assert_eq!(json(&r)["name"], name);
        let info = store.info(&BreakerName::new(name).unwrap()).await.unwrap();
        assert!(info.is_some(), "{name:?} not in store");
        let r = request(&addr, "GET", &format!("/admin/breakers/{encoded}"), &[], "").await;
        assert_eq!(r.status, 200, "{name:?}: {}", r.body);
        assert_eq!(json(&r)["name"], name);
    }
    let r = request(&addr, "GET", "/admin/breakers?prefix=GET%20%2F", &[], "").await;
    assert_eq!(json(&r).as_array().unwrap().len(), 1, "{}", r.body);
}

/// Store down: 503 (not a hang) for reads, writes; the SSE stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_is_503_in_bounded_time() {
    let mut redis = RedisServer::start();
    seed(&redis, "p");
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store, AdminConfig::new().token(TOKEN)).await;
    let auth = format!("Bearer {TOKEN}");
    redis.pause();
    for (method, path) in [
        ("GET", "/admin/breakers"),
        ("GET", "/admin/breakers/p"),
        ("POST", "/admin/breakers/p/open"),
    ] {
        let start = Instant::now();
        let r = request(&addr, method, path, &[("Authorization", &auth)], "{}").await;
        eprintln!(
            "paused {method} {path}: {} in {:?}: {}",
            r.status,
            start.elapsed(),
            r.body
        );
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    redis.resume();
    redis.kill();
    for (method, path) in [
        ("GET", "/admin/breakers"),
        ("GET", "/admin/breakers/p"),
        ("POST", "/admin/breakers/p/open"),
    ] {
        let start = Instant::now();
        let r = request(&addr, method, path, &[("Authorization", &auth)], "{}").await;
        eprintln!(
            "killed {method} {path}: {} in {:?}: {}",
            r.status,
            start.elapsed(),
            r.body
        );
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

/// 10,000 breakers: GET /breakers answers in bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_breakers() {
    let redis = RedisServer::start();
    let script = "for i=1,10000 do redis.call('HSET','dcb:{b'..i..'}','st','0','g','1','ou','0','fu','0','w','1:5:1:0','bm','1000') end return 1";
    redis.cli(&["EVAL", script, "0"]);
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store, AdminConfig::new().token(TOKEN)).await;
    let start = Instant::now();
    let r = request(&addr, "GET", "/admin/breakers", &[], "").await;
    let took = start.elapsed();
    let n = json(&r).as_array().map(Vec::len);
    eprintln!(
        "10k: {} in {took:?}, {} bytes, {n:?}",
        r.status,
        r.body.len()
    );
    assert_eq!(n, Some(10_000));
    assert!(took < Duration::from_secs(5), "{took:?}");
    let start = Instant::now();
    let r = request(&addr, "GET", "/admin/breakers?state=open", &[], "").await;
    eprintln!("10k filtered: {} in {:?}", r.status, start.elapsed());
}

/// SSE: many clients come and go; the server keeps answering and later
/// clients still get transitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_clients_disconnect_and_server_survives() {
    let redis = RedisServer::start();
    seed(&redis, "p");
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store.clone(), AdminConfig::new().token(TOKEN)).await;
    for _ in 0..5 {
        let mut streams = Vec::new();
        for _ in 0..100 {
            streams.push(open_stream(&addr, "/admin/events").await);
        }
        drop(streams);
    }
    let mut s = open_stream(&addr, "/admin/events").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = RedisStore::connect(&redis.url()).await.unwrap();
    other
        .force_noted(
            &BreakerName::new("p").unwrap(),
            &Policy::default(),
            Force::Open(Some(Duration::from_secs(60))),
            &ForceNote::new().actor("bob"),
        )
        .await
        .unwrap();
    let seen = read_until(&mut s, Duration::from_secs(5), |t| {
        t.contains("forced_open")
    })
    .await;
    assert!(seen.contains("event: transition"), "{seen}");
    let r = request(&addr, "GET", "/admin/breakers", &[], "").await;
    assert_eq!(r.status, 200);
}

/// SSE across a Redis restart: the stream stays open and delivers later
/// transitions (or ends so EventSource reconnects), never goes deaf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_after_redis_restart() {
    let mut redis = RedisServer::start();
    seed(&redis, "p");
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store.clone(), AdminConfig::new().token(TOKEN)).await;
    let mut s = open_stream(&addr, "/admin/events").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let other = RedisStore::connect(&redis.url()).await.unwrap();
    let mut seen = String::new();
    for i in 0..5 {
        other
            .force_noted(
                &BreakerName::new("p").unwrap(),
                &Policy::default(),
                if i % 2 == 0 {
                    Force::Open(Some(Duration::from_secs(60)))
                } else {
                    Force::Reset
                },
                &ForceNote::new().actor("bob"),
            )
            .await
            .unwrap();
        seen += &read_until(&mut s, Duration::from_secs(1), |t| {
            t.contains("event: transition")
        })
        .await;
        if seen.contains("event: transition") {
            break;
        }
    }
    eprintln!("after restart: {seen}");
    assert!(
        seen.contains("event: transition"),
        "SSE deaf after restart: {seen:?}"
    );
}

/// Many mutations at once all answer, and the breaker ends forced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts() {
    let redis = RedisServer::start();
    seed(&redis, "p");
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store, AdminConfig::new().token(TOKEN)).await;
    let auth = format!("Bearer {TOKEN}");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let addr = addr.clone();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let action = ["open", "close", "disable"][i % 3];
            post(
                &addr,
                &format!("/admin/breakers/p/{action}"),
                Some(&auth),
                &format!(r#"{{"for":"5m","reason":"r{i}"}}"#),
            )
            .await
            .status
        }));
    }
    let mut codes = std::collections::BTreeMap::new();
    for t in tasks {
        *codes.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    eprintln!("{codes:?}");
    assert_eq!(codes.get(&200), Some(&200), "{codes:?}");
}

/// A read-only admin (AdminConfig::read_only) over a read-only Redis user:
/// RedisStore cannot even connect, so no dashboard for viewers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_redis_user_store_for_read_only_dashboard() {
    let redis = RedisServer::start();
    seed(&redis, "p");
    redis.cli(&[
        "ACL", "SETUSER", "viewer", "on", ">viewpw", "~*", "&*", "+@all", "-@write", "-publish",
    ]);
    let url = format!("redis://viewer:viewpw@127.0.0.1:{}", redis.port());
    // A plain connect checks write and PUBLISH rights (and fails, as it
    // should, for a store that takes traffic); a read-only dashboard
    // connects read-only.
    let store = RedisStore::builder().read_only(true).connect(&url).await;
    let store = match store {
        Ok(s) => s,
        Err(e) => panic!("a read-only Redis user cannot back a read-only admin router: {e}"),
    };
    let addr = serve(store, AdminConfig::new().read_only(true)).await;
    let r = request(&addr, "GET", "/admin/breakers", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Ten dashboards re-reading 10,000 breakers at once (each re-reads every
/// 5 s): how long each read takes, and whether a fleet instance sharing
/// the Redis (store_timeout 50 ms) loses its syncs meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_dashboards_on_ten_thousand_breakers() {
    use support::dependency::Dependency;
    use support::fleet::Instance;
    let redis = RedisServer::start();
    let script = "for i=1,10000 do redis.call('HSET','dcb:{b'..i..'}','st','0','g','1','ou','0','fu','0','w','1:5:1:0','bm','1000') end return 1";
    redis.cli(&["EVAL", script, "0"]);
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(store, AdminConfig::new().token(TOKEN)).await;
    let dep = Dependency::new();
    let i = Instance::connect_with(
        &redis.url(),
        "live",
        &dep,
        distributed_circuit_breaker::StoreFailure::Local,
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let syncer = {
        let stop = stop.clone();
        let i = i.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = i.call().await;
                if i.breaker.sync().await {
                    ok += 1
                } else {
                    failed += 1
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let s = Instant::now();
            let r = request(&addr, "GET", "/admin/breakers", &[], "").await;
            (r.status, s.elapsed())
        }));
    }
    let mut worst = Duration::ZERO;
    for t in tasks {
        let (status, took) = t.await.unwrap();
        assert_eq!(status, 200);
        worst = worst.max(took);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = syncer.await.unwrap();
    eprintln!(
        "10 x 10k lists: all done in {:?}, worst {worst:?}; instance syncs ok {ok} failed {failed}",
        start.elapsed()
    );
    assert!(
        worst < Duration::from_secs(5),
        "a dashboard re-read took {worst:?}, more than its 5 s re-read interval"
    );
    assert_eq!(
        failed,
        0,
        "the fleet instance lost {failed} of {} syncs while dashboards read",
        ok + failed
    );
}
