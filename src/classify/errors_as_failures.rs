use std::time::Duration;

use super::{Classifier, Outcome};

/// The default classifier: every `Ok` is a success, every `Err` a failure.
///
/// ```
/// use std::time::Duration;
/// use distributed_circuit_breaker::{Classifier, ErrorsAsFailures, Outcome};
///
/// let c = ErrorsAsFailures;
/// assert_eq!(Classifier::<(), ()>::classify(&c, Err(&()), Duration::ZERO), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorsAsFailures;

impl<Res, Err> Classifier<Res, Err> for ErrorsAsFailures {
    fn classify(&self, result: Result<&Res, &Err>, _elapsed: Duration) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }

    fn uses_elapsed(&self) -> bool {
        false
    }
}
