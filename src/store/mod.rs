//! Where the shared state of every breaker lives.
//!
//! A [`Store`] runs the breaker state machine atomically for every process that
//! uses it. [`MemoryStore`] keeps it in this process (every layer built on one
//! `MemoryStore` shares its breakers); the Redis store keeps it in Redis for a
//! whole fleet. Processes only talk to the store in the background (batched
//! outcomes, periodic refresh) and for the rare half-open probe permit, never on
//! the hot path of a closed breaker.

mod info;
mod memory;
mod name;
mod note;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisStore, RedisStoreBuilder, SCHEMA_VERSION as REDIS_SCHEMA_VERSION};
pub use info::{BreakerInfo, OperatorNote};
pub use memory::MemoryStore;
#[cfg(feature = "sim")]
pub(crate) use memory::Saved;
pub use name::{BreakerName, MAX_NAME_LEN};
pub use note::{ForceNote, MAX_ACTOR_LEN, MAX_REASON_LEN};

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::{Policy, Snapshot, StoreEvent};

/// The boxed future a [`Store`] method returns. Stores are called off the hot
/// path only, so one allocation per call to the store is of no concern.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Outcomes counted by one process under one generation of a breaker, handed to
/// the store in one go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutcomeBatch {
    /// The generation the calls were admitted under; a store drops a batch whose
    /// generation is not the breaker's current one, except 0: a process that
    /// has not heard from the store yet, whose outcomes count toward the current
    /// generation.
    pub generation: u64,
    /// Calls classified as successes.
    pub successes: u32,
    /// Calls classified as failures.
    pub failures: u32,
    /// Calls, successful or not, that took at least the slow-call duration.
    pub slow: u32,
    /// Failures after the last success of the batch (all of them if there was
    /// none): how the batch extends the breaker's run of consecutive failures.
    pub trailing_failures: u32,
    /// How long ago (milliseconds, when the batch was sent) a success of this
    /// batch is known to have happened, at the latest: a success breaks the
    /// fleet's run of failures only if that run started before it, so
    /// yesterday's successes never erase another instance's failures.
    /// 0 (the default) means just now; [`OutcomeBatch::UNKNOWN_AGE`], not
    /// known (then it breaks nothing).
    pub success_age_ms: u64,
    /// How long ago the batch's trailing failures started at the earliest:
    /// they extend the fleet's run only if no success the store knows of is
    /// newer. 0 (the default) means just now; [`OutcomeBatch::UNKNOWN_AGE`]
    /// makes them count toward the window only.
    pub run_age_ms: u64,
    /// Which instance counted the batch (a random id per replica), so that a
    /// [`fleet_quorum`](crate::PolicyBuilder::fleet_quorum) can count distinct
    /// instances.
    pub instance: u64,
    /// How long ago (milliseconds) the batch's outcomes happened, on average:
    /// the store counts them in the window bucket of that moment, not of the
    /// moment the batch arrived. 0 (the default): just now.
    pub counted_age_ms: u64,
    /// The instance judged its own outcomes against the policy and opened its
    /// own breaker: the store opens the breaker fleet-wide when enough distinct
    /// instances did so within the window (the policy's quorum; by default one).
    pub tripped: bool,
}

impl OutcomeBatch {
    /// An age that says "not known": the largest the stores take.
    pub const UNKNOWN_AGE: u64 = 1 << 40;

    /// Whether the batch holds no outcome and no trip report.
    pub fn is_empty(&self) -> bool {
        self.successes == 0 && self.failures == 0 && !self.tripped
    }
}

/// The answer to [`Store::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// The lease id of the granted permit (the id asked with), if granted.
    pub lease: Option<u64>,
    /// The breaker after the request.
    pub snapshot: Snapshot,
}

/// How a half-open probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// The dependency answered well: counts toward closing.
    Success,
    /// The dependency failed again: the breaker re-opens.
    Failure,
    /// The probe was dropped or its outcome ignored: the permit is freed, nothing counted.
    Cancelled,
}

/// A request for the fleet's health-check turn of an open breaker (see
/// [`Store::health`]), with the result of the check its holder ran, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    /// Who asks: one id per process and breaker.
    pub holder: u64,
    /// How long the turn is kept without asking again (a holder that dies
    /// hands it on after this).
    pub lease: Duration,
    /// What the holder's check found: `Some(true)` moves the open breaker to
    /// half-open at once, `Some(false)` keeps it open for at least `extend`.
    pub report: Option<bool>,
    /// The generation of the open state the check ran in: a report about
    /// another state is ignored.
    pub generation: u64,
    /// How long a failed check keeps the breaker open from now, at least.
    pub extend: Duration,
}

