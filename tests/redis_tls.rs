//! `rediss://`: the store over TLS, against a redis-server with TLS on, using
//! a throwaway CA made with the openssl command-line tool.
#![cfg(feature = "redis-tls")]

mod support;

use std::path::Path;
use std::process::Command;

use distributed_circuit_breaker::store::{OutcomeBatch, StoreErrorKind};
use distributed_circuit_breaker::{BreakerName, Policy, RedisStore, State, Store};
use support::redis::{free_port, RedisServer};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    assert!(
        status.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// A CA and a server certificate for localhost / 127.0.0.1.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=dcb-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
}

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
