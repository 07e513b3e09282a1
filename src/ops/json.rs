//! The JSON shape of a breaker and of a transition, for `dcb --json` and
//! the admin API alike.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::store::BreakerInfo;
use crate::Transition;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A breaker as a JSON object:
///
/// `{"name", "state", "generation", "remaining_ms", "calls", "failures",
/// "slow", "failure_rate" (null without calls), "consecutive_failures",
/// "forced" (an operator's state), "until_reset" (forced without expiry),
/// "forced_by", "reason", "forced_at" (RFC 3339; each null when not said)}`.
pub fn info_json(info: &BreakerInfo) -> Value {
    let note = info.note.as_ref();
    json!({
        "name": info.name,
        "state": info.state.as_str(),
        "generation": info.generation,
        "remaining_ms": millis(info.remaining),
        "calls": info.calls,
        "failures": info.failures,
        "slow": info.slow,
        "failure_rate": info.failure_rate(),
        "consecutive_failures": info.consecutive_failures,
        "forced": info.is_forced(),
        "until_reset": info.forced_until_reset,
        "forced_by": note.and_then(|n| n.actor.clone()),
        "reason": note.and_then(|n| n.reason.clone()),
        "forced_at": note.map(|n| timestamp(n.at)),
    })
}

/// A transition as a JSON object: `{"name", "state", "generation",
/// "remaining_ms", "at"}` (`at`: when this process received it, RFC 3339).
pub fn transition_json(transition: &Transition) -> Value {
    let waited = transition.received.elapsed();
    let at = SystemTime::now()
        .checked_sub(waited)
        .unwrap_or(SystemTime::now());
    json!({
        "name": transition.name,
        "state": transition.snapshot.state.as_str(),
        "generation": transition.snapshot.generation,
        "remaining_ms": millis(transition.snapshot.remaining),
        "at": timestamp(at),
    })
}
