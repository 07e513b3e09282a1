//! Outcomes known only after the response: at the end of a response stream,
//! where gRPC puts its status.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::sync::permit::Admission;
use crate::sync::replica::Replica;
use crate::Outcome;

/// A call whose outcome is reported later, by whoever holds this handle (a
/// response body wrapper, typically). Made by a [`Classifier`](crate::Classifier)
/// that returns it from [`defer`](crate::Classifier::defer).
///
/// The outcome counts once, when [`finish`](Self::finish) is first called. If
/// every handle is dropped without it, the call counts as
/// [`Outcome::Ignore`] and a half-open probe permit goes back to the store.
#[derive(Clone, Default)]
pub struct Deferred {
    slot: Arc<Mutex<Slot>>,
}

#[derive(Default)]
enum Slot {
    /// Neither the call nor its outcome has arrived.
    #[default]
    Empty,
    /// The call waits for its outcome.
    Waiting(Recorder),
    /// The outcome arrived first (kept for the call).
    Early(Outcome),
    Done,
}

/// What the breaker hands over for a deferred outcome.
pub(crate) struct Recorder {
    pub(crate) admission: Admission,
    pub(crate) replica: Arc<Replica>,
    pub(crate) slow: bool,
}

impl Recorder {
    fn finish(self, outcome: Outcome) {
        self.admission.finish(&self.replica, outcome, self.slow);
    }
}

impl Deferred {
    /// A handle with nothing attached yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports the call's outcome (only the first report counts).
    pub fn finish(&self, outcome: Outcome) {
        let mut slot = self.lock();
        match std::mem::replace(&mut *slot, Slot::Done) {
            Slot::Waiting(recorder) => {
                drop(slot);
                recorder.finish(outcome);
            }
            Slot::Empty => *slot = Slot::Early(outcome),
            earlier @ (Slot::Early(_) | Slot::Done) => *slot = earlier,
        }
    }

    /// Attaches the call (done by the breaker when the response arrives).
    pub(crate) fn attach(&self, recorder: Recorder) {
        let mut slot = self.lock();
        match std::mem::replace(&mut *slot, Slot::Done) {
            Slot::Early(outcome) => {
                drop(slot);
                recorder.finish(outcome);
            }
            Slot::Empty => *slot = Slot::Waiting(recorder),
            // Attached twice: the second call is not counted.
            other => *slot = other,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // Nothing panics under this lock; the slot is always consistent.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.lock() {
            Slot::Empty => "empty",
            Slot::Waiting(_) => "waiting for the outcome",
            Slot::Early(_) => "outcome before the call",
            Slot::Done => "done",
        };
        f.debug_struct("Deferred").field("state", &state).finish()
    }
}
