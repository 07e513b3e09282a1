//! Bad configuration and bad input are clear errors, never hangs.

mod support;

use std::time::Duration;

use distributed_circuit_breaker::store::StoreErrorKind;
use distributed_circuit_breaker::{
    BreakerName, DistributedCircuitBreakerLayer, Policy, RedisStore, State, Store,
};
use support::dependency::Dependency;
use support::redis::{free_port, RedisServer};
use tower::ServiceExt;

/// Every connect attempt here must answer well within this.
const BOUND: Duration = Duration::from_secs(5);

async fn connect(url: &str) -> Result<RedisStore, distributed_circuit_breaker::store::StoreError> {
    let attempt = RedisStore::builder()
        .connect_timeout(Duration::from_millis(500))
        .connect(url);
    tokio::time::timeout(BOUND, attempt)
        .await
        .expect("connect hung")
}

#[tokio::test]
async fn malformed_urls_are_config_errors() {
    for url in [
        "not a url",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:notaport",
        "",
    ] {
        let err = connect(url).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Config, "{url}: {err}");
        assert!(err.to_string().contains("URL"), "{err}");
    }
}

#[tokio::test]
async fn an_unreachable_server_fails_within_the_connect_timeout() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let err = connect(&url).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let redis = RedisServer::start_with(&["--requirepass", "secret"]);
    let wrong = format!("redis://:wrong@127.0.0.1:{}", redis.port());
    let err = connect(&wrong).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Refused, "{err}");
    let none = redis.url();
    let err = connect(&none).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Refused, "{err}");
    let right = format!("redis://:secret@127.0.0.1:{}", redis.port());
    assert!(connect(&right).await.is_ok());
}

#[tokio::test]
async fn an_acl_user_without_the_needed_commands_is_refused() {
    let redis = RedisServer::start();
    redis.cli(&[
        "ACL", "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@read", "+ping", "+hello",
        "+client",
    ]);
    redis.cli(&[
        "ACL", "SETUSER", "breaker", "on", ">pw", "~dcb:*", "&*", "+@all",
    ]);
    let limited = format!("redis://limited:pw@127.0.0.1:{}", redis.port());
    let err = connect(&limited).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Refused, "{err}");
    let allowed = format!("redis://breaker:pw@127.0.0.1:{}", redis.port());
    assert!(
        connect(&allowed).await.is_ok(),
        "an ACL user with the needed commands works"
    );
}

#[tokio::test]
async fn an_acl_user_without_evalsha_ro_reads_with_the_read_script() {
    let redis = RedisServer::start();
    redis.cli(&[
        "ACL",
        "SETUSER",
        "nory",
        "on",
        ">pw",
        "~dcb:*",
        "&*",
        "+@all",
        "-evalsha_ro",
    ]);
    let url = format!("redis://nory:pw@127.0.0.1:{}", redis.port());
    let store = connect(&url).await.unwrap();
    let policy = Policy::default();
    let name = BreakerName::new("no-read-only").unwrap();
    for _ in 0..3 {
        let read = store.snapshot(&name, &policy).await.unwrap();
        assert_eq!(read.state, distributed_circuit_breaker::State::Closed);
    }
}

#[tokio::test]
async fn an_acl_user_without_channel_rights_is_refused_at_connect() {
    let redis = RedisServer::start();
    // Redis 7's default for new users: no channels (`resetchannels`).
    redis.cli(&[
        "ACL",
        "SETUSER",
        "nochannels",
        "on",
        ">pw",
        "~dcb:*",
        "resetchannels",
        "+@all",
    ]);
    let url = format!("redis://nochannels:pw@127.0.0.1:{}", redis.port());
    let err = connect(&url).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("&dcb:events"), "{err}");
}

#[tokio::test]
async fn a_transition_that_cannot_be_announced_is_saved_once_and_not_an_error() {
    let redis = RedisServer::start();
    redis.cli(&[
        "ACL", "SETUSER", "ops", "on", ">pw", "~dcb:*", "&*", "+@all",
    ]);
    let url = format!("redis://ops:pw@127.0.0.1:{}", redis.port());
    let store = connect(&url).await.unwrap();
    // The channel right is revoked after connect.
    redis.cli(&["ACL", "SETUSER", "ops", "resetchannels"]);
    let policy = Policy::builder().consecutive_failures(2).build().unwrap();
    let name = BreakerName::new("unannounced").unwrap();
    let g = store.snapshot(&name, &policy).await.unwrap().generation;
    let batch = distributed_circuit_breaker::store::OutcomeBatch {
        generation: g,
        failures: 2,
        trailing_failures: 2,
        ..Default::default()
    };
    let opened = store.record(&name, &policy, batch).await.unwrap();
    assert_eq!(
        opened.state,
        State::Open,
        "saved, and answered without an error"
    );
    assert_eq!(redis.cli(&["HGET", "dcb:{unannounced}", "st"]), "1");
}

#[tokio::test]
async fn errors_are_sorted_by_their_redis_error_code() {
    let redis = RedisServer::start();
    let store = connect(&redis.url()).await.unwrap();
    redis.cli(&["SET", "dcb:{string}", "not a hash"]);
    let err = store
        .snapshot(&BreakerName::new("string").unwrap(), &Policy::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
    redis.cli(&["HSET", "dcb:{future}", "v", "99"]);
    let err = store
        .snapshot(&BreakerName::new("future").unwrap(), &Policy::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
}

#[tokio::test]
async fn invalid_prefixes_are_config_errors() {
    let redis = RedisServer::start();
    for prefix in ["", "a{b}", "with space", "tab\t", &"p".repeat(65)] {
        let err = RedisStore::builder()
            .prefix(prefix)
            .connect(&redis.url())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Config, "{prefix:?}");
        assert!(err.to_string().contains("prefix"));
    }
}

#[tokio::test]
async fn names_reach_lua_as_data_never_as_code() {
    let redis = RedisServer::start();
    redis.cli(&["SET", "canary", "alive"]);
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let nasty = "x') redis.call('FLUSHALL') --\"; return";
    let name = BreakerName::new(nasty).unwrap();
    let policy = Policy::builder().consecutive_failures(1).build().unwrap();
    let layer = DistributedCircuitBreakerLayer::new(nasty, policy.clone(), store.clone()).unwrap();
    let breaker = layer.breaker();
    let dep = Dependency::new();
    dep.set_down(true);
    let svc = tower::ServiceBuilder::new().layer(layer).service(dep);
    let _ = svc.oneshot(()).await;
    breaker.sync().await;
    assert_eq!(
        store.snapshot(&name, &policy).await.unwrap().state,
        State::Open
    );
    assert_eq!(redis.cli(&["GET", "canary"]), "alive");
    assert!(store.list().await.unwrap().iter().any(|(n, _)| n == nasty));
}

#[tokio::test]
async fn bad_breaker_names_are_rejected_by_the_layer() {
    for bad in ["", "a{b}", "line\nbreak", &"n".repeat(201)] {
        let err = DistributedCircuitBreakerLayer::new(
            bad,
            Policy::default(),
            distributed_circuit_breaker::MemoryStore::new(),
        )
        .unwrap_err();
        assert_eq!(err.field(), "name");
    }
}
