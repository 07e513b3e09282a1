//! Deciding whether a call succeeded, failed, or does not count.
//!
//! A [`Classifier`] looks at each call's result and duration and answers an
//! [`Outcome`]. Any `Fn(Result<&Res, &Err>, Duration) -> Outcome` closure is a
//! classifier; [`ErrorsAsFailures`] (the default) and [`HttpClassifier`] are
//! the stock ones.
//!
//! ```
//! use std::time::Duration;
//! use distributed_circuit_breaker::{Classifier, Outcome};
//!
//! // Count only timeouts of our own as failures; ignore everything else.
//! let classify = |result: Result<&u16, &std::io::Error>, _elapsed: Duration| match result {
//!     Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Outcome::Failure,
//!     Err(_) => Outcome::Ignore,
//!     Ok(_) => Outcome::Success,
//! };
//! assert_eq!(classify.classify(Ok(&200), Duration::ZERO), Outcome::Success);
//! ```

mod errors_as_failures;
mod http;

pub use self::errors_as_failures::ErrorsAsFailures;
pub use self::http::HttpClassifier;

use std::time::Duration;

use crate::Deferred;

/// How one call counts toward the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency did its job.
    Success,
    /// The dependency failed; counts toward tripping the breaker.
    Failure,
    /// The call says nothing about the dependency's health (a cancelled call, a
    /// caller's mistake); it is not counted at all.
    Ignore,
}

/// Classifies the result of a call through the breaker.
///
/// `elapsed` is how long the inner service took. Slowness is judged by the
/// policy's `slow_call_duration` on its own; a classifier may still use
/// `elapsed`, e.g. to count very slow successes as failures. Classifiers that
/// never look at it say so with [`uses_elapsed`](Self::uses_elapsed), which
/// spares two clock reads per call.
pub trait Classifier<Res, Err> {
    /// The outcome of one call.
    fn classify(&self, result: Result<&Res, &Err>, elapsed: Duration) -> Outcome;

    /// Whether [`classify`](Self::classify) reads `elapsed`. When it does not,
    /// and the policy judges no slow calls, the breaker does not read the clock
    /// and passes `Duration::ZERO`. Defaults to `true`.
    fn uses_elapsed(&self) -> bool {
        true
    }

    /// For a result whose outcome is only known later (at the end of a
    /// response stream), the handle through which it will be reported; the
    /// breaker then counts nothing now. Defaults to `None`: classify at once.
    fn defer(&self, result: Result<&Res, &Err>) -> Option<Deferred> {
        let _ = result;
        None
    }
}

impl<F, Res, Err> Classifier<Res, Err> for F
where
    F: Fn(Result<&Res, &Err>, Duration) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &Err>, elapsed: Duration) -> Outcome {
        self(result, elapsed)
    }
}
