//! Connecting: the builder, its checks, and errors while connecting.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::broadcast;

use super::error::{map_error, open_client, unavailable_after};
use super::scripts::Scripts;
use super::sentinel::{Primary, SentinelUrl};
use super::{
    events, Connection, Durability, Inner, RedisStore, DEFAULT_PREFIX, EVENT_BUFFER, MAX_PREFIX_LEN,
};
use crate::store::{PolicyConflicts, StoreError, StoreErrorKind};

/// Configures a [`RedisStore`] before connecting.
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    prefix: String,
    pub(super) connect_timeout: Duration,
    response_timeout: Duration,
    durability: Option<Durability>,
    pub(super) read_only: bool,
    #[cfg(feature = "redis-tls")]
    root_certificate: Option<Vec<u8>>,
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            durability: None,
            read_only: false,
            #[cfg(feature = "redis-tls")]
            root_certificate: None,
        }
    }
}

impl RedisStoreBuilder {
    /// Key prefix (default `dcb`): stores with different prefixes never see
    /// each other's breakers. 1 to 64 characters, no braces, spaces or control
    /// characters.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long connecting may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the connection waits for any reply (default 1 s). Requests never
    /// wait that long: the policy's `store_timeout` bounds them.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Makes transitions survive a failover (off by default): after every
    /// script that changed a breaker's state, the store sends
    /// `WAIT replicas timeout` and so answers only once `replicas` replicas
    /// hold the change, or after `timeout` (at most half the policy's
    /// `store_timeout`). With asynchronous replication a primary that dies
    /// loses its last writes, and the last writes are the transitions: a
    /// fleet that had just opened could come back closed.
    ///
    /// It costs one round trip to the replicas per transition (not per
    /// call), and holds that connection's later commands meanwhile.
    /// Outcome counts are not waited for. A transition that reached fewer
    /// replicas in time is kept and logged (`warn`), not failed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use distributed_circuit_breaker::RedisStore;
    ///
    /// let builder = RedisStore::builder().durable_transitions(1, Duration::from_millis(20));
    /// ```
    pub fn durable_transitions(mut self, replicas: u32, timeout: Duration) -> Self {
        self.durability = Some(Durability::new(replicas, timeout));
        self
    }