/// The answer to [`Store::health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTurn {
    /// The asker holds the turn: it runs the next check.
    pub holder: bool,
    /// The breaker after the request.
    pub snapshot: Snapshot,
}

/// An operator's command to a breaker.
///
/// Durations are cut to a year (and a zero duration counts as one
/// millisecond), the same in every store. A forced state keeps its breaker in
/// the store until it expires, even past the policy's `key_ttl`; one without
/// an expiry stays until reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force {
    /// Isolate: reject every call, for the given time (then closed, without
    /// probes) or until reset. [`Force::isolate`] says it by name.
    Open(Option<Duration>),
    /// Metrics only: admit every call and count outcomes, never tripping, for
    /// the given time or until reset (resilience4j's `METRICS_ONLY`).
    /// [`Force::metrics_only`] says it by name.
    Closed(Option<Duration>),
    /// Admit every call and count nothing, for the given time or until reset.
    Disabled(Option<Duration>),
    /// Open now as if tripped, for this long, then half-open with probes like
    /// any break (resilience4j's timed open): the breaker closes only if the
    /// dependency answers.
    OpenThenProbe(Duration),
    /// Back to closed, counters and backoff cleared.
    Reset,
}

impl Force {
    /// Reject every call for `duration` (`None`: until reset); the same as
    /// [`Force::Open`].
    pub fn isolate(duration: Option<Duration>) -> Self {
        Force::Open(duration)
    }

    /// Admit and count every call without ever tripping, for `duration`
    /// (`None`: until reset); the same as [`Force::Closed`].
    pub fn metrics_only(duration: Option<Duration>) -> Self {
        Force::Closed(duration)
    }
}

/// Why a store could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

/// The broad class of a [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached or did not answer in time.
    Unavailable,
    /// The store answered with data it should not hold (wrong type, bad values).
    Corrupt,
    /// The store refused the command (authentication, permissions).
    Refused,
    /// The store's own configuration is invalid (URL, key prefix).
    Config,
}

impl StoreError {
    /// A new error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The class of the error.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            StoreErrorKind::Unavailable => "store unavailable",
            StoreErrorKind::Corrupt => "store holds invalid data",
            StoreErrorKind::Refused => "store refused the command",
            StoreErrorKind::Config => "invalid store configuration",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

/// The shared state of breakers, keyed by name.
///
/// Every method runs one atomic step of the breaker state machine on the
/// store's own clock and answers with the breaker's [`Snapshot`] after it.
/// Implementations must publish every change of generation to the receivers of
/// [`subscribe`](Store::subscribe), and [`StoreEvent::Resync`] when some may
/// have been lost.
///
/// The `policy` travels with each call because the store keeps no configuration:
/// processes that share a breaker name should share its policy.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Counts a batch of outcomes; trips the breaker when the policy says so.
    fn record<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        batch: OutcomeBatch,
    ) -> StoreFuture<'a, Snapshot>;

    /// Asks for a half-open probe permit under the id `lease`, chosen by the
    /// caller and unique to this request (moving an open breaker whose break
    /// is over to half-open). Asking again with an id that holds a live
    /// permit answers with that permit.
    fn acquire<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        lease: u64,
    ) -> StoreFuture<'a, Acquired>;

    /// Returns a probe permit with the probe's result. With `generation` 0 the
    /// release is blind: the caller never heard whether the permit was
    /// granted (its request timed out or was cancelled); the permit is freed
    /// if `lease` holds one, and nothing is counted.
    fn release<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        generation: u64,
        lease: u64,
        result: ProbeResult,
    ) -> StoreFuture<'a, Snapshot>;

    /// Applies an operator's command.
    fn force<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        force: Force,
    ) -> StoreFuture<'a, Snapshot>;

    /// Reads a breaker's current state.
    fn snapshot<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
    ) -> StoreFuture<'a, Snapshot>;

    /// Lists every breaker the store holds (on Redis Cluster, on every master).
    fn list(&self) -> StoreFuture<'_, Vec<(String, Snapshot)>>;

    /// Applies an operator's command and keeps `note` (who and why) with
    /// the state it leaves, for [`info`](Store::info) to show until the
    /// breaker's next transition. [`force`](Store::force) is this with an
    /// empty note (it clears an earlier note).
    ///
    /// The default ignores the note; both stores of this crate keep it.
    fn force_noted<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        force: Force,
        note: &'a ForceNote,
    ) -> StoreFuture<'a, Snapshot> {
        let _ = note;
        self.force(name, policy, force)
    }

    /// One breaker as operators see it (no policy needed), or `None` when
    /// the store holds no record of it: a name never written, or a closed
    /// breaker with nothing worth keeping (healthy and idle).
    ///
    /// The default looks it up in [`list`](Store::list), without counts or
    /// note.
    fn info<'a>(&'a self, name: &'a BreakerName) -> StoreFuture<'a, Option<BreakerInfo>> {
        Box::pin(async move {
            let all = self.list().await?;
            Ok(all
                .into_iter()
                .find(|(n, _)| n == name.as_str())
                .map(|(n, s)| BreakerInfo::new(n, s)))
        })
    }

    /// Every breaker the store holds as operators see it, sorted by name
    /// (on Redis Cluster, from every master).
    ///
    /// The default builds them from [`list`](Store::list), without counts
    /// or notes.
    fn list_info(&self) -> StoreFuture<'_, Vec<BreakerInfo>> {
        Box::pin(async move {
            let all = self.list().await?;
            Ok(all
                .into_iter()
                .map(|(n, s)| BreakerInfo::new(n, s))
                .collect())
        })
    }

    /// Takes or keeps the fleet's health-check turn of an open breaker (one
    /// holder at a time, for `check.lease`), and applies the holder's
    /// report. A breaker that is not open has no turn: asking frees it.
    ///
    /// Stores that keep no turns answer with an error (the default), and
    /// layers with a health check then never run it.
    fn health<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        check: HealthCheck,
    ) -> StoreFuture<'a, HealthTurn> {
        let _ = (name, policy, check);
        Box::pin(std::future::ready(Err(StoreError::new(
            StoreErrorKind::Config,
            "this store keeps no health-check turns",
        ))))
    }

    /// Receives every transition of every breaker in the store from now on,
    /// and a [`StoreEvent::Resync`] whenever some may have been missed.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;
}

