//! Durations as people write them: `90s`, `10m`, `1h 30m`.

use std::time::Duration;

/// Parses a duration as people write it (`500ms`, `90s`, `10m`, `1h30m`,
/// `2days`): humantime's syntax. Zero is refused: a forced state for no
/// time is a mistake (leave the duration out to force until reset).
///
/// ```
/// use std::time::Duration;
/// use distributed_circuit_breaker::ops::parse_duration;
///
/// assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
/// assert!(parse_duration("10 parsecs").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => Err(format!("invalid duration `{text}`: must be more than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "invalid duration `{text}`: {e} (write it like 90s, 10m, 1h30m)"
        )),
    }
}

/// A duration for people, to the second past a minute (`4m 59s`), to the
/// millisecond below (`850ms`, `2s 300ms`).
pub fn format_duration(d: Duration) -> String {
    let d = if d >= Duration::from_secs(60) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_duration(" 1h30m "), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("ten minutes").unwrap_err().contains("10m"));
        assert_eq!(format_duration(Duration::from_millis(299_999)), "4m 59s");
        assert_eq!(format_duration(Duration::from_micros(850_400)), "850ms");
    }
}
