//! When a breaker opens, how long it stays open, and how it closes again.

use std::time::Duration;

use crate::machine::MAX_QUORUM;
use crate::ConfigError;

/// The longest break, window, lease or TTL a policy accepts (one day).
///
/// The bound keeps every computation exact in integer milliseconds, both in Rust
/// and inside the Redis scripts, where numbers are doubles.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The run of failures that trips a policy that names no trip rule.
const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;

/// The most half-open probes a policy may allow at once, fleet-wide.
pub const MAX_HALF_OPEN_PERMITS: u32 = 100;

/// The most buckets a sliding window may be divided into.
pub const MAX_WINDOW_BUCKETS: u32 = 120;

/// A validated circuit-breaker policy.
///
/// A breaker trips when **any** configured rule fires:
/// - `consecutive_failures(n)`: `n` failures in a row (as the fleet reports them);
/// - `failure_rate(r)`: at least `minimum_calls` calls in the sliding `window`
///   and a share of failures of at least `r`;
/// - `slow_call_rate(r)`: the same for calls slower than `slow_call_duration`.
///
/// Once open it rejects calls for `break_duration` (grown by the optional
/// exponential `backoff` each time it re-opens without closing, and shortened
/// by up to `jitter` of itself so a fleet does not probe in lock step), then lets
/// `half_open_permits` probes through **fleet-wide**, and closes after
/// `successes_to_close` of them succeed. A probe that never reports back frees
/// its permit after `probe_lease`.
///
/// ```
/// use std::time::Duration;
/// use distributed_circuit_breaker::Policy;
///
/// let policy = Policy::builder()
///     .failure_rate(0.5)
///     .minimum_calls(20)
///     .window(Duration::from_secs(10))
///     .break_duration(Duration::from_secs(5))
///     .backoff(2.0, Duration::from_secs(60))
///     .build()?;
/// assert_eq!(policy.break_duration(), Duration::from_secs(5));
/// # Ok::<(), distributed_circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The validated settings, as they were given.
    settings: PolicyBuilder,
    params: Params,
}

/// The policy in the integer form the state machine and the Redis scripts use:
/// milliseconds, exact fractions, parts per million, permille.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Params {
    pub(crate) consecutive: u32,
    pub(crate) failure: Rate,
    pub(crate) slow: Rate,
    pub(crate) minimum_calls: u32,
    pub(crate) bucket_ms: u64,
    pub(crate) buckets: u32,
    pub(crate) break_ms: u64,
    pub(crate) backoff_permille: u32,
    pub(crate) break_max_ms: u64,
    pub(crate) jitter_ppm: u32,
    pub(crate) permits: u32,
    pub(crate) successes: u32,
    pub(crate) lease_ms: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) sync_ms: u64,
    pub(crate) quorum: u32,
    /// A digest of every other field (52 bits): processes sharing a breaker
    /// with different policies can tell.
    pub(crate) fingerprint: u64,
}

/// A share as an exact fraction `num / den` (`num` 0: the rule is off), so
/// that "at least a third" means 1 failure in 3 calls, not 333,333 in a
/// million. Compared by cross-multiplying integers, in Rust and in Lua.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Rate {
    pub(crate) num: u32,
    pub(crate) den: u32,
}

/// The largest denominator a rate may need: a millionth is the finest share.
const MAX_RATE_DENOMINATOR: u32 = 1_000_000;

impl Rate {
    /// Whether `count` of `calls` reaches the rate (`count / calls >= num / den`).
    pub(crate) fn reached(self, count: u64, calls: u64) -> bool {
        self.num > 0 && count * u64::from(self.den) >= u64::from(self.num) * calls
    }

    pub(crate) fn is_on(self) -> bool {
        self.num > 0
    }

    /// The closest fraction with a denominator of at most a million (continued
    /// fractions), if it is `rate` to within 1e-9; `None` otherwise.
    fn exact(rate: f64) -> Option<Rate> {
        let (mut p0, mut q0, mut p1, mut q1) = (0u64, 1u64, 1u64, 0u64);
        let mut x = rate;
        let mut best = None;
        for _ in 0..64 {
            let a = x.floor();
            if !(0.0..=f64::from(MAX_RATE_DENOMINATOR)).contains(&a) {
                break;
            }
            let a = a as u64;
            let (p2, q2) = (a * p1 + p0, a * q1 + q0);
            if q2 > u64::from(MAX_RATE_DENOMINATOR) {
                break;
            }
            (p0, q0, p1, q1) = (p1, q1, p2, q2);
            best = Some((p1, q1));
            let frac = x - a as f64;
            if frac < 1e-12 {
                break;
            }
            x = 1.0 / frac;
        }
        let (num, den) = best?;
        let close = (num as f64 / den as f64 - rate).abs() <= 1e-9;
        (close && num > 0).then(|| Rate {
            num: u32::try_from(num).unwrap_or(u32::MAX),
            den: u32::try_from(den).unwrap_or(u32::MAX),
        })
    }
}

