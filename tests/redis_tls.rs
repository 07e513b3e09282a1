//! `rediss://`: the store over TLS, against a redis-server with TLS on, using
//! a throwaway CA made with the openssl command-line tool.
#![cfg(feature = "redis-tls")]

mod support;

use distributed_circuit_breaker::store::{OutcomeBatch, StoreErrorKind};
use distributed_circuit_breaker::{BreakerName, Policy, RedisStore, State, Store};
use support::redis::{free_port, RedisServer};
use support::tls::certificates;

#[tokio::test]
async fn the_store_works_over_tls_and_refuses_an_untrusted_server() {
    let dir = std::env::temp_dir().join(format!("dcb-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let tls_port = free_port();
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let _redis = RedisServer::start_with(&[
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
    let url = format!("rediss://localhost:{tls_port}");

    let untrusted = RedisStore::builder().connect(&url).await.unwrap_err();
    assert_ne!(untrusted.kind(), StoreErrorKind::Corrupt, "{untrusted}");

    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let store = RedisStore::builder()
        .tls_root_certificate(ca)
        .connect(&url)
        .await
        .unwrap();
    let policy = Policy::builder().consecutive_failures(2).build().unwrap();
    let name = BreakerName::new("tls").unwrap();
    let g = store.snapshot(&name, &policy).await.unwrap().generation;
    let batch = OutcomeBatch {
        generation: g,
        successes: 0,
        failures: 2,
        slow: 0,
        trailing_failures: 2,
        ..OutcomeBatch::default()
    };
    assert_eq!(
        store.record(&name, &policy, batch).await.unwrap().state,
        State::Open
    );
    let _ = std::fs::remove_dir_all(&dir);
}
