//! What happens to a breaker, told to your code: transitions (this
//! process's view, and the fleet's once per fleet), rejections, probes,
//! store trouble, operator commands and health checks.
//!
//! Give a layer a [`Listener`] with
//! [`on_event`](crate::DistributedCircuitBreakerLayer::on_event): a closure
//! `Fn(&BreakerName, &Event)` or your own type. It is called on a task of its
//! own, never on a call's path nor on a breaker's background task, in the
//! order things happened; a panic in it is caught.
//!
//! ```
//! use distributed_circuit_breaker::events::{Event, Scope};
//! use distributed_circuit_breaker::{DistributedCircuitBreakerLayer, MemoryStore, Policy};
//!
//! let layer = DistributedCircuitBreakerLayer::new("payments", Policy::default(), MemoryStore::new())?
//!     .on_event(|breaker: &distributed_circuit_breaker::BreakerName, event: &Event| match event {
//!         // Once per fleet: the instance whose report made the shared
//!         // breaker change state hears it. Page here.
//!         Event::FleetTransition(t) => eprintln!("{breaker}: {} -> {} ({:?})", t.from, t.to, t.cause.rule),
//!         // Every instance: its own view changed.
//!         Event::Transition(t) if t.scope == Scope::Local => eprintln!("{breaker}: tripped here"),
//!         _ => {}
//!     });
//! # drop(layer);
//! # Ok::<(), distributed_circuit_breaker::ConfigError>(())
//! ```

mod event;
mod listener;

pub use event::{Cause, Event, Rule, Scope, TransitionEvent};
pub use listener::Listener;
