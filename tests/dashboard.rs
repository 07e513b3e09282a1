//! The dashboard in headless Chromium, in front of a fleet with real
//! traffic: it lists the fleet's breakers, shows a transition made
//! elsewhere without a reload, and its "open" button (pressed with the
//! mouse, the token typed into its prompt) opens a breaker fleet-wide.
//!
//! Skipped, with a message, where Chromium is not installed (scripts/test
//! installs Debian's `chromium`). `DCB_UPDATE_SCREENSHOT=1` also saves
//! the screenshot as docs/dashboard.png.
#![cfg(feature = "admin")]

mod support;

use std::time::Duration;

use distributed_circuit_breaker::admin::{self, AdminConfig};
use distributed_circuit_breaker::store::OutcomeBatch;
use distributed_circuit_breaker::{
    BreakerName, Force, ForceNote, Policy, RedisStore, State, Store, StoreFailure,
};
use support::chromium::{self, Browser};
use support::dependency::Dependency;
use support::fleet::{call_until, drive_until, Call, Instance};
use support::redis::RedisServer;

const TOKEN: &str = "dashboard-token";
const TENANTS: usize = 120;

fn counting() -> Policy {
    Policy::builder()
        .failure_rate(0.5)
        .minimum_calls(1000)
        .window(Duration::from_secs(60))
        .sync_interval(Duration::from_millis(50))
        .store_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
}

async fn instances(
    url: &str,
    name: &str,
    dependency: &Dependency,
    policy: Option<Policy>,
) -> Vec<Instance> {
    let mut fleet = Vec::new();
    for _ in 0..2 {
        let i = match &policy {
            Some(p) => {
                Instance::connect_policy(url, name, dependency, StoreFailure::Local, p.clone())
                    .await
            }
            None => Instance::connect(url, name, dependency).await,
        };
        fleet.push(i);
    }
    fleet
}

