//! The instances: real layers, services and breakers built through the
//! public API, each with a few clients calling the dependency at random
//! times (some calls cancelled half-way), crashing and joining on the
//! timeline.

use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::{
    CircuitOpen, DistributedCircuitBreaker, DistributedCircuitBreakerLayer, ErrorsAsFailures,
};
use tokio::sync::broadcast;
use tower::{Layer, Service, ServiceExt};

use crate::dependency::{Dependency, DependencyDown};
use crate::net::FaultyStore;
use crate::scenario::ms;
use crate::trace::{CallResult, Event};
use crate::world::{Member, Sim};

type Svc = DistributedCircuitBreaker<Dependency, ErrorsAsFailures>;

/// Announcements an instance may fall behind by before it is told it lagged.
const EVENT_BUFFER: usize = 16;

/// Starts a new instance; an eager one calls at once, before the store
/// could have answered anything.
pub fn join(sim: &Arc<Sim>, eager: bool) {
    let now = sim.now();
    let instance = {
        let mut w = sim.world();
        w.next_instance += 1;
        w.episode = None;
        w.next_instance
    };
    sim.log(Event::Join(instance));
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let (store, wire) = FaultyStore::new(instance, sim.clone(), events.clone());
    tokio::spawn(wire);
    let layer = DistributedCircuitBreakerLayer::with_store(
        sim.name.clone(),
        sim.scenario.policy.clone(),
        Arc::new(store),
    )
    .on_store_failure(sim.scenario.mode);
    let breaker = layer.breaker();
    let svc = layer.layer(Dependency::new(instance, sim.clone(), breaker.clone()));
    let tasks = (0..sim.scenario.clients)
        .map(|c| {
            let client = client(sim.clone(), instance, svc.clone(), eager && c == 0);
            tokio::spawn(client).abort_handle()
        })
        .collect();
    let member = Member {
        breaker,
        tasks,
        born: now,
        events,
        pending_probe: None,
    };
    sim.world().members.insert(instance, member);
}

/// The `n`-th live instance (modulo the fleet's size) crashes: its clients
/// stop and every handle to its breaker goes. The last one crashes only at
/// the end (`last`).
pub fn crash(sim: &Sim, n: usize, last: bool) {
    let member = {
        let mut w = sim.world();
        if w.members.len() == 1 && !last {
            return;
        }
        w.episode = None;
        let Some(&instance) = w.members.keys().nth(n % w.members.len().max(1)) else {
            return;
        };
        w.members.remove(&instance).map(|m| (instance, m))
    };
    if let Some((instance, member)) = member {
        for task in &member.tasks {
            task.abort();
        }
        sim.log(Event::Crash(instance));
    }
}

/// The `n`-th live instance's id.
pub fn nth(sim: &Sim, n: usize) -> Option<usize> {
    let w = sim.world();
    w.members.keys().nth(n % w.members.len().max(1)).copied()
}

/// Calls the dependency at random times, forever.
async fn client(sim: Arc<Sim>, instance: usize, mut svc: Svc, eager: bool) {
    let s = &sim.scenario;
    let mut wait = !eager;
    loop {
        if wait {
            let gap = sim.world().rng.range(s.call_gap.0, s.call_gap.1);
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        wait = true;
        let now = sim.now();
        let (call, cancel) = {
            let mut w = sim.world();
            let call = w.begin_call(now, instance);
            let cancel = w.rng.chance(s.cancel_percent);
            let after = w.rng.range(0, s.latency.1 + ms(s.policy.store_timeout()));
            (call, cancel.then_some(after))
        };
        let result = match cancel {
            None => one(&mut svc, call).await,
            Some(after) => {
                let limit = Duration::from_millis(after);
                tokio::time::timeout(limit, one(&mut svc, call))
                    .await
                    .unwrap_or(CallResult::Cancelled)
            }
        };
        let now = sim.now();
        sim.world().finished(s, now, call, result);
    }
}

/// One call through the breaker, as a tower user makes it.
async fn one(svc: &mut Svc, call: u64) -> CallResult {
    let result = match ServiceExt::<u64>::ready(svc).await {
        Ok(ready) => ready.call(call).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => CallResult::Passed,
        Err(e) if e.is::<CircuitOpen>() => CallResult::Rejected,
        Err(e) if e.is::<DependencyDown>() => CallResult::Failed,
        Err(e) => panic!("unexpected error from the breaker: {e}"),
    }
}
