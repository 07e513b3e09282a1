//! Hands events to a user's listener on a task of its own: a listener that
//! blocks or panics must never stall or kill a breaker's background task
//! (which keeps the fleet informed). One task per listener, shared by every
//! breaker that reports to it (a keyed layer's too); events stay in order.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::events::{Event, Listener};
use crate::store::BreakerName;

/// Events waiting for a slow listener; beyond this they are dropped (and
/// counted in the log), never waited for.
const BACKLOG: usize = 1024;

/// Where a breaker's events go.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    listener: Arc<dyn Listener>,
    /// `None` outside a tokio runtime: then the listener is called in place.
    queue: Option<mpsc::Sender<(BreakerName, Event)>>,
    dropped: AtomicU64,
    /// Whether anyone listens (`()` does not): nothing is queued then.
    listening: bool,
    panic_logged: AtomicBool,
}

impl Dispatcher {
    /// Nobody listens.
    pub(crate) fn silent() -> Self {
        Dispatcher {
            inner: Arc::new(Inner {
                listener: Arc::new(()),
                queue: None,
                dropped: AtomicU64::new(0),
                listening: false,
                panic_logged: AtomicBool::new(false),
            }),
        }
    }

    /// Starts `listener`'s task (when a tokio runtime is at hand).
    pub(crate) fn new(listener: Arc<dyn Listener>) -> Self {
        let queue = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (send, receive) = mpsc::channel(BACKLOG);
            runtime.spawn(run(listener.clone(), receive));
            send
        });
        Dispatcher {
            inner: Arc::new(Inner {
                listener,
                queue,
                dropped: AtomicU64::new(0),
                listening: true,
                panic_logged: AtomicBool::new(false),
            }),
        }
    }

    /// Hands one event over; never waits.
    pub(crate) fn send(&self, name: &BreakerName, event: Event) {
        let inner = &self.inner;
        if !inner.listening {
            return;
        }
        match &inner.queue {
            Some(queue) => {
                if queue.try_send((name.clone(), event)).is_err() {
                    let dropped = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(breaker = %name, dropped, "breaker events dropped: the listener is behind (or gone)");
                    }
                }
            }
            None => call(&*inner.listener, name, &event, &inner.panic_logged),
        }
    }
}

async fn run(listener: Arc<dyn Listener>, mut events: mpsc::Receiver<(BreakerName, Event)>) {
    let logged = AtomicBool::new(false);
    while let Some((name, event)) = events.recv().await {
        call(&*listener, &name, &event, &logged);
    }
}

/// Calls the listener; a panic is caught and logged (once per listener).
fn call(listener: &dyn Listener, name: &BreakerName, event: &Event, logged: &AtomicBool) {
    let called = std::panic::catch_unwind(AssertUnwindSafe(|| listener.on_event(name, event)));
    if called.is_err() && !logged.swap(true, Ordering::Relaxed) {
        tracing::error!(breaker = %name, "a breaker event listener panicked; it keeps receiving events (logged once)");
    }
}
