//! The fault-injecting transport between the instances and the store.
//!
//! Each instance gets its own [`FaultyStore`], its "connection". A request
//! goes on the connection's wire, a task that applies requests to the
//! [`SimStore`] one at a time in the order they were sent (a Redis
//! connection is ordered), each after its own delay and after any store
//! pause. Whether the client still waits does not matter: a request on the
//! wire is applied even after the client gave up, so a reply can arrive
//! after the timeout, or never, with the request applied or not. Replies
//! travel back on their own, so they may overtake each other.
//!
//! Announcements go from the store to each instance on their own path:
//! lost, late (and so reordered), duplicated, or replaced by a resync.

use std::future::{pending, Future};
use std::sync::Arc;
use std::time::Duration;

use distributed_circuit_breaker::sim::SimStore;
use distributed_circuit_breaker::store::{
    Acquired, BreakerName, Force, OutcomeBatch, ProbeResult, Store, StoreError, StoreErrorKind,
    StoreFuture,
};
use distributed_circuit_breaker::{Policy, Snapshot, State, StoreEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use crate::trace::{Event, Op};
use crate::world::Sim;

/// A request as it travels, with what the network will do to it.
pub struct Request {
    call: Call,
    sent: Instant,
    fate: Fate,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

#[derive(Debug, Clone, Copy)]
enum Call {
    Record(OutcomeBatch),
    Acquire(u64),
    Release(u64, u64, ProbeResult),
    Read,
}

enum Reply {
    Snapshot(Snapshot),
    Acquired(Acquired),
}

#[derive(Debug, Default, Clone, Copy)]
struct Fate {
    delay: u64,
    lost: bool,
    duplicate: bool,
    error_before: bool,
    error_after: bool,
    reply_lost: bool,
    reply_delay: u64,
}

/// One instance's connection to the store.
pub struct FaultyStore {
    instance: usize,
    sim: Arc<Sim>,
    wire: mpsc::UnboundedSender<Request>,
    events: broadcast::Sender<StoreEvent>,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("instance", &self.instance)
            .finish()
    }
}

impl FaultyStore {
    /// A connection for `instance`, and its wire (to run as a task).
    pub fn new(
        instance: usize,
        sim: Arc<Sim>,
        events: broadcast::Sender<StoreEvent>,
    ) -> (Self, impl Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let wire = wire(sim.clone(), instance, rx);
        let store = FaultyStore {
            instance,
            sim,
            wire: tx,
            events,
        };
        (store, wire)
    }

    /// Sends a request; the receiver gets the reply, if one ever comes.
    fn send(&self, call: Call) -> oneshot::Receiver<Result<Reply, StoreError>> {
        let now = self.sim.now();
        let fate = {
            let mut w = self.sim.world();
            let partitioned = w.partitioned.get(&self.instance).is_some_and(|&t| t > now);
            let faults = w.faults;
            let r = &mut w.rng;
            match faults {
                _ if partitioned => Fate {
                    lost: r.chance(50),
                    error_before: true,
                    ..Fate::default()
                },
                None => Fate::default(),
                Some(f) => Fate {
                    delay: if r.chance(f.request_delay) {
                        r.range(1, f.max_delay)
                    } else {
                        0
                    },
                    lost: r.chance(f.request_lost),
                    duplicate: r.chance(f.duplicate),
                    error_before: r.chance(f.error_before),
                    error_after: r.chance(f.error_after),
                    reply_lost: r.chance(f.reply_lost),
                    reply_delay: if r.chance(f.reply_delay) {
                        r.range(1, f.max_delay)
                    } else {
                        0
                    },
                },
            }
        };
        let label = match fate {
            Fate { lost: true, .. } => "lost",
            Fate {
                error_before: true, ..
            } => "refused",
            Fate {
                error_after: true, ..
            } => "applied, error",
            Fate {
                reply_lost: true, ..
            } => "reply lost",
            Fate {
                duplicate: true, ..
            } => "duplicated",
            Fate {
                delay: 0,
                reply_delay: 0,
                ..
            } => "ok",
            _ => "late",
        };
        self.sim.log(Event::Sent {
            instance: self.instance,
            op: op(&call),
            fate: label,
        });
        let (tx, rx) = oneshot::channel();
        if fate.lost {
            // Dropping the sender leaves the client waiting until its timeout.
        } else if fate.error_before {
            let _ = tx.send(Err(unavailable()));
        } else {
            let request = Request {
                call,
                sent: Instant::now(),
                fate,
                reply: tx,
            };
            let _ = self.wire.send(request);
        }
        rx
    }
}

fn unavailable() -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, "simulated fault")
}

