//! Outside attacks on `dcb`, run as a process against real redis-servers.
#![cfg(feature = "cli")]

mod support;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use axum as _;
use distributed_circuit_breaker::{BreakerError, State, StoreFailure};
use distributed_circuit_breaker::{BreakerName, Force, Policy, RedisStore, Store};
use serde_json::Value;
use support::dependency::Dependency;
use support::fleet::{drive_until, Call, Instance};
use support::redis::{free_port, RedisCluster, RedisServer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tower::{Service, ServiceExt};

async fn dcb_env(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_dcb"))
        .arg("--redis")
        .arg(url)
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("DCB_ACTOR")
        .env_remove("DCB_KEY_PREFIX")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run dcb")
}

/// `dcb`, which must end within 20 s.
async fn dcb(url: &str, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(20), dcb_env(url, args))
        .await
        .unwrap_or_else(|_| panic!("dcb {args:?} hung for 20 s"));
    (out, start.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// README: exit 1 for "Redis ... holding bad data"; a record whose state is
/// garbage is reported as "no breaker of that name" (3) instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_record_is_bad_data_not_unknown() {
    let redis = RedisServer::start();
    let url = redis.url();
    redis.cli(&[
        "HSET",
        "dcb:{garbage}",
        "st",
        "99",
        "g",
        "1",
        "ou",
        "0",
        "fu",
        "0",
    ]);
    let (show, _) = dcb(&url, &["show", "garbage"]).await;
    eprintln!("show: code {} stderr {}", code(&show), text(&show.stderr));
    let (list, _) = dcb(&url, &["--json", "list"]).await;
    eprintln!(
        "list: code {} stdout {} stderr {}",
        code(&list),
        text(&list.stdout),
        text(&list.stderr)
    );
    // Operator then tries to open it: told it does not exist.
    let (open, _) = dcb(&url, &["open", "garbage", "--for", "1m"]).await;
    eprintln!("open: code {} stderr {}", code(&open), text(&open.stderr));
    assert_eq!(
        code(&show),
        1,
        "a record holding bad data must exit 1 (README), got {}: {}",
        code(&show),
        text(&show.stderr)
    );
}

/// The same with a key of the wrong type under the breaker's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_key_is_bad_data() {
    let redis = RedisServer::start();
    let url = redis.url();
    redis.cli(&["SET", "dcb:{str}", "hello"]);
    let (show, _) = dcb(&url, &["show", "str"]).await;
    eprintln!("show: code {} stderr {}", code(&show), text(&show.stderr));
    let (list, _) = dcb(&url, &["list"]).await;
    eprintln!(
        "list: code {} stdout {} stderr {}",
        code(&list),
        text(&list.stdout),
        text(&list.stderr)
    );
    assert_eq!(code(&show), 1, "{}", text(&show.stderr));
}

/// Unreachable Redis: exit 1, bounded time, both refused and silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_paused_redis_exit_1_in_bounded_time() {
    let port = free_port();
    let (out, took) = dcb(&format!("redis://127.0.0.1:{port}"), &["list"]).await;
    eprintln!("refused: {} in {took:?}: {}", code(&out), text(&out.stderr));
    assert_eq!(code(&out), 1);
    assert!(took < Duration::from_secs(8), "{took:?}");

    let redis = RedisServer::start();
    redis.cli(&["HSET", "dcb:{p}", "st", "0", "g", "1", "ou", "0", "fu", "0"]);
    redis.pause();
    for args in [
        &["list"][..],
        &["show", "p"],
        &["open", "p", "--for", "1m"],
        &["watch"],
    ] {
        let (out, took) = dcb(&redis.url(), args).await;
        eprintln!(
            "paused {args:?}: {} in {took:?}: {}",
            code(&out),
            text(&out.stderr)
        );
        assert_eq!(code(&out), 1, "{args:?}");
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
    }
    redis.resume();
}

