//! Policies from configuration files: `Deserialize` structs whose errors name
//! the key and the field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::{ConfigError, Policy, PolicyBuilder, PolicySet};

/// One policy as configuration. Every field is optional (the
/// [`PolicyBuilder`] default applies); durations are strings such as
/// `"250ms"`, `"5s"`, `"2m"`, `"1h"`.
///
/// ```
/// use distributed_circuit_breaker::PolicyConfig;
///
/// let config: PolicyConfig = serde_json::from_str(r#"{"failure_rate": 0.5, "window": "30s"}"#).unwrap();
/// let policy = config.build()?;
/// assert_eq!(policy.window(), std::time::Duration::from_secs(30));
/// # Ok::<(), distributed_circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// See [`PolicyBuilder::consecutive_failures`]; `0` turns the rule off.
    pub consecutive_failures: Option<u32>,
    /// See [`PolicyBuilder::failure_rate`].
    pub failure_rate: Option<f64>,
    /// See [`PolicyBuilder::slow_call_rate`].
    pub slow_call_rate: Option<f64>,
    /// See [`PolicyBuilder::slow_call_duration`].
    pub slow_call_duration: Option<String>,
    /// See [`PolicyBuilder::minimum_calls`].
    pub minimum_calls: Option<u32>,
    /// See [`PolicyBuilder::window`].
    pub window: Option<String>,
    /// See [`PolicyBuilder::window_buckets`].
    pub window_buckets: Option<u32>,
    /// See [`PolicyBuilder::break_duration`].
    pub break_duration: Option<String>,
    /// See [`PolicyBuilder::backoff`]; needs `backoff_max`.
    pub backoff_multiplier: Option<f64>,
    /// See [`PolicyBuilder::backoff`].
    pub backoff_max: Option<String>,
    /// See [`PolicyBuilder::jitter`].
    pub jitter: Option<f64>,
    /// See [`PolicyBuilder::half_open_permits`].
    pub half_open_permits: Option<u32>,
    /// See [`PolicyBuilder::successes_to_close`].
    pub successes_to_close: Option<u32>,
    /// See [`PolicyBuilder::probe_lease`].
    pub probe_lease: Option<String>,
    /// See [`PolicyBuilder::key_ttl`].
    pub key_ttl: Option<String>,
    /// See [`PolicyBuilder::sync_interval`].
    pub sync_interval: Option<String>,
    /// See [`PolicyBuilder::store_timeout`].
    pub store_timeout: Option<String>,
    /// See [`PolicyBuilder::fleet_quorum`].
    pub fleet_quorum: Option<u32>,
}

/// A [`PolicySet`] as configuration: a default and overrides by key pattern.
///
/// ```
/// use distributed_circuit_breaker::PolicySetConfig;
///
/// let config: PolicySetConfig = serde_json::from_str(r#"{
///     "default": {"consecutive_failures": 5, "break_duration": "10s"},
///     "routes": {"/payments/*": {"consecutive_failures": 2}}
/// }"#).unwrap();
/// let set = config.build()?;
/// assert_eq!(set.policy_for("/payments/refund").consecutive_failures(), Some(2));
/// // Overrides inherit what they do not set from the default.
/// assert_eq!(set.policy_for("/payments/refund").break_duration().as_secs(), 10);
/// # Ok::<(), distributed_circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySetConfig {
    /// The policy of every key without an override.
    #[serde(default)]
    pub default: PolicyConfig,
    /// Overrides by key pattern (exact, or prefix ending in `*`).
    #[serde(default)]
    pub routes: BTreeMap<String, PolicyConfig>,
}

impl PolicySetConfig {
    /// Validates every policy; an error names the route and the field, e.g.
    /// `routes["/pay/*"].failure_rate`.
    pub fn build(&self) -> Result<PolicySet, ConfigError> {
        let default = self.default.build().map_err(|e| e.within("default"))?;
        let mut set = PolicySet::new(default);
        for (pattern, route) in &self.routes {
            let merged = route.over(&self.default);
            let policy = merged
                .build()
                .map_err(|e| e.within(&format!("routes[{pattern:?}]")))?;
            set = set.with(pattern.clone(), policy);
        }
        Ok(set)
    }
}

