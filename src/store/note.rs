//! Who forced a breaker, and why: kept by the store with the forced state.

/// The most characters of a [`ForceNote`]'s reason a store keeps.
pub const MAX_REASON_LEN: usize = 200;
/// The most characters of a [`ForceNote`]'s actor a store keeps.
pub const MAX_ACTOR_LEN: usize = 64;

/// An operator's account of a [`Force`](crate::Force): a free-text reason
/// and who gave the command, kept in the store beside the forced state (and
/// shown by `dcb show`, the admin API and the dashboard) until the breaker
/// next changes state.
///
/// Both are optional. Control characters become spaces, and each is cut to
/// [`MAX_REASON_LEN`] or [`MAX_ACTOR_LEN`] characters, the same in every
/// store.
///
/// ```
/// use distributed_circuit_breaker::store::ForceNote;
///
/// let note = ForceNote::new()
///     .reason("payments provider incident #4411")
///     .actor("alice");
/// assert_eq!(note.reason_str(), Some("payments provider incident #4411"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForceNote {
    reason: String,
    actor: String,
}

/// No reason, no actor: what [`Store::force`](crate::Store::force) keeps.
pub(crate) static NO_NOTE: ForceNote = ForceNote {
    reason: String::new(),
    actor: String::new(),
};

impl ForceNote {
    /// A note with neither reason nor actor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Why the breaker is forced.
    pub fn reason(mut self, reason: impl AsRef<str>) -> Self {
        self.reason = clean(reason.as_ref(), MAX_REASON_LEN);
        self
    }

    /// Who forced it (a user name, a service account, a ticket system).
    pub fn actor(mut self, actor: impl AsRef<str>) -> Self {
        self.actor = clean(actor.as_ref(), MAX_ACTOR_LEN);
        self
    }

    /// The reason, if one was given.
    pub fn reason_str(&self) -> Option<&str> {
        (!self.reason.is_empty()).then_some(self.reason.as_str())
    }

    /// The actor, if one was given.
    pub fn actor_str(&self) -> Option<&str> {
        (!self.actor.is_empty()).then_some(self.actor.as_str())
    }

    /// Whether the note says nothing.
    pub fn is_empty(&self) -> bool {
        self.reason.is_empty() && self.actor.is_empty()
    }
}

/// Control characters become spaces, surrounding whitespace goes, and at
/// most `max` characters stay.
fn clean(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_cuts() {
        let note = ForceNote::new().reason("  a\nb\t ").actor("x".repeat(100));
        assert_eq!(note.reason_str(), Some("a b"));
        assert_eq!(note.actor_str().map(str::len), Some(MAX_ACTOR_LEN));
        assert!(ForceNote::new().reason("   ").is_empty());
        let long = "é".repeat(MAX_REASON_LEN + 5);
        assert_eq!(
            ForceNote::new()
                .reason(long)
                .reason_str()
                .unwrap()
                .chars()
                .count(),
            MAX_REASON_LEN
        );
    }
}
