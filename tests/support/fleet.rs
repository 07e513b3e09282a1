//! Instances of a service, each with its own RedisStore, calling a test
//! dependency through one shared breaker.

use std::time::Duration;

use distributed_circuit_breaker::{
    Breaker, BreakerError, DistributedCircuitBreaker, DistributedCircuitBreakerLayer,
    ErrorsAsFailures, Policy, RedisStore, State, StoreFailure,
};
use tower::{Layer, Service, ServiceExt};

use super::dependency::Dependency;

/// The store timeout of every fault test.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// A call that takes longer than this hung: ten store timeouts.
pub const HANG: Duration = Duration::from_millis(500);
pub const THRESHOLD: u32 = 3;
pub const BREAK: Duration = Duration::from_millis(400);
pub const LEASE: Duration = Duration::from_secs(1);

pub fn policy() -> Policy {
    Policy::builder()
        .consecutive_failures(THRESHOLD)
        .break_duration(BREAK)
        .probe_lease(LEASE)
        .sync_interval(Duration::from_millis(50))
        .store_timeout(STORE_TIMEOUT)
        .build()
        .unwrap()
}

#[derive(Clone)]
pub struct Instance {
    pub svc: DistributedCircuitBreaker<Dependency, ErrorsAsFailures>,
    pub breaker: Breaker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Ok,
    Rejected,
    Failed,
}

impl Instance {
    pub async fn connect(url: &str, name: &str, dependency: &Dependency) -> Instance {
        Instance::connect_with(url, name, dependency, StoreFailure::Local).await
    }

    pub async fn connect_with(
        url: &str,
        name: &str,
        dependency: &Dependency,
        mode: StoreFailure,
    ) -> Instance {
        Instance::connect_policy(url, name, dependency, mode, policy()).await
    }

    pub async fn connect_policy(
        url: &str,
        name: &str,
        dependency: &Dependency,
        mode: StoreFailure,
        policy: Policy,
    ) -> Instance {
        let store = RedisStore::builder()
            .response_timeout(Duration::from_millis(300))
            .connect(url)
            .await
            .unwrap();
        Instance::with_store(store, name, dependency, mode, policy)
    }

    pub fn with_store(
        store: RedisStore,
        name: &str,
        dependency: &Dependency,
        mode: StoreFailure,
        policy: Policy,
    ) -> Instance {
        let layer = DistributedCircuitBreakerLayer::new(name, policy, store)
            .unwrap()
            .on_store_failure(mode);
        Instance {
            breaker: layer.breaker(),
            svc: layer.layer(dependency.clone()),
        }
    }

    /// One call; panics if it hangs.
    pub async fn call(&self) -> Call {
        let mut svc = self.svc.clone();
        let call = async move {
            let svc = ServiceExt::<()>::ready(&mut svc).await?;
            svc.call(()).await
        };
        match tokio::time::timeout(HANG, call).await.expect("a call hung") {
            Ok(_) => Call::Ok,
            Err(e) => match BreakerError::from(e) {
                BreakerError::Open(_) => Call::Rejected,
                _ => Call::Failed,
            },
        }
    }

    pub fn state(&self) -> State {
        self.breaker.snapshot().state
    }
}

/// Waits (bounded) until `done` holds for every instance.
pub async fn wait_until(instances: &[Instance], what: &str, done: impl Fn(&Instance) -> bool) {
    until(instances, what, done, false).await;
}

/// Calls every instance (a healthy breaker without calls does not talk to
/// its store, so it notices nothing) until `done` holds for each.
pub async fn call_until(instances: &[Instance], what: &str, done: impl Fn(&Instance) -> bool) {
    until(instances, what, done, true).await;
}

async fn until(instances: &[Instance], what: &str, done: impl Fn(&Instance) -> bool, call: bool) {
    for _ in 0..600 {
        if instances.iter().all(&done) {
            return;
        }
        if call {
            for i in instances {
                i.call().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let states: Vec<_> = instances
        .iter()
        .map(|i| (i.state(), i.breaker.is_degraded()))
        .collect();
    panic!("never reached: {what}; (state, degraded) = {states:?}");
}

/// Calls from every instance until each has seen `state`.
pub async fn drive_until(instances: &[Instance], state: State) {
    until(instances, &state.to_string(), |i| i.state() == state, true).await;
}
