//! `dcb` run as a process against a real redis-server whose breakers were
//! made by real traffic through the layer.
#![cfg(feature = "cli")]

mod support;

use std::process::{Output, Stdio};
use std::time::Duration;

use distributed_circuit_breaker::{
    BreakerName, Force, Policy, RedisStore, State, Store, StoreFailure,
};
use serde_json::Value;
use support::dependency::Dependency;
use support::fleet::{call_until, drive_until, Call, Instance};
use support::redis::{free_port, RedisCluster, RedisServer};
use support::tls::certificates;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs `dcb` with `args` against `url`.
async fn dcb(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_dcb"))
        .arg("--redis")
        .arg(url)
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("DCB_ACTOR")
        .output()
        .await
        .expect("run dcb")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `dcb --json ...`, which must succeed, and parses its output.
async fn dcb_json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = dcb(url, &all).await;
    assert!(out.status.success(), "dcb {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// A policy that counts calls in its window (so healthy breakers keep a record).
fn counting() -> Policy {
    Policy::builder()
        .failure_rate(0.5)
        .minimum_calls(1000)
        .window(Duration::from_secs(30))
        .sync_interval(Duration::from_millis(50))
        .store_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
}

async fn fleet(url: &str, name: &str, dependency: &Dependency, n: usize) -> Vec<Instance> {
    let mut fleet = Vec::new();
    for _ in 0..n {
        fleet.push(Instance::connect(url, name, dependency).await);
    }
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_clear_errors() {
    let redis = RedisServer::start();
    let url = redis.url();
    // `payments` opens on real failures; `inventory` serves real calls.
    let down = Dependency::new();
    down.set_down(true);
    let payments = fleet(&url, "payments", &down, 3).await;
    drive_until(&payments, State::Open).await;
    let healthy = Dependency::new();
    let inventory =
        Instance::connect_policy(&url, "inventory", &healthy, StoreFailure::Local, counting())
            .await;
    for _ in 0..20 {
        assert_eq!(inventory.call().await, Call::Ok);
    }
    assert!(inventory.breaker.sync().await);

    let out = dcb(&url, &["list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("payments") && l.contains(" open ")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("inventory") && l.contains(" closed ") && l.contains(" 20 ")),
        "{table}"
    );

    let all = dcb_json(&url, &["list"]).await;
    let by_name = |name: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("payments")["state"], "open");
    assert!(by_name("payments")["remaining_ms"].as_u64().unwrap() > 0);
    assert_eq!(by_name("inventory")["calls"], 20);
    assert_eq!(by_name("inventory")["failure_rate"], 0.0);

    let open = dcb_json(&url, &["list", "--state", "open"]).await;
    let names: Vec<&str> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["payments"]);
    let prefixed = dcb_json(&url, &["list", "--prefix", "inv"]).await;
    assert_eq!(prefixed.as_array().unwrap().len(), 1);
    assert_eq!(prefixed[0]["name"], "inventory");

    let out = dcb(&url, &["show", "payments"]).await;
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("state       open"),
        "{}",
        stdout(&out)
    );
    let shown = dcb_json(&url, &["show", "inventory"]).await;
    assert_eq!(shown["calls"], 20);

    // Unknown names, an unreachable Redis, bad durations: a clear message
    // and an exit code of their own.
    let out = dcb(&url, &["show", "paymnets"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("no breaker named `paymnets`"),
        "{}",
        stderr(&out)
    );
    let out = dcb(&url, &["open", "paymnets", "--for", "10m"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("--create"), "{}", stderr(&out));
    let out = dcb(&url, &["reset", "paymnets"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        dcb_json(&url, &["list"]).await.as_array().unwrap().len(),
        2,
        "nothing made"
    );
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let out = dcb(&nowhere, &["list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot use Redis at redis://127.0.0.1:"),
        "{}",
        stderr(&out)
    );
    let out = dcb(&url, &["open", "payments", "--for", "10 parsecs"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid duration"),
        "{}",
        stderr(&out)
    );
    let out = dcb(&url, &["list", "--state", "ajar"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown state `ajar`"),
        "{}",
        stderr(&out)
    );
    // Passwords never show in messages.
    let out = dcb(
        &format!("redis://ops:s3cret@127.0.0.1:{}", free_port()),
        &["list"],
    )
    .await;
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_states_reach_every_instance_and_expire() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dependency = Dependency::new();
    let fleet = fleet(&url, "checkout", &dependency, 3).await;
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok);
    }

    // Healthy and idle under a runs-only policy: no record, so forcing it
    // takes --create.
    let forced = dcb_json(
        &url,
        &[
            "open",
            "checkout",
            "--for",
            "1500ms",
            "--reason",
            "database failover",
            "--actor",
            "alice",
            "--create",
        ],
    )
    .await;
    assert_eq!(forced["state"], "forced_open");
    assert_eq!(forced["forced_by"], "alice");
    call_until(&fleet, "every instance rejects", |i| {
        i.state() == State::ForcedOpen
    })
    .await;
    let calls = dependency.calls();
    for i in &fleet {
        assert_eq!(i.call().await, Call::Rejected);
    }
    assert_eq!(dependency.calls(), calls, "no call reached the dependency");
    let shown = dcb_json(&url, &["show", "checkout"]).await;
    assert_eq!(shown["reason"], "database failover");
    assert_eq!(shown["forced_by"], "alice");
    assert_eq!(shown["until_reset"], false);
    let out = dcb(&url, &["show", "checkout"]).await;
    assert!(
        stdout(&out).contains("forced by   alice"),
        "{}",
        stdout(&out)
    );
    // It expires by itself, everywhere.
    call_until(&fleet, "every instance admits again", |i| {
        i.state() == State::Closed
    })
    .await;
    for i in &fleet {
        assert_eq!(i.call().await, Call::Ok);
    }
    assert!(dcb_json(&url, &["show", "checkout"]).await["forced_by"].is_null());

    // Forced closed: a failing dependency never trips it.
    dependency.set_down(true);
    let out = dcb(
        &url,
        &["close", "checkout", "--for", "10m", "--actor", "bob"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("checkout: forced_closed"),
        "{}",
        stdout(&out)
    );
    call_until(&fleet, "forced closed", |i| {
        i.state() == State::ForcedClosed
    })
    .await;
    for _ in 0..5 {
        for i in &fleet {
            assert_eq!(i.call().await, Call::Failed, "admitted, failing");
        }
    }
    // Disabled until reset: the same, counting nothing.
    let out = dcb(&url, &["disable", "checkout"]).await;
    assert!(stdout(&out).contains("until reset"), "{}", stdout(&out));
    call_until(&fleet, "disabled", |i| i.state() == State::Disabled).await;
    assert_eq!(fleet[0].call().await, Call::Failed);
    assert_eq!(
        dcb_json(&url, &["show", "checkout"]).await["until_reset"],
        true
    );
    // Reset: closed, and the failures trip it again.
    let out = dcb(&url, &["reset", "checkout"]).await;
    assert!(
        stdout(&out).contains("checkout: closed"),
        "{}",
        stdout(&out)
    );
    drive_until(&fleet, State::Open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_a_transition_caused_by_another_instance() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_dcb"))
        .args(["--redis", &url, "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut json_watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_dcb"))
        .args(["--redis", &url, "--json", "watch", "--prefix", "sea"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut json_lines = BufReader::new(json_watch.stdout.take().unwrap()).lines();
    let mut json_ready = BufReader::new(json_watch.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(Duration::from_secs(10), json_ready.next_line()).await;
    assert!(said.unwrap().unwrap().unwrap().starts_with("watching"));
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut ready = BufReader::new(watch.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(Duration::from_secs(10), ready.next_line()).await;
    assert!(said.unwrap().unwrap().unwrap().starts_with("watching"));

    // Another instance's traffic trips the breaker.
    let down = Dependency::new();
    down.set_down(true);
    let fleet = fleet(&url, "search", &down, 2).await;
    drive_until(&fleet, State::Open).await;
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("watch printed the transition")
        .unwrap()
        .unwrap();
    assert!(
        line.contains("  search  closed -> open  generation "),
        "{line}"
    );
    assert!(line.contains("  for "), "{line}");

    // An operator's command shows who gave it and why.
    let out = dcb(
        &url,
        &[
            "open",
            "search",
            "--reason",
            "reindexing",
            "--actor",
            "carol",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("watch printed the forced state")
        .unwrap()
        .unwrap();
    assert!(line.contains("  search  open -> forced_open  "), "{line}");
    assert!(
        line.ends_with("until reset  by carol: reindexing"),
        "{line}"
    );
    // The same as JSON lines, for scripts.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(10), json_lines.next_line())
            .await
            .expect("a JSON line per transition")
            .unwrap()
            .unwrap();
        seen.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(
        (&seen[0]["name"], &seen[0]["from"], &seen[0]["state"]),
        (&"search".into(), &"closed".into(), &"open".into())
    );
    assert_eq!(
        (&seen[1]["state"], &seen[1]["forced_by"], &seen[1]["reason"]),
        (&"forced_open".into(), &"carol".into(), &"reindexing".into())
    );
    watch.kill().await.unwrap();
    json_watch.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_scans_every_master_of_a_cluster() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::connect_cluster(&nodes).await.unwrap();
    let names: Vec<String> = (0..30).map(|i| format!("svc-{i}")).collect();
    for n in &names {
        let name = BreakerName::new(n.as_str()).unwrap();
        store
            .force(&name, &Policy::default(), Force::Open(None))
            .await
            .unwrap();
    }
    // Spread over every master.
    let owners: std::collections::HashSet<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.cli(&["DBSIZE"]) != "0")
        .map(|n| n.url())
        .collect();
    assert_eq!(owners.len(), 3);
    let out = dcb(&urls.join(","), &["--cluster", "--json", "list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(listed, want);
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["state"] == "forced_open" && b["until_reset"] == true));
    let out = dcb(&urls.join(","), &["--cluster", "reset", "svc-7"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = dcb_json(&urls[0], &["--cluster", "show", "svc-7"]).await;
    assert_eq!(shown["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_an_acl_user_with_a_prefix_of_its_own() {
    let dir = std::env::temp_dir().join(format!("dcb-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let tls_port = free_port();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path("server.crt"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    // An operator account limited to the `ops` prefix's keys and channel.
    redis.cli(&[
        "ACL", "SETUSER", "ops", "on", ">pw", "~ops:*", "&ops:*", "+@all",
    ]);
    let url = format!("rediss://ops:pw@localhost:{tls_port}");
    let ca = path("ca.crt");
    let tls = ["--tls-ca", ca.as_str(), "--key-prefix", "ops"];

    // A service of that prefix, over TLS, trips on real failures.
    let store = RedisStore::builder()
        .prefix("ops")
        .tls_root_certificate(std::fs::read(&ca).unwrap())
        .connect(&url)
        .await
        .unwrap();
    let down = Dependency::new();
    down.set_down(true);
    let instance = Instance::with_store(
        store,
        "billing",
        &down,
        StoreFailure::Local,
        support::fleet::policy(),
    );
    drive_until(std::slice::from_ref(&instance), State::Open).await;

    let listed = dcb_json(&url, &[&tls[..], &["list"]].concat()).await;
    assert_eq!(listed[0]["name"], "billing");
    assert_eq!(listed[0]["state"], "open");
    let out = dcb(
        &url,
        &[&tls[..], &["open", "billing", "--actor", "dana"]].concat(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    call_until(std::slice::from_ref(&instance), "forced open", |i| {
        i.state() == State::ForcedOpen
    })
    .await;
    // Until reset: callers are told to come back in a minute.
    let open = instance.breaker.admit().await.unwrap_err();
    assert_eq!(open.state(), State::ForcedOpen);
    assert!(open.retry_after() > Duration::from_secs(50), "{open}");
    assert_eq!(open.http_response().headers()["retry-after"], "60");

    // Untrusted server, wrong password: exit 1, and no password shown.
    let out = dcb(&url, &["--key-prefix", "ops", "list"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let wrong = format!("rediss://ops:nope@localhost:{tls_port}");
    let out = dcb(&wrong, &[&tls[..], &["list"]].concat()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("rediss://ops:***@localhost"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("nope"), "{}", stderr(&out));
    // The default prefix is not this user's: refused.
    let out = dcb(&url, &["--tls-ca", &ca, "list"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