impl Params {
    /// The policy as the scripts take it, in the order `machine.lua` reads it.
    pub(crate) fn script_args(&self) -> [u64; 19] {
        [
            u64::from(self.consecutive),
            u64::from(self.failure.num),
            u64::from(self.failure.den),
            u64::from(self.slow.num),
            u64::from(self.slow.den),
            u64::from(self.minimum_calls),
            self.bucket_ms,
            u64::from(self.buckets),
            self.break_ms,
            u64::from(self.backoff_permille),
            self.break_max_ms,
            u64::from(self.jitter_ppm),
            u64::from(self.permits),
            u64::from(self.successes),
            self.lease_ms,
            self.ttl_ms,
            self.sync_ms,
            u64::from(self.quorum),
            self.fingerprint,
        ]
    }

    /// FNV-1a over every field but the fingerprint, cut to 52 bits (exact in
    /// the Redis scripts' doubles); never 0.
    pub(crate) fn digest(&self) -> u64 {
        let mut fields = self.script_args();
        fields[fields.len() - 1] = 0; // the fingerprint itself
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in fields.iter().flat_map(|f| f.to_le_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash & ((1 << 52) - 1)).max(1)
    }
}

impl Policy {
    /// Starts a builder with the defaults listed on [`PolicyBuilder`].
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// Failures in a row that trip the breaker, if that rule is on.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.settings.consecutive_failures
    }

    /// Failure share over the window that trips the breaker, if that rule is on.
    pub fn failure_rate(&self) -> Option<f64> {
        self.settings.failure_rate
    }

    /// Slow-call share over the window that trips the breaker, if that rule is on.
    pub fn slow_call_rate(&self) -> Option<f64> {
        self.settings.slow_call_rate
    }

    /// Calls at least this long count as slow.
    pub fn slow_call_duration(&self) -> Option<Duration> {
        self.settings.slow_call_duration
    }

    /// Calls the window must hold before a rate rule may trip.
    pub fn minimum_calls(&self) -> u32 {
        self.settings.minimum_calls
    }

    /// Length of the sliding window of the rate rules.
    pub fn window(&self) -> Duration {
        self.settings.window
    }

    /// How long the breaker stays open the first time it opens.
    pub fn break_duration(&self) -> Duration {
        self.settings.break_duration
    }

    /// Exponential backoff of the break as `(multiplier, maximum)`, if on.
    pub fn backoff(&self) -> Option<(f64, Duration)> {
        self.settings.backoff
    }

    /// Up to this share of a break is cut at random.
    pub fn jitter(&self) -> f64 {
        self.settings.jitter
    }

    /// Probes allowed at once in half-open, across the whole fleet.
    pub fn half_open_permits(&self) -> u32 {
        self.settings.half_open_permits
    }

    /// Successful probes needed to close.
    pub fn successes_to_close(&self) -> u32 {
        self.settings.successes_to_close
    }

    /// After this long a probe that has not reported back loses its permit.
    pub fn probe_lease(&self) -> Duration {
        self.settings.probe_lease
    }

    /// A breaker nobody touched for this long is forgotten by the store.
    pub fn key_ttl(&self) -> Duration {
        self.settings.key_ttl
    }

    /// How often a process hands its counted outcomes to the store and refreshes
    /// its view of the shared state.
    pub fn sync_interval(&self) -> Duration {
        self.settings.sync_interval
    }

    /// The longest any request waits on the store.
    pub fn store_timeout(&self) -> Duration {
        self.settings.store_timeout
    }

    /// Distinct instances that must trip before the fleet opens (see
    /// [`PolicyBuilder::fleet_quorum`]).
    pub fn fleet_quorum(&self) -> u32 {
        self.settings.fleet_quorum
    }

    /// The longest break the backoff can reach.
    pub fn max_break_duration(&self) -> Duration {
        self.settings
            .backoff
            .map_or(self.settings.break_duration, |(_, max)| max)
    }

    pub(crate) fn params(&self) -> &Params {
        &self.params
    }
}

