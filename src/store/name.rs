//! Breaker names: validated once, cheap to clone.

use std::fmt;
use std::sync::Arc;

use crate::ConfigError;

/// The longest breaker name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// The validated name of a breaker: 1 to [`MAX_NAME_LEN`] bytes, no control
/// characters, no `{` or `}` (the Redis store wraps names in a Cluster hash tag),
/// and no invisible formatting characters (zero-width spaces and joiners, bidi
/// controls, the soft hyphen, the byte order mark): they would make look-alike
/// names, a second `payments` that is not `payments`.
///
/// Processes that use the same name (and store) share one breaker.
///
/// ```
/// use distributed_circuit_breaker::BreakerName;
///
/// assert!(BreakerName::new("payments-api").is_ok());
/// assert_eq!(BreakerName::new("").unwrap_err().field(), "name");
/// assert!(BreakerName::new("a{b}").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BreakerName(Arc<str>);

impl BreakerName {
    /// Validates `name`.
    ///
    /// ```
    /// use distributed_circuit_breaker::BreakerName;
    ///
    /// assert!(BreakerName::new("payments\u{200B}").is_err());
    /// ```
    pub fn new(name: impl AsRef<str>) -> Result<Self, ConfigError> {
        let name = name.as_ref();
        if name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ConfigError::new(
                "name",
                format!("must be at most {MAX_NAME_LEN} bytes, got {}", name.len()),
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| c.is_control() || *c == '{' || *c == '}')
        {
            return Err(ConfigError::new(
                "name",
                format!("must not contain {c:?} (control characters and braces are reserved)"),
            ));
        }
        if let Some(c) = name.chars().find(|c| is_invisible(*c)) {
            return Err(ConfigError::new(
                "name",
                format!(
                    "must not contain the invisible character U+{:04X} (it makes look-alike names)",
                    u32::from(c)
                ),
            ));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string behind the name (a reference count, no copy).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

/// Invisible formatting characters (Unicode `Cf` in common use): zero-width
/// spaces and joiners, bidi marks, embeddings, overrides and isolates, word
/// joiners and invisible operators, the soft hyphen, the Arabic letter mark,
/// the Mongolian vowel separator and the byte order mark.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

impl fmt::Debug for BreakerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for BreakerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Hash, equality and order are those of the name as a `str` (one field,
/// derived), so maps keyed by names can be searched with a `&str`.
impl std::borrow::Borrow<str> for BreakerName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for BreakerName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for BreakerName {
    type Error = ConfigError;

    fn try_from(name: &str) -> Result<Self, ConfigError> {
        BreakerName::new(name)
    }
}

impl TryFrom<String> for BreakerName {
    type Error = ConfigError;

    fn try_from(name: String) -> Result<Self, ConfigError> {
        BreakerName::new(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names_with_the_field() {
        for bad in [
            "",
            "tab\there",
            "new\nline",
            "{tag}",
            "x}",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            let err = BreakerName::new(bad).unwrap_err();
            assert_eq!(err.field(), "name", "{bad:?}");
        }
        assert!(BreakerName::new("a".repeat(MAX_NAME_LEN)).is_ok());
        assert!(BreakerName::new("GET /payments/:id").is_ok());
    }

    #[test]
    fn rejects_invisible_characters() {
        for c in [
            '\u{00AD}', '\u{061C}', '\u{180E}', '\u{200B}', '\u{200D}', '\u{200F}', '\u{202A}',
            '\u{202E}', '\u{2060}', '\u{2064}', '\u{2066}', '\u{2069}', '\u{FEFF}',
        ] {
            let err = BreakerName::new(format!("payments{c}")).unwrap_err();
            assert_eq!(err.field(), "name", "{c:?}");
            assert!(err.to_string().contains("invisible"), "{err}");
            assert!(BreakerName::new(format!("{c}payments")).is_err(), "{c:?}");
        }
        // Visible non-ASCII stays allowed.
        assert!(BreakerName::new("ünï©ødé 支付").is_ok());
    }
}
