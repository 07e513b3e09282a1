//! The bounded set of breakers of a keyed layer: at most `max_breakers`, and
//! those idle for `idle_timeout` are dropped, so request-derived keys cannot
//! grow memory without bound.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::key::breaker_name;
use crate::layer::{Rejection, Shared};
use crate::store::Store;
use crate::sync::replica::Replica;
use crate::{BreakerName, PolicySet, StoreFailure};

pub(crate) struct Registry<C> {
    pub(crate) base: Arc<Shared<C>>,
    pub(crate) policies: PolicySet,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) max_breakers: usize,
    pub(crate) idle_timeout: Duration,
    map: RwLock<HashMap<Box<str>, Slot<C>>>,
    last_sweep: AtomicU64,
    epoch: Instant,
}

struct Slot<C> {
    shared: Arc<Shared<C>>,
    /// Milliseconds since the registry's epoch.
    last_used: AtomicU64,
}

impl<C: Clone> Registry<C> {
    pub(crate) fn new(
        base: Arc<Shared<C>>,
        policies: PolicySet,
        store: Arc<dyn Store>,
        max_breakers: usize,
        idle_timeout: Duration,
    ) -> Self {
        Registry {
            base,
            policies,
            store,
            max_breakers,
            idle_timeout,
            map: RwLock::new(HashMap::new()),
            last_sweep: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The breaker for `key` (the base breaker for none), created on first use.
    pub(crate) fn get(&self, key: Option<Cow<'_, str>>) -> Arc<Shared<C>> {
        let Some(key) = key else {
            return self.base.clone();
        };
        let now = self.now();
        {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = map.get(&*key) {
                slot.last_used.store(now, Ordering::Relaxed);
                return slot.shared.clone();
            }
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = map.get(&*key) {
            return slot.shared.clone();
        }
        let idle = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let swept = self.last_sweep.load(Ordering::Relaxed);
        if map.len() >= self.max_breakers || now.saturating_sub(swept) >= idle / 2 {
            map.retain(|_, slot| now.saturating_sub(slot.last_used.load(Ordering::Relaxed)) < idle);
            self.last_sweep.store(now, Ordering::Relaxed);
        }
        while map.len() >= self.max_breakers {
            let oldest = map
                .iter()
                .min_by_key(|(_, slot)| slot.last_used.load(Ordering::Relaxed))
                .map(|(key, _)| key.clone());
            match oldest {
                Some(oldest) => map.remove(&oldest),
                None => break,
            };
        }
        let shared = Arc::new(self.make(&key));
        map.insert(
            key.into_owned().into_boxed_str(),
            Slot {
                shared: shared.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        shared
    }

    /// The breaker for `key` if it exists now.
    pub(crate) fn find(&self, key: &str) -> Option<Arc<Shared<C>>> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.get(key).map(|slot| slot.shared.clone())
    }

    pub(crate) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
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

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
