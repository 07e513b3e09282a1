//! Running the scripts: the access check at connect, one script call per
//! store operation, and the scripts' reply.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Script;

use super::error::map_error;
use super::{events, Connection, RedisStore};
use crate::policy::Params;
use crate::rand::rand16;
use crate::store::{BreakerName, StoreError, StoreErrorKind};
use crate::{Policy, Snapshot, State};

impl RedisStore {
    /// Proves at connect that this user may run what the store needs:
    /// loads the scripts, runs the read script once and `PUBLISH`es a ping.
    /// A read-only store ([`RedisStoreBuilder::read_only`](super::RedisStoreBuilder::read_only))
    /// only reads a key under its prefix (`EXISTS`).
    ///
    /// On a cluster, a shard that is down (the check's key may live there,
    /// `SCRIPT LOAD` goes to every master) must not stop connecting to the
    /// others: a check that meets an unavailable shard (or no answer within
    /// half of `timeout`) is skipped with a warning, and refusals (ACL,
    /// a wrong password) still fail.
    pub(super) async fn check_access(&self, timeout: Duration) -> Result<(), StoreError> {
        let mut connection = self.inner.connection.clone();
        let cluster = matches!(connection, Connection::Cluster(_));
        if self.inner.read_only {
            // May this user read the prefix's keys? (`SCAN` would just
            // find none of them.)
            let mut exists = redis::cmd("EXISTS");
            exists.arg(format!("{}:{{__connect_check}}", self.inner.prefix));
            return match connection.query::<i64>(exists).await {
                Ok(_) => Ok(()),
                Err(error) if cluster && error.kind() == StoreErrorKind::Unavailable => {
                    tracing::warn!(%error, "cannot check read access now (a cluster shard is unavailable); connecting anyway");
                    Ok(())
                }
                Err(error) => Err(error),
            };
        }
        let scripts = async {
            let mut connection = self.inner.connection.clone();
            for script in self.inner.scripts.all() {
                connection.load(script).await.map_err(map_error)?;
            }
            let probe = BreakerName::new("__connect_check")
                .map_err(|e| StoreError::new(StoreErrorKind::Config, e.to_string()))?;
            let policy = Policy::builder()
                .window(Duration::from_millis(100))
                .break_duration(Duration::from_millis(100))
                .probe_lease(Duration::from_millis(100))
                .sync_interval(Duration::from_millis(100))
                .key_ttl(Duration::from_millis(100))
                .build()
                .map_err(|e| StoreError::new(StoreErrorKind::Config, e.to_string()))?;
            self.run(&self.inner.scripts.read, &probe, &policy, &[], 0)
                .await
                .map(drop)
        };
        if cluster {
            match tokio::time::timeout(timeout / 2, scripts).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) if error.kind() == StoreErrorKind::Unavailable => {
                    tracing::warn!(%error, "cannot check the scripts now (a cluster shard is unavailable); connecting anyway");
                }
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    tracing::warn!("cannot check the scripts now (a cluster shard did not answer); connecting anyway");
                }
            }
        } else {
            scripts.await?;
        }
        // Transitions are announced with PUBLISH: a Redis 7 ACL user needs
        // channel rights (`&{prefix}:events`), which it lacks by default.
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.inner.channel).arg(events::PING);
        match connection.query::<i64>(publish).await {
            Ok(_) => Ok(()),
            Err(refused) if refused.kind() == StoreErrorKind::Refused => Err(StoreError::new(
                StoreErrorKind::Refused,
                format!(
                    "this Redis user may not PUBLISH to `{}`; grant it the channel (ACL `&{}`), or connect read-only (`RedisStoreBuilder::read_only`) to only read: {refused}",
                    self.inner.channel, self.inner.channel
                ),
            )),
            Err(error) if cluster && error.kind() == StoreErrorKind::Unavailable => {
                tracing::warn!(%error, "cannot check PUBLISH now (a cluster shard is unavailable); connecting anyway");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Runs one script; `now` overrides Redis's clock when not 0 (tests only).
    pub(super) async fn run(
        &self,
        script: &Script,
        name: &BreakerName,
        policy: &Policy,
        args: &[u64],
        now: u64,
    ) -> Result<Reply, StoreError> {
        self.run_text(script, name, policy, args, &[], now).await
    }

    /// [`run`](Self::run) with text arguments after the numbers.
    pub(super) async fn run_text(
        &self,
        script: &Script,
        name: &BreakerName,
        policy: &Policy,
        args: &[u64],
        text: &[&str],
        now: u64,
    ) -> Result<Reply, StoreError> {
        let reply = self
            .run_with_text(script, name, policy.params(), args, text, now, rand16())
            .await?;
        if reply.transitioned {
            if let Some(durable) = &self.inner.durability {
                self.replicate(name, durable, policy.store_timeout()).await;
            }
        }
        Ok(reply)
    }

    /// Reads a breaker with `EVALSHA_RO` (no write, no replication; it
    /// could run on a replica), falling back to the `read` script when the
    /// read must write (unreadable data, a forced state that ended) or the
    /// server does not know `EVALSHA_RO` (before Redis 7).
    pub(super) async fn read(
        &self,
        name: &BreakerName,
        policy: &Policy,
    ) -> Result<Reply, StoreError> {
        if !self.inner.no_read_only.load(Ordering::Relaxed) {
            match self.run_read_only(name, policy.params()).await {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                // Before Redis 7 there is no EVALSHA_RO; an ACL user may not
                // be allowed it. Either way the writing script reads too.
                Err(error)
                    if error.code() == Some("NOPERM")
                        || (error.code() == Some("ERR")
                            && error.to_string().contains("unknown command")) =>
                {
                    tracing::info!(%error, "reads run the read script instead of EVALSHA_RO");
                    self.inner.no_read_only.store(true, Ordering::Relaxed);
                }
                Err(error) => return Err(map_error(error)),
            }
        }
        self.run(&self.inner.scripts.read, name, policy, &[], 0)
            .await
    }

    /// `None` when the read must write.
    async fn run_read_only(
        &self,
        name: &BreakerName,
        p: &Params,
    ) -> Result<Option<Reply>, redis::RedisError> {
        let script = &self.inner.scripts.read_ro;
        let mut cmd = redis::cmd("EVALSHA_RO");
        cmd.arg(script.get_hash()).arg(1).arg(self.key(name));
        for arg in p.script_args() {
            cmd.arg(arg);
        }
        cmd.arg(&self.inner.channel)
            .arg(name.as_str())
            .arg(0)
            .arg(0);
        let mut reply = self
            .inner
            .connection
            .clone()
            .query_raw::<Vec<i64>>(&cmd)
            .await;
        if matches!(&reply, Err(e) if e.code() == Some("NOSCRIPT")) {
            // After a restart or SCRIPT FLUSH: load it and ask again.
            let mut connection = self.inner.connection.clone();
            connection.load(script).await?;
            reply = connection.query_raw::<Vec<i64>>(&cmd).await;
        }
        let reply = reply?;
        if reply.first() == Some(&-1) {
            return Ok(None);
        }
        Ok(Some(Reply::parse(&reply).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected read reply",
                format!("{reply:?}"),
            ))
        })?))
    }

    #[cfg(test)]
    pub(super) async fn run_with(
        &self,
        script: &Script,
        name: &BreakerName,
        p: &Params,
        args: &[u64],
        now: u64,
        rand16: u32,
    ) -> Result<Reply, StoreError> {
        self.run_with_text(script, name, p, args, &[], now, rand16)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_with_text(
        &self,
        script: &Script,
        name: &BreakerName,
        p: &Params,
        args: &[u64],
        text: &[&str],
        now: u64,
        rand16: u32,
    ) -> Result<Reply, StoreError> {
        let mut invocation = script.key(self.key(name));
        if std::ptr::eq(script, &self.inner.scripts.health) {
            // The health-check turn: its own key, in the breaker's slot.
            invocation.key(self.health_key(name));
        }
        for arg in p.script_args() {
            invocation.arg(arg);
        }
        invocation
            .arg(&self.inner.channel)
            .arg(name.as_str())
            .arg(rand16)
            .arg(now);
        for arg in args {
            invocation.arg(*arg);
        }
        for arg in text {
            invocation.arg(*arg);
        }
        let mut connection = self.inner.connection.clone();
        let reply: Vec<i64> = match &mut connection {
            Connection::Single(c) => invocation.invoke_async(c).await,
            Connection::Sentinel(p) => p.observe(invocation.invoke_async(&mut p.manager()).await),
            Connection::Cluster(c) => invocation.invoke_async(c).await,
        }
        .map_err(map_error)?;
        let reply = Reply::parse(&reply).ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!("unexpected script reply {reply:?}"),
            )
        })?;
        if reply.reset {
            tracing::error!(breaker = %name, key = %self.key(name), "breaker data in Redis was unreadable; reset it to closed with a new generation");
        }
        if let Some(theirs) = reply.other_policy {
            self.inner.conflicts.report(name, p.fingerprint, theirs);
        }
        if reply.unannounced {
            // Saved (so never resent), but other processes learn of it only
            // on their next read of the shared state.
            tracing::warn!(breaker = %name, channel = %self.inner.channel, "a transition was saved but could not be announced (PUBLISH refused); other processes follow on their next read");
        }
        Ok(reply)
    }
}

/// What every script answers: `{state, generation, remaining ms, lease,
/// reset, other policy, unannounced, transitioned}`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reply {
    pub(super) snapshot: Snapshot,
    pub(super) lease: Option<u64>,
    pub(super) reset: bool,
    /// The fingerprint of another policy that wrote the breaker before.
    other_policy: Option<u64>,
    /// The transition was saved but could not be announced (PUBLISH refused).
    unannounced: bool,
    /// This call changed the breaker's generation (a transition).
    pub(super) transitioned: bool,
}

impl Reply {
    fn parse(values: &[i64]) -> Option<Reply> {
        let [state, generation, remaining, lease, reset, other, unannounced, transitioned] = values
        else {
            return None;
        };
        Some(Reply {
            snapshot: Snapshot {
                state: State::from_code(u64::try_from(*state).ok()?)?,
                generation: u64::try_from(*generation).ok()?,
                remaining: Duration::from_millis(u64::try_from(*remaining).ok()?),
            },
            lease: u64::try_from(*lease).ok().filter(|l| *l > 0),
            reset: *reset != 0,
            other_policy: u64::try_from(*other).ok().filter(|o| *o > 0),
            unannounced: *unannounced != 0,
            transitioned: *transitioned != 0,
        })
    }
}
