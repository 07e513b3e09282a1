//! Shared pieces of the integration tests.
#![allow(dead_code)]

pub mod chromium;
pub mod dependency;
pub mod fleet;
pub mod http;
pub mod http_raw;
pub mod members;
pub mod proxy;
pub mod redis;
pub mod seen;
pub mod sentinel;
pub mod tls;
pub mod traffic;

use std::time::Duration;

/// Lets background tasks run and (with a paused clock) moves time forward.
pub async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}
