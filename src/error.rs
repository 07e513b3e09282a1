//! The errors the breaker adds to those of the inner service.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::{BreakerName, State};

/// The error type of the breaker service: tower's usual boxed error.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A call was rejected because its breaker is open: the inner service was not called.
///
/// Reach it by downcasting the service's [`BoxError`], or with
/// [`BreakerError::from`]:
///
/// ```
/// use distributed_circuit_breaker::{BoxError, BreakerError, CircuitOpen};
///
/// fn retry_hint(err: BoxError) -> Option<std::time::Duration> {
///     match BreakerError::from(err) {
///         BreakerError::Open(open) => Some(open.retry_after()),
///         _ => None,
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    name: BreakerName,
    state: State,
    retry_after: Duration,
}

impl CircuitOpen {
    pub(crate) fn new(name: BreakerName, state: State, retry_after: Duration) -> Self {
        Self {
            name,
            state,
            retry_after,
        }
    }

    /// The breaker that rejected the call.
    pub fn name(&self) -> &BreakerName {
        &self.name
    }

    /// Its state at the time: open, half-open (every probe permit taken) or forced open.
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until a call may be let through as a probe (an estimate: the
    /// fleet may close the breaker sooner). For a breaker an operator forced
    /// open until further notice, a minute, or the policy's longest break
    /// ([`max_break_duration`](crate::Policy::max_break_duration)) if longer.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `retry_after` in whole seconds, rounded up and at least 1: the value for
    /// an HTTP `Retry-After` header.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }

    /// A `503 Service Unavailable` response with a `Retry-After` header and a
    /// small JSON body, for servers that answer for an open dependency.
    ///
    /// ```
    /// # use distributed_circuit_breaker::CircuitOpen;
    /// # fn demo(open: &CircuitOpen) {
    /// let response = open.http_response();
    /// assert_eq!(response.status(), 503);
    /// # }
    /// ```
    pub fn http_response(&self) -> http::Response<String> {
        self.response(false)
    }

    /// Like [`http_response`](Self::http_response), with the breaker's name
    /// in the body as `"breaker"`. The name is left out by default: keyed
    /// breakers are named after hosts, routes or tenants, which a client
    /// should not always learn.
    pub fn http_response_with_name(&self) -> http::Response<String> {
        self.response(true)
    }

    fn response(&self, with_name: bool) -> http::Response<String> {
        let name = if with_name {
            format!(r#","breaker":{}"#, json_string(self.name.as_str()))
        } else {
            String::new()
        };
        let body = format!(
            r#"{{"error":"circuit_open"{name},"state":"{}","retry_after_ms":{}}}"#,
            self.state,
            self.retry_after.as_millis()
        );
        let mut response = http::Response::new(body);
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        let headers = response.headers_mut();
        headers.insert(http::header::RETRY_AFTER, self.retry_after_secs().into());
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker `{}` is {}; retry in {:?}",
            self.name, self.state, self.retry_after
        )
    }
}

impl StdError for CircuitOpen {}

/// The inner service did not answer within the layer's call timeout; the call
/// counted as a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTimeout {
    name: BreakerName,
    timeout: Duration,
}

impl CallTimeout {
    pub(crate) fn new(name: BreakerName, timeout: Duration) -> Self {
        Self { name, timeout }
    }

    /// The breaker whose call timed out.
    pub fn name(&self) -> &BreakerName {
        &self.name
    }

    /// The timeout that elapsed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for CallTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "call through circuit breaker `{}` timed out after {:?}",
            self.name, self.timeout
        )
    }
}

impl StdError for CallTimeout {}

/// A breaker service's error, sorted for `match`.
#[derive(Debug)]
pub enum BreakerError {
    /// The breaker rejected the call.
    Open(CircuitOpen),
    /// The call exceeded the layer's call timeout.
    Timeout(CallTimeout),
    /// The inner service failed.
    Inner(BoxError),
}

impl From<BoxError> for BreakerError {
    fn from(err: BoxError) -> Self {
        let err = match err.downcast::<CircuitOpen>() {
            Ok(open) => return BreakerError::Open(*open),
            Err(err) => err,
        };
        match err.downcast::<CallTimeout>() {
            Ok(timeout) => BreakerError::Timeout(*timeout),
            Err(err) => BreakerError::Inner(err),
        }
    }
}

impl fmt::Display for BreakerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open(e) => e.fmt(f),
            BreakerError::Timeout(e) => e.fmt(f),
            BreakerError::Inner(e) => e.fmt(f),
        }
    }
}

impl StdError for BreakerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            BreakerError::Inner(e) => Some(&**e),
            _ => None,
        }
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(ms: u64) -> CircuitOpen {
        CircuitOpen::new(
            BreakerName::new("pay\"ments").unwrap(),
            State::Open,
            Duration::from_millis(ms),
        )
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(open(0).retry_after_secs(), 1);
        assert_eq!(open(1).retry_after_secs(), 1);
        assert_eq!(open(1000).retry_after_secs(), 1);
        assert_eq!(open(1001).retry_after_secs(), 2);
    }

    #[test]
    fn http_response_is_503_with_retry_after_and_json() {
        let response = open(2500).http_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "3");
        assert_eq!(
            response.body(),
            r#"{"error":"circuit_open","state":"open","retry_after_ms":2500}"#
        );
        assert_eq!(
            open(2500).http_response_with_name().body(),
            r#"{"error":"circuit_open","breaker":"pay\"ments","state":"open","retry_after_ms":2500}"#
        );
    }

    #[test]
    fn boxed_errors_sort_back_into_variants() {
        let boxed: BoxError = Box::new(open(5));
        assert!(
            matches!(BreakerError::from(boxed), BreakerError::Open(o) if o.retry_after() == Duration::from_millis(5))
        );
        let boxed: BoxError = Box::new(CallTimeout::new(
            BreakerName::new("x").unwrap(),
            Duration::from_secs(1),
        ));
        assert!(matches!(
            BreakerError::from(boxed),
            BreakerError::Timeout(_)
        ));
        let boxed: BoxError = "boom".into();
        assert!(
            matches!(BreakerError::from(boxed), BreakerError::Inner(e) if e.to_string() == "boom")
        );
    }
}
