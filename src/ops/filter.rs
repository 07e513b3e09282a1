//! The state words operators filter breakers by.

use crate::State;

/// The states a filter word matches: a state's name (`half_open`, or
/// `half-open`), with `open` covering forced open too and `closed` forced
/// closed; `None` for a word that names no state.
///
/// ```
/// use distributed_circuit_breaker::{ops, State};
///
/// assert_eq!(ops::states_matching("open"), Some(vec![State::Open, State::ForcedOpen]));
/// assert_eq!(ops::states_matching("half-open"), Some(vec![State::HalfOpen]));
/// assert_eq!(ops::states_matching("ajar"), None);
/// ```
pub fn states_matching(word: &str) -> Option<Vec<State>> {
    let word = word.replace('-', "_");
    match word.as_str() {
        "open" => Some(vec![State::Open, State::ForcedOpen]),
        "closed" => Some(vec![State::Closed, State::ForcedClosed]),
        _ => State::ALL
            .into_iter()
            .find(|s| s.as_str() == word)
            .map(|s| vec![s]),
    }
}