/// Passwords never appear in messages, whatever the URL looks like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_in_messages() {
    let redis = RedisServer::start_with(&["--requirepass", "rightpw"]);
    let port = redis.port();
    let urls = [
        format!("redis://:WRONGPW1@127.0.0.1:{port}"),
        format!("redis://default:WRONGPW2@127.0.0.1:{port}"),
        format!("redis://nosuchuser:WRONGPW3@127.0.0.1:{port}"),
        "redis://:WRONGPW4@127.0.0.1:notaport".to_owned(),
        format!("redis://:WRONGPW5@127.0.0.1:{port}/notadb"),
        format!("redis://:WRONG%40PW6@127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}/0?password=WRONGPW7"),
        "redis://:WRONGPW8@[::1".to_owned(),
        format!("redis+sentinel://:WRONGPW9@127.0.0.1:{port}/mymaster"),
        format!("redis://:WRONGPW10@127.0.0.1:{port} "),
        format!("redis:/:WRONGPW11@127.0.0.1:{port}"),
        format!("redis://u:WRONGPW12@127.0.0.1:{port}@x"),
    ];
    let mut leaks = Vec::new();
    for url in &urls {
        let (out, _) = dcb(url, &["list"]).await;
        let err = text(&out.stderr) + &text(&out.stdout);
        eprintln!("{url}: {} {err}", code(&out));
        let secret = url.split("WRONG").nth(1).map(|s| {
            format!(
                "WRONG{}",
                &s[..s
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '%')
                    .unwrap_or(s.len())]
            )
        });
        if let Some(secret) = secret {
            if err.contains(&secret) || err.contains(&secret.replace("%40", "@")) {
                leaks.push(format!("{url} -> {err}"));
            }
        }
    }
    // --cluster with a bad node list
    let (out, _) = dcb(
        &format!("redis://:CLUSTERPW@127.0.0.1:{port},redis://:CLUSTERPW2@127.0.0.1:1"),
        &["--cluster", "list"],
    )
    .await;
    let err = text(&out.stderr);
    eprintln!("cluster: {} {err}", code(&out));
    if err.contains("CLUSTERPW") {
        leaks.push(err);
    }
    assert!(leaks.is_empty(), "passwords leaked: {leaks:#?}");
}

