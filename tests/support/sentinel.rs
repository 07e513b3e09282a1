//! A primary, its replica and three sentinels, on loopback, owned by the test.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::redis::RedisServer;

pub const MASTER: &str = "mymaster";

pub struct SentinelGroup {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
}

impl SentinelGroup {
    /// Waits until the replica is in sync and every sentinel knows the
    /// replica and the other two sentinels (so a failover can be voted).
    pub fn start() -> SentinelGroup {
        SentinelGroup::start_with_password(None)
    }

    /// With `requirepass` on the primary and the replica (the sentinels are
    /// told it with `auth-pass`).
    pub fn start_with_password(password: Option<&str>) -> SentinelGroup {
        // Replicas sync at once, not after the default 5 s diskless delay.
        let mut auth: Vec<&str> = vec!["--repl-diskless-sync-delay", "0"];
        if let Some(password) = password {
            auth.extend(["--requirepass", password, "--masterauth", password]);
        }
        let primary = RedisServer::start_with(&auth);
        let port = primary.port().to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", &port];
        replica_args.extend(&auth);
        let replica = RedisServer::start_with(&replica_args);
        wait_link_up(&replica);
        let mut config = format!(
            "bind 127.0.0.1\n\
             sentinel monitor {MASTER} 127.0.0.1 {} 2\n\
             sentinel down-after-milliseconds {MASTER} 500\n\
             sentinel failover-timeout {MASTER} 2000\n",
            primary.port()
        );
        if let Some(password) = password {
            config.push_str(&format!("sentinel auth-pass {MASTER} {password}\n"));
        }
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_sentinel(&config))
            .collect();
        let group = SentinelGroup {
            primary,
            replica,
            sentinels,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = group.sentinels.iter().all(|s| {
                let info = master_info(s);
                info.get("num-other-sentinels").map(String::as_str) == Some("2")
                    && info.get("num-slaves").map(String::as_str) == Some("1")
            });
            if ready {
                return group;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels never found each other"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+sentinel://` for the store.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// The primary's port as the first sentinel reports it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let out = s.cli(&["SENTINEL", "get-master-addr-by-name", MASTER]);
            out.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// Waits until the sentinels name a primary other than `old`.
    pub async fn wait_for_new_primary(&self, old: u16) -> u16 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(port) = self.primary_port().filter(|p| *p != old) {
                return port;
            }
            assert!(tokio::time::Instant::now() < deadline, "no failover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `SENTINEL MASTER mymaster` as a map.
fn master_info(sentinel: &RedisServer) -> HashMap<String, String> {
    let out = sentinel.cli(&["SENTINEL", "MASTER", MASTER]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    lines
        .chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((k.to_string(), v.to_string())),
            _ => None,
        })
        .collect()
}

/// Waits until `replica` has its link to the primary up.
pub fn wait_link_up(replica: &RedisServer) {
    wait_replication(replica, "master_link_status:up", "the replica never synced");
}

/// Waits until `primary` counts one replica online (synced and acknowledging).
pub fn wait_replica_online(primary: &RedisServer) {
    wait_replication(primary, "state=online", "the replica never came online");
}

/// Waits (at most 20 s) until `INFO replication` of `node` says `needle`.
fn wait_replication(node: &RedisServer, needle: &str, never: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.cli(&["INFO", "replication"]).contains(needle) {
        assert!(Instant::now() < deadline, "{never}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
