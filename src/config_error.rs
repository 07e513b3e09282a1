//! The error every builder returns for a value it cannot accept.

use std::borrow::Cow;
use std::fmt;

/// A configuration value was rejected; the message names the field.
///
/// Returned by [`PolicyBuilder::build`](crate::PolicyBuilder::build),
/// [`BreakerName::new`](crate::BreakerName::new) and the layer constructors, so a
/// bad value stops the program at start-up instead of misbehaving under load.
///
/// ```
/// use distributed_circuit_breaker::Policy;
///
/// let err = Policy::builder().failure_rate(1.5).build().unwrap_err();
/// assert_eq!(err.field(), "failure_rate");
/// assert!(err.to_string().contains("failure_rate"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The name of the rejected field, e.g. `"failure_rate"`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Prefixes the field with where it sits, e.g. `routes["/pay"].failure_rate`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = Cow::Owned(format!("{parent}.{}", self.field));
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}
