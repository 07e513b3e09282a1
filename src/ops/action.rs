//! The commands an operator gives a breaker, and applying one.

use std::fmt;
use std::time::Duration;

use crate::store::{BreakerInfo, BreakerName, Force, ForceNote, Store, StoreError, StoreErrorKind};
use crate::Policy;

/// An operator's command to one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reject every call ([`Force::Open`]).
    Open,
    /// Admit every call, count outcomes, never trip ([`Force::Closed`]).
    Close,
    /// Admit every call, count nothing ([`Force::Disabled`]).
    Disable,
    /// Back to closed, counters cleared ([`Force::Reset`]).
    Reset,
}

impl Action {
    /// `open`, `close`, `disable` or `reset`.
    pub fn parse(word: &str) -> Option<Action> {
        match word {
            "open" => Some(Action::Open),
            "close" => Some(Action::Close),
            "disable" => Some(Action::Disable),
            "reset" => Some(Action::Reset),
            _ => None,
        }
    }

    /// The command's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open => "open",
            Action::Close => "close",
            Action::Disable => "disable",
            Action::Reset => "reset",
        }
    }

    /// The [`Force`] it sends; `duration` is ignored by a reset.
    pub fn force(self, duration: Option<Duration>) -> Force {
        match self {
            Action::Open => Force::Open(duration),
            Action::Close => Force::Closed(duration),
            Action::Disable => Force::Disabled(duration),
            Action::Reset => Force::Reset,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why [`apply`] did nothing.
#[derive(Debug)]
pub enum ApplyError {
    /// The store holds no record of the breaker (a typo, or a healthy idle
    /// breaker, which keeps none) and `create` was not asked.
    Unknown(BreakerName),
    /// The store did not answer or refused.
    Store(StoreError),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Unknown(name) => write!(
                f,
                "no breaker named `{name}` in the store (never written, or closed and idle: healthy breakers keep no record)"
            ),
            ApplyError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ApplyError {}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Store(e)
    }
}

/// The policy operator tools send with a command: the default
/// [`Policy`]. The store keeps no policy, and a command's effect does not
/// depend on one, except how long the store keeps the record after a
/// forced state ends (the default `key_ttl`, an hour) and, after a reset,
/// until the fleet's next write (the default window).
pub fn operator_policy() -> &'static Policy {
    static POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    POLICY.get_or_init(Policy::default)
}

/// Applies `action` to `name` with `note`, for `duration` (`None`: until
/// reset), and answers the breaker as it is after. A name the store holds
/// no record of is refused with [`ApplyError::Unknown`] unless `create`; one
/// whose record holds bad data is forced all the same (the store rewrites it).
pub async fn apply(
    store: &dyn Store,
    name: &BreakerName,
    action: Action,
    duration: Option<Duration>,
    note: &ForceNote,
    create: bool,
) -> Result<BreakerInfo, ApplyError> {
    if !create {
        match store.info(name).await {
            Ok(None) => return Err(ApplyError::Unknown(name.clone())),
            Ok(Some(_)) => {}
            // The breaker exists but holds bad data: forcing it rewrites it
            // (or fails as bad data, a key of another type).
            Err(e) if e.kind() == StoreErrorKind::Corrupt => {}
            Err(e) => return Err(e.into()),
        }
    }
    let snapshot = store
        .force_noted(name, operator_policy(), action.force(duration), note)
        .await?;
    Ok(store
        .info(name)
        .await?
        .unwrap_or_else(|| BreakerInfo::new(name.as_str(), snapshot)))
}