/// A duration longer than the year the store keeps: what does dcb say?
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_duration_reported_as_applied() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (out, _) = dcb(&url, &["open", "x", "--create", "--for", "100years"]).await;
    eprintln!(
        "open: {} {} {}",
        code(&out),
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(code(&out), 0);
    let (json, _) = dcb(&url, &["--json", "show", "x"]).await;
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let left = v["remaining_ms"].as_u64().unwrap();
    eprintln!("remaining_ms {left} ({} days)", left / 86_400_000);
    // The human message must not claim 100 years when the store keeps one.
    let said = text(&out.stdout);
    assert!(
        !said.contains("100years") || left > 2 * 365 * 86_400_000,
        "dcb said `{said}` but the store keeps it {} days",
        left / 86_400_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_durations_exit_2() {
    let redis = RedisServer::start();
    let url = redis.url();
    for d in [
        "0s",
        "-5m",
        "10 parsecs",
        "",
        "99999999999999999999999s",
        "1e3s",
        "NaN",
    ] {
        let (out, _) = dcb(&url, &["open", "x", "--create", "--for", d]).await;
        eprintln!("--for {d:?}: {} {}", code(&out), text(&out.stderr));
        assert_eq!(
            code(&out),
            2,
            "--for {d:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// Odd names: spaces, slashes, unicode, 200 bytes, 201 bytes, glob chars.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_names_round_trip() {
    let redis = RedisServer::start();
    let url = redis.url();
    let long = "n".repeat(200);
    let names = [
        "GET /pay ments",
        "a/b/../c",
        "ünï©ødé 支付",
        "*",
        "[x]",
        "a?b",
        "back\\slash",
        "--help",
        long.as_str(),
    ];
    for name in names {
        let (out, _) = dcb(&url, &["open", "--create", "--for", "5m", "--", name]).await;
        assert_eq!(code(&out), 0, "open {name:?}: {}", text(&out.stderr));
    }
    let (out, _) = dcb(&url, &["--json", "list"]).await;
    let all: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let listed: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    for name in names {
        assert!(listed.contains(&name), "{name:?} not listed: {listed:?}");
        let (out, _) = dcb(&url, &["--json", "show", "--", name]).await;
        assert_eq!(code(&out), 0, "show {name:?}: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["state"], "forced_open");
    }
    // `--prefix` with glob characters only filters, literally.
    let (out, _) = dcb(&url, &["--json", "list", "--prefix", "*"]).await;
    let only: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1, "{only}");
    let too_long = "n".repeat(201);
    let (out, _) = dcb(&url, &["show", &too_long]).await;
    eprintln!("201 bytes: {} {}", code(&out), text(&out.stderr));
    assert_eq!(code(&out), 2);
}

/// `--key-prefix` with a glob character (the builder allows it): `list`
/// must still list, like `show` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefix_with_glob_chars_lists() {
    let redis = RedisServer::start();
    let url = redis.url();
    for prefix in ["svc[1]", "a\\b", "p?"] {
        let (out, _) = dcb(
            &url,
            &[
                "--key-prefix",
                prefix,
                "open",
                "x",
                "--create",
                "--for",
                "5m",
            ],
        )
        .await;
        assert_eq!(code(&out), 0, "{prefix}: {}", text(&out.stderr));
        let (show, _) = dcb(&url, &["--key-prefix", prefix, "--json", "show", "x"]).await;
        eprintln!("{prefix} show: {} {}", code(&show), text(&show.stdout));
        let (list, _) = dcb(&url, &["--key-prefix", prefix, "--json", "list"]).await;
        eprintln!("{prefix} list: {} {}", code(&list), text(&list.stdout));
        let v: Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(
            v.as_array().map(Vec::len),
            Some(1),
            "prefix {prefix:?}: show finds x but list gives {v}"
        );
    }
}

/// Forced open without expiry: rejected callers are told a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_open_until_reset_retry_after_and_reset_reaches_all() {
    let redis = RedisServer::start();
    let url = redis.url();
    let down = Dependency::new();
    down.set_down(true);
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(Instance::connect_with(&url, "pay", &down, StoreFailure::Local).await);
    }
    drive_until(&fleet, State::Open).await;
    let (out, _) = dcb(&url, &["open", "pay", "--reason", "x"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in &fleet {
        let mut svc = i.svc.clone();
        let r = async {
            let s = ServiceExt::<()>::ready(&mut svc).await?;
            s.call(()).await
        }
        .await;
        match r.map_err(BreakerError::from) {
            Err(BreakerError::Open(e)) => {
                eprintln!("retry_after {:?} state {:?}", e.retry_after(), e.state());
                assert!(
                    e.retry_after() >= Duration::from_secs(55),
                    "{:?}",
                    e.retry_after()
                );
            }
            other => panic!("not rejected: {:?}", other.is_ok()),
        }
    }
    down.set_down(false);
    let (out, _) = dcb(&url, &["reset", "pay"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok, "reset did not reach an instance");
    }
}

/// `open --for` expires on every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_for_expires_everywhere() {
    let redis = RedisServer::start();
    let url = redis.url();
    let up = Dependency::new();
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(Instance::connect_with(&url, "inv", &up, StoreFailure::Local).await);
    }
    let (out, _) = dcb(&url, &["open", "inv", "--create", "--for", "1500ms"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in &fleet {
        assert_eq!(i.call().await, Call::Rejected);
    }
    tokio::time::sleep(Duration::from_millis(1700)).await;
    for i in &fleet {
        assert_eq!(
            i.call().await,
            Call::Ok,
            "forced state did not expire on an instance"
        );
    }
}

/// `watch` across a Redis restart: it must keep watching (or fail loudly),
/// not end with exit 0 nor go silently deaf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_redis_restart() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.cli(&["HSET", "dcb:{w}", "st", "0", "g", "1", "ou", "0", "fu", "0"]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dcb"))
        .args(["--redis", &url, "--json", "watch"])
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (out, _) = dcb(&url, &["open", "w", "--for", "1m"]).await;
    assert_eq!(code(&out), 0);
    let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await;
    eprintln!("before restart: {first:?}");
    let first = first.expect("a line before restart").unwrap().unwrap();
    let v: Value = serde_json::from_str(&first).expect("JSON line");
    assert_eq!(v["state"], "forced_open");

    redis.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Ok(Some(status)) = child.try_wait() {
        let mut err = String::new();
        use tokio::io::AsyncReadExt;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        panic!("watch ended on a Redis restart with {status}: {err}");
    }
    let mut seen = None;
    for attempt in 0..10 {
        let (out, _) = dcb(
            &url,
            &[
                "open",
                "w",
                "--create",
                "--for",
                "1m",
                "--reason",
                &format!("after {attempt}"),
            ],
        )
        .await;
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        if let Ok(line) = tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await {
            seen = Some(line);
            break;
        }
        let (out, _) = dcb(&url, &["reset", "w"]).await;
        let _ = out;
    }
    eprintln!("after restart: {seen:?}");
    match seen {
        Some(Ok(Some(_))) => {}
        Some(other) => panic!("watch stream ended after a Redis restart: {other:?}"),
        None => panic!("watch went deaf after a Redis restart (no line in 10 tries)"),
    }
}

async fn reject(i: &Instance) -> Option<distributed_circuit_breaker::CircuitOpen> {
    let mut svc = i.svc.clone();
    let r = async {
        let s = ServiceExt::<()>::ready(&mut svc).await?;
        s.call(()).await
    }
    .await;
    match r.map_err(BreakerError::from) {
        Err(BreakerError::Open(e)) => Some(e),
        _ => None,
    }
}

/// The 503's Retry-After for a breaker forced open until reset: a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_header_forced_until_reset() {
    use axum::response::IntoResponse;
    let redis = RedisServer::start();
    let url = redis.url();
    let up = Dependency::new();
    let i = Instance::connect_with(&url, "hdr", &up, StoreFailure::Local).await;
    let (out, _) = dcb(&url, &["open", "hdr", "--create"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let open = reject(&i).await.expect("rejected");
    let resp = open.clone().into_response();
    let header = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    eprintln!(
        "retry_after {:?} header {header:?} status {}",
        open.retry_after(),
        resp.status()
    );
    assert_eq!(
        header.as_deref(),
        Some("60"),
        "README: the 503's Retry-After is a minute"
    );
}

/// The pub/sub connection of an instance is killed (Redis stays up): a
/// reset must still reach it within a few sync intervals (README: forced
/// states are re-read every sync interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reaches_instance_whose_subscription_died() {
    let redis = RedisServer::start();
    let url = redis.url();
    let up = Dependency::new();
    let mut fleet = Vec::new();
    for _ in 0..2 {
        fleet.push(Instance::connect_with(&url, "sub", &up, StoreFailure::Local).await);
    }
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok);
    }
    let (out, _) = dcb(&url, &["open", "sub", "--create"]).await;
    assert_eq!(code(&out), 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in &fleet {
        assert_eq!(i.call().await, Call::Rejected);
    }
    // Pause Redis's pub/sub delivery to the instances: kill their pubsub clients.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    eprintln!("killed pubsub clients: {killed}");
    let (out, _) = dcb(&url, &["reset", "sub"]).await;
    assert_eq!(code(&out), 0);
    let start = Instant::now();
    'outer: loop {
        let mut all = true;
        for i in &fleet {
            if i.call().await != Call::Ok {
                all = false;
            }
        }
        if all {
            break 'outer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "reset not seen after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("reset seen after {:?}", start.elapsed());
}

/// `close --for`: every call admitted (even failing), never trips, counted;
/// `disable`: admitted, nothing counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_closed_and_disabled_semantics() {
    let redis = RedisServer::start();
    let url = redis.url();
    let down = Dependency::new();
    down.set_down(true);
    let mut fleet = Vec::new();
    for _ in 0..2 {
        fleet.push(Instance::connect_with(&url, "fc", &down, StoreFailure::Local).await);
    }
    drive_until(&fleet, State::Open).await;
    let (out, _) = dcb(&url, &["close", "fc", "--for", "1m"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        for i in &fleet {
            assert_eq!(i.call().await, Call::Failed, "forced closed must admit");
        }
    }
    for i in &fleet {
        assert!(i.breaker.sync().await);
    }
    let (out, _) = dcb(&url, &["--json", "show", "fc"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("forced closed: {v}");
    assert_eq!(v["state"], "forced_closed");
    let (out, _) = dcb(&url, &["disable", "fc", "--for", "1m"]).await;
    assert_eq!(code(&out), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        for i in &fleet {
            assert_eq!(i.call().await, Call::Failed, "disabled must admit");
        }
    }
    for i in &fleet {
        assert!(i.breaker.sync().await);
    }
    let (out, _) = dcb(&url, &["--json", "show", "fc"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("disabled: {v}");
    assert_eq!(v["state"], "disabled");
    assert_eq!(v["calls"], 0, "disabled counts nothing");
}

/// An ACL user who may not SCAN: `list` says so with exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_without_scan() {
    let redis = RedisServer::start();
    redis.cli(&[
        "ACL", "SETUSER", "ops", "on", ">opspw", "~*", "&*", "+@all", "-scan",
    ]);
    redis.cli(&["HSET", "dcb:{a}", "st", "0", "g", "1", "ou", "0", "fu", "0"]);
    let url = format!("redis://ops:opspw@127.0.0.1:{}", redis.port());
    let (out, _) = dcb(&url, &["list"]).await;
    eprintln!(
        "acl list: {} {} {}",
        code(&out),
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(code(&out), 1);
    assert!(!text(&out.stderr).contains("opspw"));
    redis.cli(&[
        "ACL",
        "SETUSER",
        "ro",
        "on",
        ">ropw",
        "~*",
        "&*",
        "+@read",
        "+@connection",
        "+time",
        "+scan",
        "+subscribe",
        "+evalsha",
        "+eval",
        "+script",
    ]);
    let url = format!("redis://ro:ropw@127.0.0.1:{}", redis.port());
    let (out, _) = dcb(&url, &["open", "a", "--for", "1m"]).await;
    eprintln!(
        "ro open: {} {} {}",
        code(&out),
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(code(&out), 1);
}

/// Every command's --json output parses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_for_every_command() {
    let redis = RedisServer::start();
    let url = redis.url();
    for args in [
        &[
            "--json",
            "open",
            "j",
            "--create",
            "--for",
            "1m",
            "--reason",
            "a \"quoted\" \\ reason\nwith newline\u{7}",
        ][..],
        &["--json", "close", "j", "--for", "1m"],
        &["--json", "disable", "j"],
        &["--json", "show", "j"],
        &["--json", "list"],
        &["--json", "list", "--state", "disabled"],
        &["--json", "reset", "j"],
    ] {
        let (out, _) = dcb(&url, args).await;
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
        let v: Result<Value, _> = serde_json::from_slice(&out.stdout);
        assert!(v.is_ok(), "{args:?}: {}", text(&out.stdout));
        eprintln!("{args:?}: {}", text(&out.stdout).trim());
    }
}

/// Look-alike names (zero-width, bidi): a second "payments" row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookalike_names() {
    let redis = RedisServer::start();
    let url = redis.url();
    for name in ["payments", "payments\u{200B}", "\u{202E}stnemyap"] {
        let (out, _) = dcb(&url, &["open", "--create", "--for", "5m", "--", name]).await;
        eprintln!("{name:?}: {} {}", code(&out), text(&out.stderr));
    }
    let (out, _) = dcb(&url, &["list"]).await;
    println!("{}", text(&out.stdout));
    let rows = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("payments"))
        .count();
    assert!(
        rows <= 1,
        "look-alike names accepted: {rows} rows show `payments`"
    );
}

/// A read-only ACL user (everything but writes and PUBLISH) cannot even
/// `dcb list`/`show`/`watch`: connecting demands PUBLISH rights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_acl_user_can_list() {
    let redis = RedisServer::start();
    redis.cli(&["HSET", "dcb:{a}", "st", "0", "g", "1", "ou", "0", "fu", "0"]);
    redis.cli(&[
        "ACL", "SETUSER", "viewer", "on", ">viewpw", "~*", "&*", "+@all", "-@write", "-publish",
    ]);
    let url = format!("redis://viewer:viewpw@127.0.0.1:{}", redis.port());
    let mut failures = Vec::new();
    for args in [&["list"][..], &["show", "a"]] {
        let (out, _) = dcb(&url, args).await;
        eprintln!(
            "viewer {args:?}: {} {} {}",
            code(&out),
            text(&out.stdout),
            text(&out.stderr)
        );
        if code(&out) != 0 {
            failures.push(format!("{args:?}: {}", text(&out.stderr)));
        }
    }
    assert!(
        failures.is_empty(),
        "read-only user refused reads: {failures:#?}"
    );
}

async fn cluster_with_dead_master(dead: usize) -> (Output, String, RedisCluster) {
    let mut cluster = RedisCluster::start();
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::connect_cluster(&nodes).await.unwrap();
    for i in 0..30 {
        let name = BreakerName::new(format!("svc-{i}")).unwrap();
        store
            .force(&name, &Policy::default(), Force::Open(None))
            .await
            .unwrap();
    }
    let lost = cluster.nodes[dead].cli(&["DBSIZE"]);
    // Production clusters often serve what they can when a shard is down.
    for n in &cluster.nodes {
        n.cli(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    }
    cluster.nodes[dead].kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let live: Vec<String> = (0..3)
        .filter(|i| *i != dead)
        .map(|i| urls[i].clone())
        .collect();
    let (out, took) = dcb(&live.join(","), &["--cluster", "--json", "list"]).await;
    eprintln!(
        "list with master {dead} dead: {} in {took:?}: {} {}",
        code(&out),
        text(&out.stdout),
        text(&out.stderr)
    );
    (out, lost, cluster)
}

/// A cluster master dies (no replica; cluster-require-full-coverage no):
/// `list` must fail (exit 1) or warn, not silently list the breakers of
/// the other masters only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_list_with_a_dead_master_is_not_silently_partial() {
    let (out, lost, _cluster) = cluster_with_dead_master(0).await;
    if code(&out) == 0 {
        let all: Value = serde_json::from_slice(&out.stdout).unwrap();
        let n = all.as_array().unwrap().len();
        panic!("exit 0 listing {n} of 30 forced-open breakers ({lost} keys on the dead master missing, no warning: {})", text(&out.stderr));
    }
}

/// The shard owning the connect check's key (`__connect_check`, slot
/// 14456) dies: dcb cannot work on any breaker, even those on live shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dcb_usable_when_an_unrelated_shard_is_down() {
    let (out, _lost, cluster) = cluster_with_dead_master(2).await;
    let live = format!("{},{}", cluster.nodes[0].url(), cluster.nodes[1].url());
    // A breaker on a live shard.
    let name = (0..30)
        .map(|i| format!("svc-{i}"))
        .find(|n| {
            let owner = cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", &format!("dcb:{{{n}}}")]);
            owner
                .trim()
                .parse::<u16>()
                .map(|s| s < 10923)
                .unwrap_or(false)
        })
        .unwrap();
    let (reset, _) = dcb(&live, &["--cluster", "reset", &name]).await;
    eprintln!(
        "reset {name} on a live shard: {} {}",
        code(&reset),
        text(&reset.stderr)
    );
    assert_eq!(
        code(&reset),
        0,
        "reset of {name} (live shard) failed: {}",
        text(&reset.stderr)
    );
    let _ = out;
}

/// After a forced state expires, the breaker is closed: no stale
/// forced-by/reason; and `watch` prints the expiry (forced_open -> closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_forced_state_note_and_watch() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dcb"))
        .args(["--redis", &url, "--json", "watch"])
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // A fleet with traffic on it.
    let up = Dependency::new();
    let i = Instance::connect_with(&url, "exp", &up, StoreFailure::Local).await;
    let (out, _) = dcb(
        &url,
        &[
            "open", "exp", "--create", "--for", "1s", "--reason", "short", "--actor", "alice",
        ],
    )
    .await;
    assert_eq!(code(&out), 0);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let _ = i.call().await;
        if let Ok(Ok(Some(l))) =
            tokio::time::timeout(Duration::from_millis(100), lines.next_line()).await
        {
            seen.push(l);
        }
    }
    let (out, _) = dcb(&url, &["--json", "show", "exp"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    eprintln!("after expiry: {} {v}\nwatch: {seen:#?}", code(&out));
    let (table, _) = dcb(&url, &["list"]).await;
    eprintln!("{}", text(&table.stdout));
    if v.is_object() {
        assert_ne!(v["state"], "forced_open");
        assert_eq!(
            v["forced_by"],
            Value::Null,
            "stale note on an expired forced state: {v}"
        );
    }
    assert!(
        seen.iter().any(|l| l.contains("\"from\":\"forced_open\"")),
        "watch never printed the forced state's end: {seen:#?}"
    );
}

/// Redis dies during `watch` and stays down: the operator must be told
/// (a message on stderr or a non-zero exit), not left watching silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_tells_when_redis_is_gone() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dcb"))
        .args(["--redis", &url, "watch"])
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(5), err.next_line()).await;
    eprintln!("first stderr: {first:?}");
    redis.kill();
    let mut said = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), err.next_line()).await {
            Ok(Ok(Some(l))) => said.push(l),
            Ok(_) => break,
            Err(_) => {}
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
    }
    let status = child.try_wait().unwrap();
    eprintln!("after 10 s with Redis down: status {status:?}, stderr {said:?}");
    assert!(
        !said.is_empty() || status.is_some_and(|s| !s.success()),
        "watch stayed silent for 10 s with Redis gone (status {status:?})"
    );
}

/// After Redis comes back empty, `watch` still reports the states it read
/// before (it ignores the resync): `forced_open -> forced_open`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_state_after_resync() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let (out, _) = dcb(&url, &["open", "r", "--create", "--for", "1m"]).await;
    assert_eq!(code(&out), 0);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dcb"))
        .args(["--redis", &url, "--json", "watch"])
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut line = None;
    for _ in 0..10 {
        let (out, _) = dcb(&url, &["open", "r", "--create", "--for", "1m"]).await;
        assert_eq!(code(&out), 0);
        if let Ok(Ok(Some(l))) =
            tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await
        {
            line = Some(l);
            break;
        }
    }
    let line = line.expect("a line");
    eprintln!("{line}");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v["from"], "closed",
        "Redis came back empty; `r` had no record: {line}"
    );
}
