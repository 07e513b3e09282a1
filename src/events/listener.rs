//! The [`Listener`] hook.

use crate::events::Event;
use crate::BreakerName;

/// Hears a breaker's [`Event`]s.
///
/// Called on a task of its own (one per listener), never on a call's path
/// nor on a breaker's background task; a panic is caught and logged once.
/// Keep it quick all the same: events it has not taken beyond 1,024 are
/// dropped. Implemented for `()` (hears nothing)
/// and for closures `Fn(&BreakerName, &Event)`.
///
/// ```
/// use distributed_circuit_breaker::events::{Event, Listener};
/// use distributed_circuit_breaker::BreakerName;
///
/// #[derive(Default)]
/// struct Pager;
///
/// impl Listener for Pager {
///     fn on_event(&self, breaker: &BreakerName, event: &Event) {
///         if let Event::FleetTransition(t) = event {
///             eprintln!("page: {breaker} is {}", t.to);
///         }
///     }
/// }
/// ```
pub trait Listener: Send + Sync + 'static {
    /// One event of the breaker `breaker` (for a keyed layer, the key's
    /// breaker).
    fn on_event(&self, breaker: &BreakerName, event: &Event);
}

impl Listener for () {
    fn on_event(&self, _: &BreakerName, _: &Event) {}
}

impl<F> Listener for F
where
    F: Fn(&BreakerName, &Event) + Send + Sync + 'static,
{
    fn on_event(&self, breaker: &BreakerName, event: &Event) {
        self(breaker, event)
    }
}