/// Waits for a reply; a reply that never comes keeps the client waiting.
async fn reply(rx: oneshot::Receiver<Result<Reply, StoreError>>) -> Result<Reply, StoreError> {
    match rx.await {
        Ok(answer) => answer,
        Err(_) => pending().await,
    }
}

fn snapshot_of(reply: Result<Reply, StoreError>) -> Result<Snapshot, StoreError> {
    match reply? {
        Reply::Snapshot(s) => Ok(s),
        Reply::Acquired(a) => Ok(a.snapshot),
    }
}

impl Store for FaultyStore {
    fn record<'a>(
        &'a self,
        _: &'a BreakerName,
        _: &'a Policy,
        batch: OutcomeBatch,
    ) -> StoreFuture<'a, Snapshot> {
        let rx = self.send(Call::Record(batch));
        Box::pin(async move { snapshot_of(reply(rx).await) })
    }

    fn acquire<'a>(
        &'a self,
        _: &'a BreakerName,
        _: &'a Policy,
        lease: u64,
    ) -> StoreFuture<'a, Acquired> {
        let now = self.sim.now();
        self.sim.world().asked(now, self.instance, lease);
        let rx = self.send(Call::Acquire(lease));
        let mut ask = Waiting {
            sim: self.sim.clone(),
            lease,
            waiting: true,
        };
        let instance = self.instance;
        Box::pin(async move {
            let acquired = match reply(rx).await? {
                Reply::Acquired(a) => a,
                Reply::Snapshot(_) => return Err(unavailable()),
            };
            ask.waiting = false;
            let now = ask.sim.now();
            let granted = acquired.lease.is_some();
            ask.sim.world().delivered(now, instance, lease, granted);
            Ok(acquired)
        })
    }

    fn release<'a>(
        &'a self,
        _: &'a BreakerName,
        _: &'a Policy,
        generation: u64,
        lease: u64,
        result: ProbeResult,
    ) -> StoreFuture<'a, Snapshot> {
        self.sim.world().released(lease);
        let rx = self.send(Call::Release(generation, lease, result));
        Box::pin(async move { snapshot_of(reply(rx).await) })
    }

    fn force<'a>(
        &'a self,
        name: &'a BreakerName,
        policy: &'a Policy,
        force: Force,
    ) -> StoreFuture<'a, Snapshot> {
        self.sim.store.force(name, policy, force)
    }

    fn snapshot<'a>(&'a self, _: &'a BreakerName, _: &'a Policy) -> StoreFuture<'a, Snapshot> {
        let rx = self.send(Call::Read);
        Box::pin(async move { snapshot_of(reply(rx).await) })
    }

    fn list(&self) -> StoreFuture<'_, Vec<(String, Snapshot)>> {
        self.sim.store.list()
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}

/// A permit request whose answer has not reached the client: dropped so, the
/// client gave up on it (invariant 3 then expects a blind release).
struct Waiting {
    sim: Arc<Sim>,
    lease: u64,
    waiting: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.waiting {
            let now = self.sim.now();
            self.sim.world().abandoned(now, self.lease);
        }
    }
}

/// Applies one connection's requests in order, each after its delay and any
/// store pause; replies go back on their own.
async fn wire(sim: Arc<Sim>, instance: usize, mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(request) = rx.recv().await {
        let fate = request.fate;
        tokio::time::sleep_until(request.sent + Duration::from_millis(fate.delay)).await;
        loop {
            let (now, until) = (sim.now(), sim.world().paused_until);
            if until <= now {
                break;
            }
            tokio::time::sleep(Duration::from_millis(until - now)).await;
        }
        let mut answer = apply(&sim, instance, request.call).await;
        if fate.duplicate {
            answer = apply(&sim, instance, request.call).await;
        }
        if fate.error_after {
            answer = Err(unavailable());
        }
        if fate.reply_lost {
            continue;
        }
        let tx = request.reply;
        if fate.reply_delay == 0 {
            let _ = tx.send(answer);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(fate.reply_delay)).await;
                let _ = tx.send(answer);
            });
        }
    }
}

