//! The dependency behind every instance: healthy or failing on the
//! timeline's schedule, with a random latency; it tells the world which
//! calls reach it and how each one ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use distributed_circuit_breaker::Breaker;
use tower::Service;

use crate::world::Sim;

/// The dependency's answer while it is down.
#[derive(Debug)]
pub struct DependencyDown;

impl std::fmt::Display for DependencyDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad("dependency down")
    }
}

impl std::error::Error for DependencyDown {}

/// One instance's client of the dependency. It holds the instance's breaker
/// handle to note the view each call was admitted under.
#[derive(Clone)]
pub struct Dependency {
    instance: usize,
    sim: Arc<Sim>,
    breaker: Breaker,
}

impl Dependency {
    pub fn new(instance: usize, sim: Arc<Sim>, breaker: Breaker) -> Self {
        Self {
            instance,
            sim,
            breaker,
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<(), DependencyDown>> + Send>>;

/// A request is the number of the call.
impl Service<u64> for Dependency {
    type Response = ();
    type Error = DependencyDown;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DependencyDown>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: u64) -> Answer {
        let now = self.sim.now();
        let snapshot = self.breaker.snapshot();
        let degraded = self.breaker.is_degraded();
        let s = &self.sim.scenario;
        let latency = {
            let mut w = self.sim.world();
            let view = (snapshot.state, snapshot.generation);
            w.reached(s, now, self.instance, call, view, degraded);
            w.rng.range(s.latency.0, s.latency.1)
        };
        let guard = InFlight {
            sim: self.sim.clone(),
            call,
            done: false,
        };
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(latency)).await;
            let ok = guard.sim.world().healthy;
            guard.finish(ok);
            if ok {
                Ok(())
            } else {
                Err(DependencyDown)
            }
        })
    }
}

/// Tells the world how a call ended, also when it was dropped half-way.
struct InFlight {
    sim: Arc<Sim>,
    call: u64,
    done: bool,
}

impl InFlight {
    fn finish(mut self, ok: bool) {
        self.done = true;
        let now = self.sim.now();
        self.sim.world().answered(now, self.call, Some(ok));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            let now = self.sim.now();
            self.sim.world().answered(now, self.call, None);
        }
    }
}
