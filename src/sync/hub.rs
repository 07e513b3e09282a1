//! Routes a store's announcements to the replicas they name: one subscription
//! and one task per hub (a layer with all its keyed breakers), instead of one
//! per breaker. A transition reaches the one replica it names, without a
//! clone per breaker; a resync (announcements were missed) reaches every one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};

use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use crate::store::Store;
use crate::sync::replica::Replica;
use crate::{BreakerName, StoreEvent};

pub(crate) struct Hub {
    pub(crate) store: Arc<dyn Store>,
    /// Usually one replica per name; two while an evicted keyed breaker still
    /// serves calls in flight and its successor already does.
    routes: Mutex<HashMap<BreakerName, Vec<Weak<Replica>>>>,
    /// Subscribed at once (nothing announced after the hub exists is
    /// missed), handed to the task when a runtime starts it.
    events: Mutex<Option<broadcast::Receiver<StoreEvent>>>,
    started: AtomicBool,
    /// Ends the hub's task when the hub is dropped.
    dropped: Arc<Notify>,
    /// Reads that a crowd may ask at once (first reads of new breakers, a
    /// resync of every breaker): a few at a time, so that each one's
    /// `store_timeout` measures Redis, not a queue of thousands behind it.
    reads: Semaphore,
}

/// Crowd reads in flight per hub.
const CROWD_READS: usize = 32;
/// How long a crowd read waits for its turn, in `store_timeout`s.
const PATIENCE: u32 = 20;

impl Drop for Hub {
    fn drop(&mut self) {
        self.dropped.notify_one();
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn new(store: Arc<dyn Store>) -> Arc<Hub> {
        // Every round trip timed and counted.
        #[cfg(feature = "metrics")]
        let store: Arc<dyn Store> = Arc::new(crate::metrics::Metered(store));
        Arc::new(Hub {
            events: Mutex::new(Some(store.subscribe())),
            store,
            routes: Mutex::new(HashMap::new()),
            started: AtomicBool::new(false),
            dropped: Arc::new(Notify::new()),
            reads: Semaphore::new(CROWD_READS),
        })
    }

    /// Routes `replica`'s announcements to it from now on (called as it is
    /// created, before it first reads the store).
    pub(crate) fn join(&self, replica: &Arc<Replica>) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = routes.entry(replica.name.clone()).or_default();
        entry.retain(|r| r.strong_count() > 0);
        entry.push(Arc::downgrade(replica));
    }

    /// Starts the hub's task if it is not running (inside a tokio runtime:
    /// the caller is a driver).
    pub(crate) fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let events = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(events) = events {
            tokio::spawn(route(Arc::downgrade(self), events, self.dropped.clone()));
        }
    }

    /// Forgets `name`'s replicas that are gone (called as one is dropped).
    pub(crate) fn leave(&self, name: &BreakerName) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = routes.get_mut(name) {
            entry.retain(|r| r.strong_count() > 0);
            if entry.is_empty() {
                routes.remove(name);
            }
        }
    }

    /// A turn for a crowd read, waiting at most `PATIENCE` store timeouts
    /// (`None`: go ahead without one, the store is slow anyway).
    pub(crate) async fn crowd_read(&self, store_timeout: Duration) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout(store_timeout * PATIENCE, self.reads.acquire())
            .await
            .ok()?
            .ok()
    }

    fn replicas_named(&self, name: &str) -> Vec<Arc<Replica>> {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes
            .get(name)
            .map(|entry| entry.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    fn all(&self) -> Vec<Weak<Replica>> {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes.values().flatten().cloned().collect()
    }
}

/// The hub's task: ends when the hub is gone or the store's channel closes.
async fn route(hub: Weak<Hub>, mut events: broadcast::Receiver<StoreEvent>, dropped: Arc<Notify>) {
    loop {
        let event = tokio::select! {
            biased;
            () = dropped.notified() => return,
            event = events.recv() => event,
        };
        let Some(hub) = hub.upgrade() else {
            return;
        };
        match event {
            Ok(StoreEvent::Transition(transition)) => {
                for replica in hub.replicas_named(&transition.name) {
                    replica.deliver(transition.clone());
                }
            }
            Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => {
                for replica in hub.all() {
                    if let Some(replica) = replica.upgrade() {
                        replica.deliver_resync();
                    }
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
