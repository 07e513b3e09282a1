//! The [`Listener`] hook.

use crate::events::Event;
use crate::BreakerName;

/// Hears a breaker's [`Event`]s.
///
/// Called by the breaker's background task, never on a call's path; keep it
/// quick (hand slow work to a channel). Implemented for `()` (hears nothing)
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