impl Default for Policy {
    /// Trips after 5 consecutive failures, breaks for 5 seconds, one probe.
    fn default() -> Self {
        // The defaults are valid by construction; `default_policy_is_valid` below
        // checks it, so the fallback is never taken.
        PolicyBuilder::default()
            .build()
            .unwrap_or_else(|_| unreachable!("the default policy is valid"))
    }
}

/// Builds a [`Policy`]; [`build`](Self::build) rejects any invalid value with a
/// [`ConfigError`] naming the field.
///
/// Defaults: `consecutive_failures(5)` unless a rate rule is set (then no run
/// rule unless named too), no rate rules, `minimum_calls(20)`,
/// `window(10s)` in `10` buckets, `break_duration(5s)`, no backoff, no jitter,
/// `half_open_permits(1)`, `successes_to_close(1)`, `probe_lease(10s)`,
/// `key_ttl(1h)`, `sync_interval(1s)`, `store_timeout(50ms)`, `fleet_quorum(1)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyBuilder {
    /// `None`: not said; the rule is on (at 5) only if no rate rule is set.
    consecutive_failures: Option<u32>,
    /// `no_consecutive_failures()` was called.
    consecutive_off: bool,
    failure_rate: Option<f64>,
    slow_call_rate: Option<f64>,
    slow_call_duration: Option<Duration>,
    minimum_calls: u32,
    window: Duration,
    window_buckets: u32,
    break_duration: Duration,
    backoff: Option<(f64, Duration)>,
    jitter: f64,
    half_open_permits: u32,
    successes_to_close: u32,
    probe_lease: Duration,
    key_ttl: Duration,
    sync_interval: Duration,
    store_timeout: Duration,
    fleet_quorum: u32,
}

impl Default for PolicyBuilder {
    fn default() -> Self {
        Self {
            consecutive_failures: None,
            consecutive_off: false,
            failure_rate: None,
            slow_call_rate: None,
            slow_call_duration: None,
            minimum_calls: 20,
            window: Duration::from_secs(10),
            window_buckets: 10,
            break_duration: Duration::from_secs(5),
            backoff: None,
            jitter: 0.0,
            half_open_permits: 1,
            successes_to_close: 1,
            probe_lease: Duration::from_secs(10),
            key_ttl: Duration::from_secs(60 * 60),
            sync_interval: Duration::from_secs(1),
            store_timeout: Duration::from_millis(50),
            fleet_quorum: 1,
        }
    }
}