    /// Connects for reading only (off by default): connecting then checks
    /// only that this user may read keys under the prefix (`EXISTS`), not
    /// that it may run the scripts, write breakers and `PUBLISH` transitions. Such a store can
    /// read ([`Store::info`](crate::Store::info), [`Store::list_info`](crate::Store::list_info),
    /// `snapshot`), list and watch ([`Store::subscribe`](crate::Store::subscribe)),
    /// so a Redis user without write or publish rights (ACL `-@write -publish`)
    /// can back `dcb list`/`show`/`watch` or a read-only admin router; its
    /// writes (`force`, `record`, ...) fail with the server's refusal
    /// ([`StoreErrorKind::Refused`]). Not for breakers that take traffic.
    ///
    /// ```
    /// use distributed_circuit_breaker::RedisStore;
    ///
    /// let builder = RedisStore::builder().read_only(true);
    /// ```
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Trusts the PEM certificate(s) in `pem` for `rediss://` connections
    /// instead of the system's roots (a private CA, a self-signed server).
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Connects to one Redis server: `redis://[user:password@]host:port[/db]`,
    /// or `rediss://...` over TLS with the `redis-tls` feature.
    ///
    /// Fails with a clear error, within the connect timeout, on a malformed URL,
    /// an unreachable server, a wrong password, or a user not allowed the
    /// commands the store needs.
    ///
    /// Through Redis Sentinel with
    /// `redis+sentinel://[user:password@]host:port[,host:port...]/master[/db]`
    /// (`rediss+sentinel://` for TLS): the store asks the sentinels for the
    /// primary of `master`, connects to it with the credentials and database
    /// of the URL, and follows it across failovers.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), distributed_circuit_breaker::store::StoreError> {
    /// use distributed_circuit_breaker::RedisStore;
    ///
    /// let store = RedisStore::connect(
    ///     "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/mymaster",
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self, url: &str) -> Result<RedisStore, StoreError> {
        self.check()?;
        if let Some(sentinel) = SentinelUrl::parse(url) {
            let config = self.manager_config();
            let primary = tokio::time::timeout(
                self.connect_timeout,
                Primary::connect(sentinel?, self.clone(), config),
            )
            .await
            .map_err(|_| unavailable_after(self.connect_timeout))??;
            return self.finish(Connection::Sentinel(primary), Vec::new()).await;
        }
        let client = self.open_client(url)?;
        let config = self.manager_config();
        let manager = tokio::time::timeout(
            self.connect_timeout,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| unavailable_after(self.connect_timeout))?
        .map_err(map_error)?;
        self.finish(Connection::Single(manager), vec![client]).await
    }

    /// Connects to a Redis Cluster through any of its nodes.
    pub async fn connect_cluster(self, nodes: &[&str]) -> Result<RedisStore, StoreError> {
        self.check()?;
        if nodes.is_empty() {
            return Err(StoreError::new(
                StoreErrorKind::Config,
                "connect_cluster needs at least one node URL",
            ));
        }
        let clients = nodes
            .iter()
            .map(|url| self.open_client(url))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = redis::cluster::ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            .retries(2)
            .build()
            .map_err(map_error)?;
        let connection = tokio::time::timeout(self.connect_timeout, cluster.get_async_connection())
            .await
            .map_err(|_| unavailable_after(self.connect_timeout))?
            .map_err(map_error)?;
        self.finish(Connection::Cluster(connection), clients).await
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1))
    }

    pub(super) fn open_client(&self, url: &str) -> Result<redis::Client, StoreError> {
        #[cfg(feature = "redis-tls")]
        {
            // rustls needs one process-wide crypto provider; ours is ring. An
            // error only means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            if let Some(root) = &self.root_certificate {
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root.clone()),
                };
                return redis::Client::build_with_tls(url, certificates).map_err(|e| {
                    StoreError::new(
                        StoreErrorKind::Config,
                        format!("invalid Redis URL or certificate: {e}"),
                    )
                });
            }
        }
        open_client(url)
    }

    fn check(&self) -> Result<(), StoreError> {
        let p = &self.prefix;
        let bad = p.is_empty()
            || p.len() > MAX_PREFIX_LEN
            || p.chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '{' || c == '}');
        if bad {
            return Err(StoreError::new(
                StoreErrorKind::Config,
                format!("invalid `prefix` {p:?}: 1 to {MAX_PREFIX_LEN} characters, no braces, spaces or control characters"),
            ));
        }
        if let Some(d) = &self.durability {
            d.check()?;
        }
        Ok(())
    }

    async fn finish(
        self,
        connection: Connection,
        clients: Vec<redis::Client>,
    ) -> Result<RedisStore, StoreError> {
        let channel = format!("{}:events", self.prefix);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let endpoints = match &connection {
            Connection::Sentinel(primary) => events::Endpoints::Primary(Arc::clone(primary)),
            _ => events::Endpoints::Nodes(clients),
        };
        let subscriber = tokio::spawn(events::subscribe_forever(
            endpoints,
            channel.clone(),
            events.clone(),
            self.connect_timeout,
        ))
        .abort_handle();
        let store = RedisStore {
            inner: Arc::new(Inner {
                connection,
                prefix: self.prefix,
                channel,
                scripts: Scripts::new(),
                events,
                conflicts: PolicyConflicts::default(),
                subscriber,
                durability: self.durability.map(super::durability::Durable::new),
                read_only: self.read_only,
                no_read_only: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        // Prove now that this user may run what the store needs (SCRIPT LOAD,
        // EVALSHA, HSET, PEXPIRE), rather than on the first trip; a
        // read-only store only that the server answers.
        let check = store.check_access(self.connect_timeout);
        tokio::time::timeout(self.connect_timeout, check)
            .await
            .map_err(|_| unavailable_after(self.connect_timeout))??;
        Ok(store)
    }
}
