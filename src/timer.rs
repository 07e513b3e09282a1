//! Whether a breaker's calls carry a call timeout: a type, so that a layer
//! without one pays nothing for the timer (not even the room for it in every
//! response future), and one with one keeps the timer inline (no allocation).
//!
//! [`DistributedCircuitBreakerLayer::call_timeout`](crate::DistributedCircuitBreakerLayer::call_timeout)
//! turns a layer's [`Untimed`] into [`Timed`]; you name these types only if
//! you name the service's type.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// The call-timeout choice of a layer: [`Untimed`] or [`Timed`].
pub trait CallTimer: sealed::Sealed + Send + Sync + 'static {
    /// The timer a response future holds.
    #[doc(hidden)]
    type Sleep: Future<Output = ()>;

    /// A timer that fires at `deadline`, if this kind has timers.
    #[doc(hidden)]
    fn sleep_until(deadline: Instant) -> Option<Self::Sleep>;
}

/// Calls without a call timeout (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Untimed;

/// Calls with a call timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timed;

/// The timer of calls that have none: never made.
#[doc(hidden)]
#[derive(Debug)]
pub enum NoSleep {}

impl Future for NoSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        match *self {}
    }
}

impl CallTimer for Untimed {
    type Sleep = NoSleep;

    fn sleep_until(_: Instant) -> Option<NoSleep> {
        None
    }
}

impl CallTimer for Timed {
    type Sleep = Sleep;

    fn sleep_until(deadline: Instant) -> Option<Sleep> {
        Some(tokio::time::sleep_until(deadline))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Untimed {}
    impl Sealed for super::Timed {}
}