impl PolicyBuilder {
    /// Trip after `n` failures in a row. On by default (at 5) only while no
    /// rate rule is set: naming `failure_rate` or `slow_call_rate` alone turns
    /// it off, naming it too keeps both.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = Some(n);
        self.consecutive_off = false;
        self
    }

    /// Turn the consecutive-failures rule off (a rate rule must then be set).
    pub fn no_consecutive_failures(mut self) -> Self {
        self.consecutive_failures = None;
        self.consecutive_off = true;
        self
    }

    /// Trip when the share of failed calls in the window reaches `rate` (0 < rate <= 1).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = Some(rate);
        self
    }

    /// Trip when the share of slow calls in the window reaches `rate` (0 < rate <= 1);
    /// needs [`slow_call_duration`](Self::slow_call_duration).
    pub fn slow_call_rate(mut self, rate: f64) -> Self {
        self.slow_call_rate = Some(rate);
        self
    }

    /// Calls taking at least this long count as slow.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.slow_call_duration = Some(duration);
        self
    }

    /// Calls the window must hold before a rate rule may trip.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.minimum_calls = n;
        self
    }

    /// Length of the sliding window of the rate rules.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Number of buckets the window slides by (more buckets: smoother, more state).
    pub fn window_buckets(mut self, buckets: u32) -> Self {
        self.window_buckets = buckets;
        self
    }

    /// How long the breaker stays open the first time.
    pub fn break_duration(mut self, duration: Duration) -> Self {
        self.break_duration = duration;
        self
    }

    /// Multiply the break by `multiplier` each time the breaker re-opens without
    /// having closed, up to `max`.
    pub fn backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.backoff = Some((multiplier, max));
        self
    }

    /// Cut each break by a random share of up to `jitter` (0 <= jitter < 1).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Probes allowed at once in half-open, across the whole fleet.
    pub fn half_open_permits(mut self, n: u32) -> Self {
        self.half_open_permits = n;
        self
    }

    /// Successful probes needed to close.
    pub fn successes_to_close(mut self, n: u32) -> Self {
        self.successes_to_close = n;
        self
    }

    /// A probe that has not reported back after this long loses its permit.
    pub fn probe_lease(mut self, lease: Duration) -> Self {
        self.probe_lease = lease;
        self
    }

    /// The store forgets a breaker nobody touched for this long.
    pub fn key_ttl(mut self, ttl: Duration) -> Self {
        self.key_ttl = ttl;
        self
    }

    /// How often outcomes are flushed to the store and the shared state refreshed.
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }

    /// The longest any request waits on the store.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// How many distinct instances must trip before the fleet opens.
    ///
    /// Every instance judges its own outcomes against the policy at once and
    /// opens its own breaker on its own trip (never later than a private
    /// breaker would). With a quorum of `1` (the default) that trip also opens
    /// the breaker for the whole fleet, and so do the fleet's merged counts.
    /// With `n > 1`, the fleet opens when `n` distinct instances tripped within
    /// the `window`, or when the merged counts trip and their failures came
    /// from at least `n` instances: one instance with a problem of its own (a
    /// bad network path, a broken pod) opens only itself.
    ///
    /// ```
    /// use distributed_circuit_breaker::Policy;
    ///
    /// let policy = Policy::builder().consecutive_failures(5).fleet_quorum(2).build()?;
    /// assert_eq!(policy.fleet_quorum(), 2);
    /// # Ok::<(), distributed_circuit_breaker::ConfigError>(())
    /// ```
    pub fn fleet_quorum(mut self, instances: u32) -> Self {
        self.fleet_quorum = instances;
        self
    }

    /// Validates every field and returns the policy, or the first invalid field.
    pub fn build(mut self) -> Result<Policy, ConfigError> {
        // The implicit `consecutive_failures(5)` stands only alone: a policy
        // that names a rate rule trips on rates unless it also names a run.
        if self.consecutive_failures.is_none()
            && !self.consecutive_off
            && self.failure_rate.is_none()
            && self.slow_call_rate.is_none()
        {
            self.consecutive_failures = Some(DEFAULT_CONSECUTIVE_FAILURES);
        }
        if let Some(n) = self.consecutive_failures {
            check(n >= 1, "consecutive_failures", "must be at least 1")?;
        }
        for (field, rate) in [
            ("failure_rate", self.failure_rate),
            ("slow_call_rate", self.slow_call_rate),
        ] {
            if let Some(rate) = rate {
                check(
                    rate.is_finite() && rate > 0.0 && rate <= 1.0,
                    field,
                    format!("must be within (0.0, 1.0], got {rate}"),
                )?;
                check(
                    Rate::exact(rate).is_some(),
                    field,
                    format!("{rate} is not a share the breaker can compare exactly: use at least 0.000001 and a fraction with a denominator of at most 1,000,000 (such as 0.5, 0.05 or 2.0 / 3.0)"),
                )?;
            }
        }
        check(
            self.consecutive_failures.is_some()
                || self.failure_rate.is_some()
                || self.slow_call_rate.is_some(),
            "consecutive_failures",
            "no trip rule is set: set consecutive_failures, failure_rate or slow_call_rate",
        )?;
        if let Some(slow) = self.slow_call_duration {
            positive_ms("slow_call_duration", slow)?;
        }
        check(
            self.slow_call_rate.is_none() || self.slow_call_duration.is_some(),
            "slow_call_duration",
            "is required when slow_call_rate is set",
        )?;
        check(
            self.minimum_calls >= 1,
            "minimum_calls",
            "must be at least 1",
        )?;
        check(
            (1..=MAX_WINDOW_BUCKETS).contains(&self.window_buckets),
            "window_buckets",
            format!(
                "must be within 1..={MAX_WINDOW_BUCKETS}, got {}",
                self.window_buckets
            ),
        )?;
        positive_ms("window", self.window)?;
        check(
            self.window.as_millis() >= u128::from(self.window_buckets),
            "window",
            format!(
                "must be at least one millisecond per bucket ({} buckets)",
                self.window_buckets
            ),
        )?;
        positive_ms("break_duration", self.break_duration)?;
        if let Some((multiplier, max)) = self.backoff {
            check(
                multiplier.is_finite() && (1.0..=100.0).contains(&multiplier),
                "backoff.multiplier",
                format!("must be within 1.0..=100.0, got {multiplier}"),
            )?;
            positive_ms("backoff.max", max)?;
            check(
                max >= self.break_duration,
                "backoff.max",
                format!(
                    "must not be below break_duration ({:?}), got {max:?}",
                    self.break_duration
                ),
            )?;
        }
        check(
            self.jitter.is_finite() && (0.0..1.0).contains(&self.jitter),
            "jitter",
            format!("must be within [0.0, 1.0), got {}", self.jitter),
        )?;
        check(
            (1..=MAX_HALF_OPEN_PERMITS).contains(&self.half_open_permits),
            "half_open_permits",
            format!(
                "must be within 1..={MAX_HALF_OPEN_PERMITS}, got {}",
                self.half_open_permits
            ),
        )?;
        check(
            self.successes_to_close >= 1,
            "successes_to_close",
            "must be at least 1",
        )?;
        positive_ms("probe_lease", self.probe_lease)?;
        positive_ms("sync_interval", self.sync_interval)?;
        positive_ms("store_timeout", self.store_timeout)?;
        positive_ms("key_ttl", self.key_ttl)?;
        check(
            (1..=MAX_QUORUM).contains(&self.fleet_quorum),
            "fleet_quorum",
            format!("must be within 1..={MAX_QUORUM}, got {}", self.fleet_quorum),
        )?;
        let max_break = self.backoff.map_or(self.break_duration, |(_, max)| max);
        let longest = max_break
            .max(self.window)
            .max(self.probe_lease)
            .max(self.sync_interval);
        check(
            self.key_ttl >= longest,
            "key_ttl",
            format!(
                "must be at least the longest of the break, window, probe lease and sync interval ({longest:?}), got {:?}",
                self.key_ttl
            ),
        )?;

        let params = Params {
            consecutive: self.consecutive_failures.unwrap_or(0),
            failure: self.failure_rate.and_then(Rate::exact).unwrap_or_default(),
            slow: self
                .slow_call_rate
                .and_then(Rate::exact)
                .unwrap_or_default(),
            minimum_calls: self.minimum_calls,
            bucket_ms: millis(self.window) / u64::from(self.window_buckets),
            buckets: self.window_buckets,
            break_ms: millis(self.break_duration),
            backoff_permille: self
                .backoff
                .map_or(1000, |(m, _)| (m * 1000.0).round() as u32),
            break_max_ms: millis(max_break),
            jitter_ppm: to_ppm(self.jitter),
            permits: self.half_open_permits,
            successes: self.successes_to_close,
            lease_ms: millis(self.probe_lease),
            ttl_ms: millis(self.key_ttl),
            sync_ms: millis(self.sync_interval),
            quorum: self.fleet_quorum,
            fingerprint: 0,
        };
        let params = Params {
            fingerprint: params.digest(),
            ..params
        };
        Ok(Policy {
            settings: self,
            params,
        })
    }
}

