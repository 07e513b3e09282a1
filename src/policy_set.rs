//! Different policies for different keys: a default and overrides by key or
//! by prefix pattern, in code or from a configuration file.

use crate::Policy;

/// A default policy and overrides for keys that match a pattern.
///
/// A pattern is an exact key (`/search`) or a prefix ending in `*`
/// (`/payments/*`, `payments.internal*`). The exact match wins, then the
/// longest matching prefix, then the default.
///
/// ```
/// use std::time::Duration;
/// use distributed_circuit_breaker::{Policy, PolicySet};
///
/// let strict = Policy::builder().consecutive_failures(2).build()?;
/// let lenient = Policy::builder().consecutive_failures(20).build()?;
/// let set = PolicySet::new(Policy::default())
///     .with("/payments/*", strict.clone())
///     .with("/search", lenient.clone());
/// assert_eq!(set.policy_for("/payments/{id}"), &strict);
/// assert_eq!(set.policy_for("/search"), &lenient);
/// assert_eq!(set.policy_for("/other"), &Policy::default());
/// # Ok::<(), distributed_circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySet {
    default: Policy,
    overrides: Vec<(String, Policy)>,
}

impl PolicySet {
    /// Every key gets `default` unless an override matches.
    pub fn new(default: Policy) -> Self {
        Self {
            default,
            overrides: Vec::new(),
        }
    }

    /// Uses `policy` for keys matching `pattern` (exact, or prefix ending in `*`).
    pub fn with(mut self, pattern: impl Into<String>, policy: Policy) -> Self {
        let pattern = pattern.into();
        self.overrides.retain(|(p, _)| *p != pattern);
        self.overrides.push((pattern, policy));
        self
    }

    /// The default policy.
    pub fn default_policy(&self) -> &Policy {
        &self.default
    }

    /// The policy for `key`.
    pub fn policy_for(&self, key: &str) -> &Policy {
        if let Some((_, policy)) = self.overrides.iter().find(|(p, _)| p == key) {
            return policy;
        }
        self.overrides
            .iter()
            .filter_map(|(pattern, policy)| {
                let prefix = pattern.strip_suffix('*')?;
                key.starts_with(prefix).then_some((prefix.len(), policy))
            })
            .max_by_key(|(len, _)| *len)
            .map_or(&self.default, |(_, policy)| policy)
    }
}

impl From<Policy> for PolicySet {
    fn from(policy: Policy) -> Self {
        PolicySet::new(policy)
    }
}
