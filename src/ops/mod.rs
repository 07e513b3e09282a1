//! What operator tools do to a store, shared by the `dcb` command line
//! (feature `cli`) and the admin API (feature `admin`): the commands an
//! operator gives ([`Action`]), human durations, and the JSON shape of a
//! breaker and of a transition.
//!
//! ```
//! use std::time::Duration;
//! use distributed_circuit_breaker::ops::{self, Action};
//! use distributed_circuit_breaker::{BreakerName, ForceNote, MemoryStore, State, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let name = BreakerName::new("payments")?;
//! let until = ops::parse_duration("10m")?;
//! let note = ForceNote::new().reason("provider incident").actor("alice");
//! // `true`: the store holds no record of it yet, force it anyway.
//! let info = ops::apply(&store, &name, Action::Open, Some(until), &note, true).await?;
//! assert_eq!(info.state, State::ForcedOpen);
//! assert_eq!(ops::info_json(&info)["forced_by"], "alice");
//! # Ok(()) }
//! ```

mod action;
mod duration;
mod filter;
mod json;

pub use action::{apply, operator_policy, Action, ApplyError};
pub use duration::{format_duration, parse_duration};
pub use filter::states_matching;
pub use json::{info_json, transition_json};
