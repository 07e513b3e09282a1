//! Instances of a fleet, each with its own RedisStore and a listener that
//! keeps every event it hears, calling one test dependency.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distributed_circuit_breaker::events::Event;
use distributed_circuit_breaker::{
    BreakerError, BreakerName, DistributedCircuitBreaker, DistributedCircuitBreakerLayer,
    ErrorsAsFailures, Policy, RedisStore, State,
};
use tower::{Layer, Service, ServiceExt};

use super::dependency::Dependency;
use super::redis::RedisServer;

pub type Events = Arc<Mutex<Vec<Event>>>;

pub struct Member {
    pub svc: DistributedCircuitBreaker<Dependency, ErrorsAsFailures>,
    pub layer: DistributedCircuitBreakerLayer,
    pub events: Events,
}

impl Member {
    pub fn new(layer: DistributedCircuitBreakerLayer, dependency: &Dependency) -> Member {
        let events: Events = Arc::default();
        let heard = events.clone();
        let layer = layer.on_event(move |_: &BreakerName, event: &Event| {
            heard.lock().unwrap().push(event.clone());
        });
        Member {
            svc: layer.layer(dependency.clone()),
            layer,
            events,
        }
    }

    pub async fn call(&self) -> Result<(), BreakerError> {
        let mut svc = self.svc.clone();
        let ready = ServiceExt::<()>::ready(&mut svc).await?;
        ready.call(()).await.map(drop).map_err(BreakerError::from)
    }

    pub fn count(&self, matches: impl Fn(&Event) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches(e))
            .count()
    }

    pub fn state(&self) -> State {
        self.layer.breaker().snapshot().state
    }
}

pub async fn fleet(
    redis: &RedisServer,
    name: &str,
    n: usize,
    dependency: &Dependency,
) -> Vec<Member> {
    let mut members = Vec::new();
    for _ in 0..n {
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let layer = DistributedCircuitBreakerLayer::new(name, Policy::default(), store).unwrap();
        members.push(Member::new(layer, dependency));
    }
    members
}

/// About 100 calls a second from each member, for `time`.
pub async fn traffic(members: &[Member], time: Duration) {
    let until = tokio::time::Instant::now() + time;
    while tokio::time::Instant::now() < until {
        for m in members {
            let _ = m.call().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) for `done`.
pub async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

pub fn fleet_opened(e: &Event) -> bool {
    matches!(e, Event::FleetTransition(t) if t.from == State::Closed && t.to == State::Open)
}

pub fn opened(e: &Event) -> bool {
    matches!(e, Event::Transition(t) if t.to == State::Open)
}