/// Runs one request on the store and tells the world what it did.
async fn apply(sim: &Sim, instance: usize, call: Call) -> Result<Reply, StoreError> {
    let (store, name, policy) = (&sim.store, &sim.name, &sim.scenario.policy);
    let before = sim.store_view();
    let reply = match call {
        Call::Record(batch) => Reply::Snapshot(store.record(name, policy, batch).await?),
        Call::Acquire(lease) => Reply::Acquired(store.acquire(name, policy, lease).await?),
        Call::Release(generation, lease, result) => Reply::Snapshot(
            store
                .release(name, policy, generation, lease, result)
                .await?,
        ),
        Call::Read => Reply::Snapshot(store.snapshot(name, policy).await?),
    };
    let now = sim.now();
    let inspected = sim.store.inspect(name, policy);
    let after = match &reply {
        Reply::Snapshot(s) => (s.state, s.generation),
        Reply::Acquired(a) => (a.snapshot.state, a.snapshot.generation),
    };
    let mut w = sim.world();
    let transition = before.map(|v| v.1) != Some(after.1);
    sim.checkpoint(&mut w, transition);
    if transition {
        w.store_changed = now;
    }
    let granted = match (&reply, call) {
        (Reply::Acquired(a), Call::Acquire(lease)) if a.lease.is_some() => {
            w.granted(now, lease, a.snapshot.generation);
            true
        }
        _ => false,
    };
    w.trace.push(
        now,
        Event::Applied {
            instance,
            op: op(&call),
            before,
            after,
            granted,
        },
    );
    if let (Call::Record(_), Some((State::Closed, generation))) = (call, before) {
        if after.0 == State::Open {
            w.tripped(&sim.scenario, now, generation);
        }
    }
    if let Some(b) = inspected {
        w.bounded(&sim.scenario, now, b.leases, b.instances);
    }
    Ok(reply)
}

fn op(call: &Call) -> Op {
    match *call {
        Call::Record(b) => Op::Record {
            generation: b.generation,
            successes: b.successes,
            failures: b.failures,
            trailing: b.trailing_failures,
            tripped: b.tripped,
        },
        Call::Acquire(lease) => Op::Acquire(lease),
        Call::Release(generation, lease, _) => Op::Release { generation, lease },
        Call::Read => Op::Read,
    }
}

/// Carries the store's announcements to every live instance, with faults.
pub async fn announce(sim: Arc<Sim>, store: SimStore) {
    let mut rx = store.subscribe();
    loop {
        let event = match rx.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => StoreEvent::Resync,
            Err(RecvError::Closed) => return,
        };
        let deliveries: Vec<_> = {
            let mut w = sim.world();
            let faults = w.faults;
            let members: Vec<_> = w
                .members
                .iter()
                .map(|(i, m)| (*i, m.events.clone()))
                .collect();
            members
                .into_iter()
                .filter_map(|(i, tx)| {
                    let r = &mut w.rng;
                    let Some(f) = faults else {
                        return Some((i, tx, 0, 1));
                    };
                    if r.chance(f.event_lost) {
                        return None;
                    }
                    let delay = if r.chance(f.event_delay) {
                        r.range(1, 300)
                    } else {
                        0
                    };
                    let copies = if r.chance(f.event_duplicate) { 2 } else { 1 };
                    Some((i, tx, delay, copies))
                })
                .collect()
        };
        for (instance, tx, delay, copies) in deliveries {
            let event = event.clone();
            let sim = sim.clone();
            let deliver = move || {
                sim.log(Event::Announced {
                    instance,
                    view: match &event {
                        StoreEvent::Transition(t) => {
                            Some((t.snapshot.state, t.snapshot.generation))
                        }
                        _ => None,
                    },
                });
                for _ in 0..copies {
                    let _ = tx.send(event.clone());
                }
            };
            if delay == 0 {
                deliver();
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    deliver();
                });
            }
        }
    }
}

/// Tells one instance that announcements may have been missed.
pub fn resync(sim: &Sim, instance: usize, tx: &broadcast::Sender<StoreEvent>) {
    sim.log(Event::Announced {
        instance,
        view: None,
    });
    let _ = tx.send(StoreEvent::Resync);
}