fn check(ok: bool, field: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(field, reason))
    }
}

fn positive_ms(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    check(
        d >= Duration::from_millis(1) && d <= MAX_DURATION,
        field,
        format!("must be within 1ms..=24h, got {d:?}"),
    )
}

/// Whole milliseconds; policies are validated to at most a day, so this fits.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn to_ppm(rate: f64) -> u32 {
    (rate * 1_000_000.0).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(builder: PolicyBuilder) -> String {
        builder.build().unwrap_err().field().to_owned()
    }

    #[test]
    fn default_policy_is_valid() {
        let policy = Policy::default();
        assert_eq!(policy.consecutive_failures(), Some(5));
        assert_eq!(policy.params().permits, 1);
    }

    #[test]
    fn every_invalid_field_is_named() {
        let b = Policy::builder;
        let ms = Duration::from_millis;
        let cases: Vec<(PolicyBuilder, &str)> = vec![
            (b().consecutive_failures(0), "consecutive_failures"),
            (b().no_consecutive_failures(), "consecutive_failures"),
            (b().failure_rate(0.0), "failure_rate"),
            (b().failure_rate(1.5), "failure_rate"),
            (b().failure_rate(f64::NAN), "failure_rate"),
            (b().slow_call_rate(-0.1), "slow_call_rate"),
            (b().slow_call_rate(0.5), "slow_call_duration"),
            (b().slow_call_duration(ms(0)), "slow_call_duration"),
            (b().minimum_calls(0), "minimum_calls"),
            (b().window(ms(0)), "window"),
            (b().window(ms(5)).window_buckets(10), "window"),
            (b().window(MAX_DURATION * 2), "window"),
            (b().window_buckets(0), "window_buckets"),
            (b().window_buckets(MAX_WINDOW_BUCKETS + 1), "window_buckets"),
            (b().break_duration(ms(0)), "break_duration"),
            (b().break_duration(MAX_DURATION + ms(1)), "break_duration"),
            (b().backoff(0.5, ms(60_000)), "backoff.multiplier"),
            (b().backoff(f64::INFINITY, ms(60_000)), "backoff.multiplier"),
            (b().backoff(2.0, ms(10)), "backoff.max"),
            (b().jitter(1.0), "jitter"),
            (b().jitter(-0.1), "jitter"),
            (b().half_open_permits(0), "half_open_permits"),
            (
                b().half_open_permits(MAX_HALF_OPEN_PERMITS + 1),
                "half_open_permits",
            ),
            (b().successes_to_close(0), "successes_to_close"),
            (b().probe_lease(ms(0)), "probe_lease"),
            (b().sync_interval(ms(0)), "sync_interval"),
            (b().store_timeout(ms(0)), "store_timeout"),
            (b().key_ttl(ms(0)), "key_ttl"),
            (b().key_ttl(ms(1_000)), "key_ttl"),
            (b().fleet_quorum(0), "fleet_quorum"),
            (b().fleet_quorum(MAX_QUORUM + 1), "fleet_quorum"),
        ];
        for (builder, field) in cases {
            assert_eq!(field_of(builder), field);
        }
    }

    #[test]
    fn rates_are_exact_fractions_or_rejected() {
        let rate = |r: f64| *Policy::builder().failure_rate(r).build().unwrap().params();
        assert_eq!(rate(2.0 / 3.0).failure, Rate { num: 2, den: 3 });
        assert!(
            rate(2.0 / 3.0).failure.reached(2, 3),
            "2 of 3 is two thirds"
        );
        assert!(!rate(2.0 / 3.0).failure.reached(1, 3));
        assert_eq!(rate(0.05).failure, Rate { num: 1, den: 20 });
        assert_eq!(
            rate(0.000_001).failure,
            Rate {
                num: 1,
                den: 1_000_000
            }
        );
        assert_eq!(rate(1.0).failure, Rate { num: 1, den: 1 });
        for bad in [1e-7, 0.123_456_789_123] {
            let err = Policy::builder().failure_rate(bad).build().unwrap_err();
            assert_eq!(err.field(), "failure_rate", "{bad}");
        }
    }

    #[test]
    fn a_rate_rule_alone_turns_the_implicit_run_rule_off() {
        let rate_only = Policy::builder()
            .failure_rate(0.5)
            .minimum_calls(10)
            .build()
            .unwrap();
        assert_eq!(rate_only.consecutive_failures(), None);
        let both = Policy::builder()
            .failure_rate(0.5)
            .consecutive_failures(5)
            .build()
            .unwrap();
        assert_eq!(both.consecutive_failures(), Some(5));
        assert_eq!(Policy::default().consecutive_failures(), Some(5));
    }

    #[test]
    fn rates_and_durations_become_integers() {
        let p = Policy::builder()
            .failure_rate(0.5)
            .slow_call_rate(0.25)
            .slow_call_duration(Duration::from_millis(200))
            .window(Duration::from_secs(10))
            .window_buckets(5)
            .backoff(1.5, Duration::from_secs(30))
            .jitter(0.2)
            .build()
            .unwrap();
        let params = p.params();
        assert_eq!(params.failure, Rate { num: 1, den: 2 });
        assert_eq!(params.slow, Rate { num: 1, den: 4 });
        assert_eq!(params.bucket_ms, 2_000);
        assert_eq!(params.backoff_permille, 1_500);
        assert_eq!(params.break_max_ms, 30_000);
        assert_eq!(params.jitter_ppm, 200_000);
        assert_eq!(p.max_break_duration(), Duration::from_secs(30));
    }
}