/// A shared store handle is a store.
impl<T: Store + ?Sized> Store for std::sync::Arc<T> {
    fn record<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        batch: OutcomeBatch,
    ) -> StoreFuture<'a, Snapshot> {
        (**self).record(name, policy, batch)
    }

    fn acquire<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        lease: u64,
    ) -> StoreFuture<'a, Acquired> {
        (**self).acquire(name, policy, lease)
    }

    fn release<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        generation: u64,
        lease: u64,
        result: ProbeResult,
    ) -> StoreFuture<'a, Snapshot> {
        (**self).release(name, policy, generation, lease, result)
    }

    fn force<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        force: Force,
    ) -> StoreFuture<'a, Snapshot> {
        (**self).force(name, policy, force)
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
    ) -> StoreFuture<'a, Snapshot> {
        (**self).snapshot(name, policy)
    }

    fn list(&self) -> StoreFuture<'_, Vec<(String, Snapshot)>> {
        (**self).list()
    }

    fn force_noted<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        force: Force,
        note: &'a ForceNote,
    ) -> StoreFuture<'a, Snapshot> {
        (**self).force_noted(name, policy, force, note)
    }

    fn info<'a>(&'a self, name: &'a BreakerName) -> StoreFuture<'a, Option<BreakerInfo>> {
        (**self).info(name)
    }

    fn list_info(&self) -> StoreFuture<'_, Vec<BreakerInfo>> {
        (**self).list_info()
    }

    fn health<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        check: HealthCheck,
    ) -> StoreFuture<'a, HealthTurn> {
        (**self).health(name, policy, check)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        (**self).subscribe()
    }
}

/// Says when processes sharing a breaker run different policies: at most once
/// a minute per store, so a rolling deploy logs a few lines, not one per flush.
#[derive(Debug, Default)]
pub(crate) struct PolicyConflicts {
    /// Seconds since the Unix epoch of the last report.
    last: AtomicU64,
}

impl PolicyConflicts {
    pub(crate) fn report(&self, name: &BreakerName, ours: u64, theirs: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last.load(Ordering::Relaxed);
        if now < last.saturating_add(60)
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        tracing::warn!(
            breaker = %name,
            ours = format_args!("{ours:013x}"),
            theirs = format_args!("{theirs:013x}"),
            "processes sharing this breaker run different policies; each write uses the writer's thresholds, permits and TTL, and windows are re-bucketed"
        );
    }
}
