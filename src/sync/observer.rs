//! What a replica tells the world: the events of its breaker, queued where
//! they happen and handed to the listener (and to tracing and metrics) by the
//! background task, off every call's path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::time::Instant;

use crate::events::{Cause, Event, Listener, Scope, TransitionEvent};
use crate::store::BreakerName;
use crate::sync::dispatch::Dispatcher;
use crate::State;

/// Events kept for the background task; beyond this the oldest are dropped
/// (a listener that lags that far behind hears a count of what it missed in
/// the log).
const QUEUE: usize = 256;

pub(crate) struct Observer {
    listener: RwLock<Dispatcher>,
    queue: Mutex<VecDeque<Event>>,
    dropped: AtomicU64,
    /// Calls rejected since the last report, by the state they met.
    rejected: [AtomicU64; 6],
    /// When the store stopped answering.
    degraded_since: Mutex<Option<Instant>>,
    /// What this replica's latest own trip saw, for the fleet's event.
    last_trip: Mutex<Option<Cause>>,
    /// The latest batch with failures this replica handed to the store.
    last_report: Mutex<Option<Cause>>,
    /// A panic of the health check was logged.
    check_panicked: std::sync::atomic::AtomicBool,
    /// The name metrics label this breaker with: its own, or a keyed
    /// layer's base name (one series per layer, not per key).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) label: BreakerName,
    /// Where outcome counts go.
    #[cfg(feature = "metrics")]
    pub(crate) outcomes: crate::metrics::OutcomeCounters,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Observer {
    pub(crate) fn new(label: BreakerName, listener: Dispatcher) -> Self {
        #[cfg(feature = "metrics")]
        crate::metrics::created(&label);
        Observer {
            listener: RwLock::new(listener),
            queue: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            rejected: Default::default(),
            degraded_since: Mutex::new(None),
            last_trip: Mutex::new(None),
            last_report: Mutex::new(None),
            check_panicked: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "metrics")]
            outcomes: crate::metrics::OutcomeCounters::new(&label),
            label,
        }
    }

    /// Sends this breaker's events to `listener` (on a task of its own).
    pub(crate) fn set_listener(&self, listener: Arc<dyn Listener>) {
        *self
            .listener
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Dispatcher::new(listener);
    }

    /// Where this breaker's events go (keyed breakers share their base's).
    pub(crate) fn listener(&self) -> Dispatcher {
        self.listener
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn push(&self, event: Event) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= QUEUE {
            queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(event);
    }

    /// A change of this replica's state: logged now, heard by the listener
    /// with the next delivery.
    pub(crate) fn transition(
        &self,
        name: &BreakerName,
        from: State,
        to: State,
        generation: u64,
        scope: Scope,
        cause: Cause,
    ) {
        if scope == Scope::Local && to == State::Open {
            *self
                .last_trip
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(cause);
        }
        log_transition(name, "transition", from, to, generation, scope, &cause);
        self.push(Event::Transition(TransitionEvent {
            from,
            to,
            generation,
            scope,
            cause,
        }));
    }

    /// The cause of this replica's latest own trip, if it tripped.
    pub(crate) fn last_trip(&self) -> Option<Cause> {
        *self
            .last_trip
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this is the health check's first panic (to log it once).
    pub(crate) fn first_check_panic(&self) -> bool {
        !self.check_panicked.swap(true, Ordering::Relaxed)
    }

    /// A batch with failures went to the store: if it trips the fleet,
    /// these are its numbers.
    pub(crate) fn reported(&self, batch: Cause) {
        *self
            .last_report
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(batch);
    }

    pub(crate) fn last_report(&self) -> Option<Cause> {
        *self
            .last_report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A fleet-wide transition this process made.
    pub(crate) fn fleet_transition(&self, name: &BreakerName, event: TransitionEvent) {
        log_transition(
            name,
            "fleet transition",
            event.from,
            event.to,
            event.generation,
            Scope::Fleet,
            &event.cause,
        );
        self.push(Event::FleetTransition(event));
    }

    /// An outcome counted under a generation that is gone (the store never
    /// hears of it; the metrics do).
    #[cfg(feature = "metrics")]
    pub(crate) fn late(&self, outcome: crate::Outcome, slow: bool) {
        let (successes, failures) = match outcome {
            crate::Outcome::Success => (1, 0),
            crate::Outcome::Failure => (0, 1),
            crate::Outcome::Ignore => return,
        };
        self.outcomes.add(successes, failures, u64::from(slow));
    }

    /// One call rejected in `state` (the rejected path, never the closed one).
    pub(crate) fn rejected(&self, state: State) {
        if let Some(count) = self.rejected.get(state.index()) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn degraded(&self, error: String) {
        let mut since = self
            .degraded_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        since.get_or_insert_with(Instant::now);
        drop(since);
        self.push(Event::DegradedEntered { error });
    }

    /// Whether the store was lost and the loss was told (the metrics'
    /// degraded gauge counts this breaker).
    #[cfg(feature = "metrics")]
    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    pub(crate) fn recovered(&self) {
        let since = self
            .degraded_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let after = since.map_or(std::time::Duration::ZERO, |at| at.elapsed());
        self.push(Event::DegradedLeft { after });
    }

    /// Hands what happened since the last delivery to the listener and the
    /// metrics.
    pub(crate) fn deliver(&self, name: &BreakerName) {
        let mut rejected = [0u64; 6];
        for (taken, count) in rejected.iter_mut().zip(&self.rejected) {
            *taken = count.swap(0, Ordering::Relaxed);
        }
        let events: Vec<Event> = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.is_empty() && rejected.iter().all(|n| *n == 0) {
                return;
            }
            queue.drain(..).collect()
        };
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(breaker = %name, dropped, "breaker events dropped: the listener is behind");
        }
        let listener = self.listener();
        for event in events {
            #[cfg(feature = "metrics")]
            crate::metrics::event(&self.label, &event);
            listener.send(name, event);
        }
        for (state, count) in State::ALL.into_iter().zip(rejected) {
            if count == 0 {
                continue;
            }
            let event = Event::Rejected { count, state };
            #[cfg(feature = "metrics")]
            crate::metrics::event(&self.label, &event);
            listener.send(name, event);
        }
    }
}

/// The `info` line of a transition; its fields are documented in the README.
fn log_transition(
    name: &BreakerName,
    what: &'static str,
    from: State,
    to: State,
    generation: u64,
    scope: Scope,
    cause: &Cause,
) {
    tracing::info!(
        breaker = %name,
        from = from.as_str(),
        to = to.as_str(),
        generation,
        scope = scope.as_str(),
        rule = cause.rule.as_str(),
        failures = cause.failures,
        slow = cause.slow,
        calls = cause.calls,
        run = cause.run,
        "breaker {what}"
    );
}