fn row_state(name: &str) -> String {
    format!("document.querySelector('tr[data-name=\"{name}\"] .state')?.textContent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_lists_follows_and_opens_the_fleet() {
    let Some(exe) = chromium::find() else {
        println!("SKIPPED dashboard test: no chromium on PATH (scripts/test installs Debian's `chromium`)");
        return;
    };
    let redis = RedisServer::start();
    let url = redis.url();
    let store = RedisStore::connect(&url).await.unwrap();

    // The fleet: `payments` fails and opens, `inventory` and `search` serve.
    let down = Dependency::new();
    down.set_down(true);
    let payments = instances(&url, "payments", &down, None).await;
    drive_until(&payments, State::Open).await;
    let healthy = Dependency::new();
    let inventory = instances(&url, "inventory", &healthy, Some(counting())).await;
    let search_dependency = Dependency::new();
    let search = instances(&url, "search", &search_dependency, Some(counting())).await;
    for i in inventory.iter().chain(&search) {
        for _ in 0..10 {
            assert_eq!(i.call().await, Call::Ok);
        }
        assert!(i.breaker.sync().await);
    }
    // An operator's break, and many tenants' breakers to page through.
    let ledger = BreakerName::new("ledger").unwrap();
    let note = ForceNote::new().reason("schema migration").actor("alice");
    store
        .force_noted(&ledger, &Policy::default(), Force::Open(None), &note)
        .await
        .unwrap();
    for t in 0..TENANTS {
        let name = BreakerName::new(format!("tenant-{t:03}")).unwrap();
        let batch = OutcomeBatch {
            successes: 20 + t as u32 % 7,
            failures: t as u32 % 4,
            ..OutcomeBatch::default()
        };
        store.record(&name, &counting(), batch).await.unwrap();
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().nest(
        "/admin",
        admin::router(store.clone(), AdminConfig::new().token(TOKEN)),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let page = format!("http://{addr}/admin");
    let browser = tokio::task::spawn_blocking(move || Browser::open(&exe, &page, 1280, 860))
        .await
        .unwrap();
    let browser = std::sync::Arc::new(browser);
    let b = browser.clone();
    let blocking = move |f: Box<dyn FnOnce(&Browser) -> serde_json::Value + Send>| {
        let b = b.clone();
        async move { tokio::task::spawn_blocking(move || f(&b)).await.unwrap() }
    };

    // The page lists the fleet's breakers, live, a page at a time.
    let listed = blocking(Box::new(|b| {
        let ok = b.wait_for(
            &format!("{} === 'open'", row_state("payments")),
            Duration::from_secs(15),
        );
        serde_json::json!([
            ok,
            b.eval(&format!("{} ?? null", row_state("ledger"))),
            b.eval("document.getElementById('page').textContent"),
            b.eval("document.getElementById('live').textContent"),
            b.eval("document.querySelector('tr[data-name=\"ledger\"] .by').textContent"),
            b.eval("document.querySelector('tr[data-name=\"inventory\"] .calls').textContent")
        ])
    }))
    .await;
    assert_eq!(listed[0], true, "payments shown open: {listed}");
    assert_eq!(listed[1], "forced open");
    assert_eq!(listed[2], format!("1–50 of {}", TENANTS + 4));
    assert_eq!(listed[4], "alice");
    assert_eq!(listed[5], "20");
    // The filter box narrows the list.
    let filtered = blocking(Box::new(|b| {
        b.type_into("#filter", "tenant-11");
        b.eval("document.querySelector('#filter').dispatchEvent(new Event('input')); document.getElementById('page').textContent")
    }))
    .await;
    assert_eq!(filtered, "1–10 of 10");
    blocking(Box::new(|b| {
        b.eval("const f = document.querySelector('#filter'); f.value = ''; f.dispatchEvent(new Event('input')); window.__sameDocument = 42")
    }))
    .await;
    let live = blocking(Box::new(|b| {
        serde_json::Value::Bool(b.wait_for(
            "document.getElementById('live').textContent === 'live'",
            Duration::from_secs(10),
        ))
    }))
    .await;
    assert_eq!(live, true, "the event stream is connected");

    // A transition made elsewhere (search's dependency fails) shows up
    // without a reload.
    search_dependency.set_down(true);
    drive_until(&search, State::Open).await;
    let followed = blocking(Box::new(|b| {
        let seen = b.wait_for(
            &format!("{} === 'open'", row_state("search")),
            Duration::from_secs(10),
        );
        serde_json::json!([seen, b.eval("window.__sameDocument")])
    }))
    .await;
    assert_eq!(
        followed,
        serde_json::json!([true, 42]),
        "shown live, same document"
    );

    // Pressing "open" on inventory, with the token typed into the prompt,
    // opens it on every instance.
    let pressed = blocking(Box::new(|b| {
        b.type_into("#for", "10m");
        b.type_into("#reason", "stock service degraded");
        b.type_into("#actor", "oncall-bob");
        b.answer_next_prompt(TOKEN);
        b.click("tr[data-name=\"inventory\"] button[data-act=\"open\"]");
        // The row may turn from the event stream before the page has the
        // POST's answer: wait for both.
        let shown = b.wait_for(
            &format!(
                "{} === 'forced open' && document.getElementById('status').textContent === 'inventory: forced open'",
                row_state("inventory")
            ),
            Duration::from_secs(10),
        );
        serde_json::json!([
            shown,
            b.dialogs(),
            b.eval("sessionStorage.getItem('dcb-token')"),
            b.eval("document.querySelector('tr[data-name=\"inventory\"] .by').textContent")
        ])
    }))
    .await;
    assert_eq!(
        pressed,
        serde_json::json!([true, 1, TOKEN, "oncall-bob"]),
        "{pressed}"
    );
    call_until(&inventory, "forced open on every instance", |i| {
        i.state() == State::ForcedOpen
    })
    .await;
    let before = healthy.calls();
    for i in &inventory {
        assert_eq!(i.call().await, Call::Rejected);
    }
    assert_eq!(healthy.calls(), before);
    let info = store
        .info(&BreakerName::new("inventory").unwrap())
        .await
        .unwrap()
        .unwrap();
    let note = info.note.unwrap();
    assert_eq!(
        (note.actor.as_deref(), note.reason.as_deref()),
        (Some("oncall-bob"), Some("stock service degraded"))
    );
    assert!(info.remaining > Duration::from_secs(590));

    // The screenshot for the README.
    let shot = blocking(Box::new(|b| {
        b.eval("for (const id of ['for', 'reason']) document.getElementById(id).value = ''; document.activeElement.blur()");
        b.call("Input.dispatchMouseEvent", serde_json::json!({ "type": "mouseMoved", "x": 0, "y": 0 }));
        std::thread::sleep(Duration::from_millis(2_100)); // the highlight fades
        serde_json::Value::String(save(&b.screenshot()))
    }))
    .await;
    println!("dashboard screenshot: {shot}");

    // The token is kept for the session: "reset" asks no more.
    let reset = blocking(Box::new(|b| {
        b.click("tr[data-name=\"ledger\"] button[data-act=\"reset\"]");
        let shown = b.wait_for(
            &format!("{} === 'closed'", row_state("ledger")),
            Duration::from_secs(10),
        );
        serde_json::json!([shown, b.dialogs()])
    }))
    .await;
    assert_eq!(reset, serde_json::json!([true, 1]));
    assert_eq!(
        store.info(&ledger).await.unwrap().unwrap().state,
        State::Closed
    );
}

/// Saves the screenshot under the target directory, and as
/// docs/dashboard.png when asked to; returns where.
fn save(png: &[u8]) -> String {
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let target = std::env::temp_dir().join("dcb-dashboard.png");
    std::fs::write(&target, png).unwrap();
    if std::env::var_os("DCB_UPDATE_SCREENSHOT").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::write(&docs, png).unwrap();
        return docs.display().to_string();
    }
    target.display().to_string()
}