impl PolicyConfig {
    /// Validates and builds the policy.
    pub fn build(&self) -> Result<Policy, ConfigError> {
        let mut b = Policy::builder();
        if let Some(n) = self.consecutive_failures {
            b = if n == 0 {
                b.no_consecutive_failures()
            } else {
                b.consecutive_failures(n)
            };
        }
        if let Some(r) = self.failure_rate {
            b = b.failure_rate(r);
        }
        if let Some(r) = self.slow_call_rate {
            b = b.slow_call_rate(r);
        }
        if let Some(n) = self.minimum_calls {
            b = b.minimum_calls(n);
        }
        if let Some(n) = self.window_buckets {
            b = b.window_buckets(n);
        }
        if let Some(j) = self.jitter {
            b = b.jitter(j);
        }
        if let Some(n) = self.half_open_permits {
            b = b.half_open_permits(n);
        }
        if let Some(n) = self.successes_to_close {
            b = b.successes_to_close(n);
        }
        if let Some(n) = self.fleet_quorum {
            b = b.fleet_quorum(n);
        }
        type Setter = fn(PolicyBuilder, Duration) -> PolicyBuilder;
        let durations: [(&'static str, &Option<String>, Setter); 7] = [
            (
                "slow_call_duration",
                &self.slow_call_duration,
                PolicyBuilder::slow_call_duration,
            ),
            ("window", &self.window, PolicyBuilder::window),
            (
                "break_duration",
                &self.break_duration,
                PolicyBuilder::break_duration,
            ),
            ("probe_lease", &self.probe_lease, PolicyBuilder::probe_lease),
            ("key_ttl", &self.key_ttl, PolicyBuilder::key_ttl),
            (
                "sync_interval",
                &self.sync_interval,
                PolicyBuilder::sync_interval,
            ),
            (
                "store_timeout",
                &self.store_timeout,
                PolicyBuilder::store_timeout,
            ),
        ];
        for (field, value, set) in durations {
            if let Some(text) = value {
                b = set(b, parse_duration(field, text)?);
            }
        }
        match (self.backoff_multiplier, &self.backoff_max) {
            (None, None) => {}
            (Some(m), Some(max)) => b = b.backoff(m, parse_duration("backoff_max", max)?),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "backoff_max",
                    "is required with backoff_multiplier",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "backoff_multiplier",
                    "is required with backoff_max",
                ))
            }
        }
        b.build()
    }

    /// This config with every unset field taken from `base`.
    fn over(&self, base: &PolicyConfig) -> PolicyConfig {
        macro_rules! pick {
            ($($field:ident),*) => {
                PolicyConfig { $($field: self.$field.clone().or_else(|| base.$field.clone())),* }
            };
        }
        pick!(
            consecutive_failures,
            failure_rate,
            slow_call_rate,
            slow_call_duration,
            minimum_calls,
            window,
            window_buckets,
            break_duration,
            backoff_multiplier,
            backoff_max,
            jitter,
            half_open_permits,
            successes_to_close,
            probe_lease,
            key_ttl,
            sync_interval,
            store_timeout,
            fleet_quorum
        )
    }
}

/// `"250ms"`, `"5s"`, `"2m"`, `"1h"`.
fn parse_duration(field: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        ConfigError::new(
            field,
            format!("{text:?} is not a duration like \"250ms\", \"5s\", \"2m\" or \"1h\""),
        )
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_errors_name_the_field() {
        assert_eq!(
            parse_duration("window", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_duration("window", " 2m").unwrap(),
            Duration::from_secs(120)
        );
        for bad in ["", "5", "ms", "5 parsecs", "-1s", "1.5s"] {
            assert_eq!(
                parse_duration("window", bad).unwrap_err().field(),
                "window",
                "{bad}"
            );
        }
    }

    #[test]
    fn route_errors_name_the_route_and_field() {
        let config: PolicySetConfig =
            serde_json::from_str(r#"{"routes": {"/pay/*": {"failure_rate": 2.0}}}"#).unwrap();
        let err = config.build().unwrap_err();
        assert_eq!(err.field(), "routes[\"/pay/*\"].failure_rate");
        let config: PolicySetConfig =
            serde_json::from_str(r#"{"default": {"window": "soon"}}"#).unwrap();
        assert_eq!(config.build().unwrap_err().field(), "default.window");
        let config: PolicySetConfig =
            serde_json::from_str(r#"{"default": {"backoff_multiplier": 2.0}}"#).unwrap();
        assert_eq!(config.build().unwrap_err().field(), "default.backoff_max");
        assert!(serde_json::from_str::<PolicySetConfig>(r#"{"default": {"typo": 1}}"#).is_err());
    }
}
