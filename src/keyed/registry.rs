//! The bounded set of breakers of a keyed layer: at most `max_breakers`, and
//! those idle for `idle_timeout` are dropped, so request-derived keys cannot
//! grow memory without bound.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use foldhash::quality::RandomState;
use quick_cache::sync::Cache;
use quick_cache::Lifecycle;
use quick_cache::{OptionsBuilder, UnitWeighter};
use tokio::time::Instant;

use crate::key::breaker_name;
use crate::layer::{Rejection, Shared};
use crate::store::Store;
use crate::sync::observer::Observer;
use crate::sync::replica::Replica;
use crate::{BreakerName, PolicySet, StoreFailure};

pub(crate) struct Registry<C> {
    pub(crate) base: Arc<Shared<C>>,
    pub(crate) policies: PolicySet,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) max_breakers: usize,
    pub(crate) idle_timeout: Duration,
    /// Bounded, with O(1) eviction (quick_cache's S3-FIFO: scan-resistant,
    /// so a flood of one-off keys never displaces the breakers in use), and
    /// a seeded hash (keys come from requests).
    map: Cache<String, Arc<Shared<C>>, UnitWeighter, RandomState, Evictions>,
    /// Breakers dropped (evicted at capacity, or swept idle), and how many
    /// of those the metrics were told of.
    evictions: Arc<AtomicU64>,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    reported: AtomicU64,
    /// When idle breakers were last swept (ms since `epoch`).
    last_sweep: AtomicU64,
    epoch: Instant,
}

/// Keys per shard of the registry: quick_cache splits its capacity evenly
/// over shards, so an unlucky hash evicts from a full shard while others
/// have room. One shard holds exactly `max_breakers`; big registries get a
/// shard per this many keys, where the imbalance is a fraction of a percent.
const KEYS_PER_SHARD: usize = 65_536;

/// Counts the breakers the cache evicts at capacity.
#[derive(Debug, Clone)]
struct Evictions(Arc<AtomicU64>);

impl<K, V> Lifecycle<K, V> for Evictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _: &mut Self::RequestState, _: K, _: V) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn registry_cache<V: Clone>(
    max_breakers: usize,
    evictions: Evictions,
) -> Cache<String, V, UnitWeighter, RandomState, Evictions> {
    let shards = max_breakers.div_ceil(KEYS_PER_SHARD).next_power_of_two();
    let options = OptionsBuilder::new()
        .estimated_items_capacity(max_breakers)
        .weight_capacity(max_breakers as u64)
        .shards(shards)
        .build();
    match options {
        Ok(options) => Cache::with_options(
            options,
            UnitWeighter,
            RandomState::default(),
            evictions.clone(),
        ),
        // Only a zero capacity is refused, and `limits` rejects that.
        Err(_) => Cache::with(
            max_breakers,
            max_breakers as u64,
            UnitWeighter,
            RandomState::default(),
            evictions.clone(),
        ),
    }
}

impl<C: Clone> Registry<C> {
    pub(crate) fn new(
        base: Arc<Shared<C>>,
        policies: PolicySet,
        store: Arc<dyn Store>,
        max_breakers: usize,
        idle_timeout: Duration,
    ) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        Registry {
            base,
            policies,
            store,
            max_breakers,
            idle_timeout,
            map: registry_cache(max_breakers, Evictions(evictions.clone())),
            evictions,
            reported: AtomicU64::new(0),
            last_sweep: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The breaker for `key` (the base breaker for none), created on first use.
    pub(crate) fn get(&self, key: Option<Cow<'_, str>>) -> Arc<Shared<C>> {
        let Some(key) = key else {
            return self.base.clone();
        };
        if let Some(shared) = self.map.get(&*key) {
            shared.replica.touch();
            return shared;
        }
        self.sweep();
        // One breaker per key even when callers race to create it.
        let made = self.map.get_or_insert_with(&*key, || {
            Ok::<_, std::convert::Infallible>(Arc::new(self.make(&key)))
        });
        #[cfg(feature = "metrics")]
        self.report();
        match made {
            Ok(shared) => shared,
            Err(never) => match never {},
        }
    }

    /// Tells the metrics the registry's size and its evictions since the
    /// last report (on the path that creates breakers only).
    #[cfg(feature = "metrics")]
    fn report(&self) {
        let evicted = self.evictions.load(Ordering::Relaxed);
        let before = self.reported.swap(evicted, Ordering::Relaxed);
        crate::metrics::registry(
            &self.base.replica.name,
            self.map.len(),
            evicted.saturating_sub(before),
        );
    }

    /// Drops idle breakers as new keys arrive: at most every half
    /// `idle_timeout`, a sweep drops the breakers no call used since the two
    /// sweeps before (so unused for at least `idle_timeout`). Only the path
    /// that creates a breaker reads the clock; a call on a known key never.
    fn sweep(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let every = u64::try_from((self.idle_timeout / 2).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let swept = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(swept) < every
            || self
                .last_sweep
                .compare_exchange(swept, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let before = self.map.len();
        self.map.retain(|_, shared| shared.replica.idle_sweep() < 3);
        let swept = before.saturating_sub(self.map.len());
        self.evictions.fetch_add(swept as u64, Ordering::Relaxed);
    }

    /// The breaker for `key` if it exists now.
    pub(crate) fn find(&self, key: &str) -> Option<Arc<Shared<C>>> {
        // A look, not a use: it must not keep the breaker from eviction.
        self.map.peek(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn make(&self, key: &str) -> Shared<C> {
        let base = &self.base.replica.name;
        // `breaker_name` only makes valid names (at most MAX_NAME_LEN bytes,
        // escaped, from a valid base); the base name is a fallback never taken.
        let name =
            BreakerName::new(breaker_name(base.as_str(), key)).unwrap_or_else(|_| base.clone());
        // Every keyed breaker shares the base breaker's hub: one
        // subscription for the whole layer.
        let replica = Replica::new(
            name,
            self.policies.policy_for(key).clone(),
            self.base.replica.hub.clone(),
            1,
            Observer::new(
                self.base.replica.name.clone(),
                self.base.replica.observer.listener(),
            ),
        );
        replica.degraded.set_mode(self.failure_mode());
        let replica = Arc::new(replica);
        replica.hub.join(&replica);
        crate::sync::driver::start(&replica);
        Shared {
            replica,
            classifier: self.base.classifier.clone(),
            call_timeout: self.base.call_timeout,
            rejection: Rejection::Fail,
        }
    }

    fn failure_mode(&self) -> StoreFailure {
        self.base.replica.degraded.mode()
    }
}
