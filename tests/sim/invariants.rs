//! The invariants, each with the bookkeeping it needs. Every one is checked
//! as soon as the event that could break it happens, or on the world's tick
//! for those that are about time passing.
//!
//! 1. **Probes**: fleet-wide, at most `half_open_permits` calls holding store
//!    permits of one (epoch, generation) are in flight at the dependency.
//! 2. **No wedge**: once the store and the network have been calm and the
//!    dependency healthy for [`Scenario::wedge_bound`], every live instance
//!    is closed and not degraded, and so is the store.
//! 3. **Permits go back**: a permit the store granted is released (a release
//!    with its lease id is sent) as soon as its holder is done with it: the
//!    probe ended, or the answer never arrived.
//! 4. **Books balance**: a call that passed got the dependency's success, a
//!    failed call its failure, a rejected call never reached it; no call
//!    waits longer than `store_timeout` plus the dependency's latency.
//! 5. **Outages are cut short**: when the dependency fails a fleet that is
//!    calm, closed and agrees with the store, at a quorum of one, at most
//!    `threshold` plus the calls on their way (one per client: instances x
//!    clients) admitted by a closed view fail before every instance is open
//!    (the README's threshold + instances, with one call in flight each),
//!    plus, for thresholds of 4 or more, one per instance: its first failure,
//!    which joins the fleet's run only with its second.
//! 6. **Bounded**: the store never holds more leases than permits, nor more
//!    instances than the quorum lists keep; no task outlives the fleet.
//! 7. **Trips are earned**: the store opens a closed generation only after
//!    a call admitted under that generation failed (or one admitted before
//!    any answer, within the window).
//! 8. **Newcomers are never blind**: an instance that is not degraded admits
//!    a call before its first answer only after waiting `store_timeout`.
//! 9. **Views follow the store**: once the store and the network are calm
//!    and the store's generation has not changed for [`Scenario::agreement_bound`],
//!    every instance that is not degraded and has lived that long holds the
//!    store's generation
//!    (its state may differ only by its own local trip).

use distributed_circuit_breaker::State;

use crate::scenario::{ms, Scenario};
use crate::trace::{CallResult, Event, View};
use crate::world::{Ask, Book, Episode, Reached, World};

/// Failed calls remembered for invariant 7.
const FAILURES_KEPT: usize = 4_096;
/// The most instances the store's quorum lists keep (`MAX_QUORUM`, twice).
const QUORUM_LISTS: usize = 32;

impl World {
    pub fn begin_call(&mut self, now: u64, instance: usize) -> u64 {
        self.next_call += 1;
        let call = self.next_call;
        let book = Book {
            instance,
            started: now,
            reached: None,
        };
        self.calls.insert(call, book);
        call
    }

    /// A call reached the dependency (invariants 1 and 8).
    pub fn reached(
        &mut self,
        s: &Scenario,
        now: u64,
        instance: usize,
        call: u64,
        view: View,
        degraded: bool,
    ) {
        let (lease, born) = match self.members.get_mut(&instance) {
            Some(m) => (m.pending_probe.take(), m.born),
            None => (None, 0),
        };
        let probe = lease
            .and_then(|l| self.asks.get(&l))
            .and_then(|a| a.granted);
        self.trace.push(
            now,
            Event::Called {
                instance,
                call,
                view,
                degraded,
                probe: probe.is_some(),
            },
        );
        if view.1 == 0 && !degraded && now < born + ms(s.policy.store_timeout()) {
            self.violate(
                now,
                format!("i{instance} admitted call #{call} blind, before any answer of the store and before store_timeout"),
            );
        }
        if let Some(key) = probe {
            self.stats.probes += 1;
            let n = self.probes.entry(key).or_default();
            *n += 1;
            let n = *n;
            self.stats.max_probes = self.stats.max_probes.max(n);
            if n > s.permits() {
                self.violate(
                    now,
                    format!(
                        "{n} fleet probes in flight under generation {} (permits: {})",
                        key.1,
                        s.permits()
                    ),
                );
            }
        }
        if let Some(book) = self.calls.get_mut(&call) {
            book.reached = Some(Reached {
                generation: view.1,
                closed: view.0 == State::Closed && !degraded,
                probe,
                lease,
                answer: None,
            });
        }
    }

    /// The dependency answered a call (`Some(ok)`) or the call was dropped.
    pub fn answered(&mut self, now: u64, call: u64, ok: Option<bool>) {
        let Some(book) = self.calls.get_mut(&call) else {
            return;
        };
        let instance = book.instance;
        let Some(reached) = book.reached.as_mut() else {
            return;
        };
        reached.answer = ok;
        let (probe, lease, generation, closed) = (
            reached.probe,
            reached.lease,
            reached.generation,
            reached.closed,
        );
        if let Some(key) = probe {
            if let Some(n) = self.probes.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.probes.remove(&key);
                }
            }
        }
        if let Some(ask) = lease.and_then(|l| self.asks.get_mut(&l)) {
            ask.done_at = Some(now);
        }
        if ok == Some(false) {
            if self.failures.len() == FAILURES_KEPT {
                self.failures.pop_front();
            }
            self.failures.push_back((now, generation));
            if let Some(episode) = self.episode.as_mut() {
                if closed && episode.members.contains(&instance) {
                    episode.failures += 1;
                }
            }
        }
    }

    /// A call returned to its client (invariant 4).
    pub fn finished(&mut self, s: &Scenario, now: u64, call: u64, result: CallResult) {
        let Some(book) = self.calls.remove(&call) else {
            return;
        };
        self.stats.calls += 1;
        self.trace.push(
            now,
            Event::Finished {
                instance: book.instance,
                call,
                result,
            },
        );
        let answer = book.reached.as_ref().map(|r| r.answer);
        let balanced = match result {
            CallResult::Passed => answer == Some(Some(true)),
            CallResult::Failed => answer == Some(Some(false)),
            CallResult::Rejected => answer.is_none(),
            CallResult::Cancelled => true,
        };
        if !balanced {
            self.violate(
                now,
                format!("call #{call} {result:?} but the dependency saw {answer:?}"),
            );
        }
        let limit = ms(s.policy.store_timeout()) + s.latency.1 + 2;
        if result != CallResult::Cancelled && now - book.started > limit {
            self.violate(
                now,
                format!(
                    "call #{call} took {}ms (limit {limit}ms)",
                    now - book.started
                ),
            );
        }
    }

    /// An instance asked the store for a permit under `lease` (invariant 3).
    pub fn asked(&mut self, now: u64, instance: usize, lease: u64) {
        let ask = Ask {
            instance,
            asked: now,
            ..Ask::default()
        };
        self.asks.insert(lease, ask);
    }

    pub fn granted(&mut self, now: u64, lease: u64, generation: u64) {
        let epoch = self.epoch;
        if let Some(ask) = self.asks.get_mut(&lease) {
            if ask.granted.is_none() {
                ask.granted = Some((epoch, generation));
                ask.granted_at = now;
            }
        }
    }

    /// The store's answer reached the instance: with a permit, the next call
    /// of that instance is its probe; without, the ask is over.
    pub fn delivered(&mut self, now: u64, instance: usize, lease: u64, granted: bool) {
        if granted {
            if let Some(m) = self.members.get_mut(&instance) {
                m.pending_probe = Some(lease);
            }
        } else {
            self.abandoned(now, lease);
        }
    }

    /// The instance stopped waiting for an answer (timeout, error, cancel).
    pub fn abandoned(&mut self, now: u64, lease: u64) {
        if let Some(ask) = self.asks.get_mut(&lease) {
            ask.done_at.get_or_insert(now);
        }
    }

    pub fn released(&mut self, lease: u64) {
        if let Some(ask) = self.asks.get_mut(&lease) {
            ask.released = true;
        }
    }

    /// The store opened generation `generation` on a batch (invariant 7).
    pub fn tripped(&mut self, s: &Scenario, now: u64, generation: u64) {
        self.stats.trips += 1;
        let window = ms(s.policy.window()) + 2_000;
        let earned = self
            .failures
            .iter()
            .any(|&(at, g)| g == generation || (g == 0 && at + window >= now));
        if !earned {
            self.violate(
                now,
                format!(
                    "the store opened generation {} without a failure observed under it",
                    generation % 100_000
                ),
            );
        }
    }

    /// What the store holds stays within its bounds (invariant 6).
    pub fn bounded(&mut self, s: &Scenario, now: u64, leases: usize, instances: usize) {
        if leases > s.permits() || instances > QUORUM_LISTS {
            self.violate(
                now,
                format!("the store holds {leases} leases and {instances} instances"),
            );
        }
    }

    /// The dependency went down: if the store is calm and every instance
    /// closed under the store's generation, the fleet must open within the
    /// bound (invariant 5).
    pub fn outage(&mut self, s: &Scenario, now: u64, store: Option<View>) {
        let closed = self
            .members
            .values()
            .all(|m| World::closed(m) && Some(World::view(m).0 .1) == store.map(|v| v.1));
        if s.policy.fleet_quorum() == 1 && self.store_calm(now) && closed {
            self.episode = Some(Episode {
                start: now,
                members: self.members.keys().copied().collect(),
                failures: 0,
            });
        }
    }

    /// Checks on the world's tick: invariants 2, 3 and 5.
    pub fn tick(&mut self, s: &Scenario, now: u64, store: Option<View>) {
        self.check_episode(s, now);
        self.check_asks(now);
        self.check_wedge(s, now, store);
        self.check_agreement(s, now, store);
    }

    fn check_agreement(&mut self, s: &Scenario, now: u64, store: Option<View>) {
        let Some((_, generation)) = store else {
            return;
        };
        let bound = s.agreement_bound();
        let since = self.calm_since.max(self.store_changed);
        if !self.store_calm(now) || now < since + bound {
            return;
        }
        self.stats.agreement_checks += 1;
        let behind = self.members.iter().find_map(|(i, m)| {
            let ((state, held), degraded) = World::view(m);
            let settled = !degraded && now >= m.born + bound;
            (settled && held != generation).then_some((*i, state, held))
        });
        if let Some((i, state, held)) = behind {
            self.violate(
                now,
                format!(
                    "i{i} holds {state}@{} while the store has held generation {} for {}ms",
                    held % 100_000,
                    generation % 100_000,
                    now - since
                ),
            );
        }
    }

    fn check_episode(&mut self, s: &Scenario, now: u64) {
        let Some(episode) = &self.episode else {
            return;
        };
        let open = |i: &usize| {
            self.members
                .get(i)
                .is_some_and(|m| World::view(m).0 .0 != State::Closed)
        };
        if !episode.members.iter().all(open) {
            return;
        }
        let failures = episode.failures;
        // Thresholds of 4 or more count an instance's failures toward the
        // fleet's run only from its second in a row: each instance may add
        // one more failure before the fleet's run includes it.
        let corroboration = if s.threshold >= 4 {
            episode.members.len()
        } else {
            0
        };
        let bound = s.threshold as usize + episode.members.len() * s.clients + corroboration;
        let start = episode.start;
        self.episode = None;
        self.stats.episodes.push(failures);
        if failures > bound {
            self.violate(
                now,
                format!("{failures} calls failed before the whole fleet was open after the outage at {start}ms (bound {bound})"),
            );
        }
    }

    fn check_asks(&mut self, now: u64) {
        let mut orphan = None;
        self.asks.retain(|&lease, ask| {
            let Some(done) = ask.done_at else {
                return true;
            };
            match ask.granted {
                Some(_) if !ask.released && now > done.max(ask.granted_at) + 1 => {
                    orphan.get_or_insert((lease, ask.instance, done));
                    false
                }
                Some(_) if ask.released => {
                    self.stats.permits_returned += 1;
                    false
                }
                Some(_) => true,
                None => now < ask.asked + 10_000,
            }
        });
        if let Some((lease, instance, done)) = orphan {
            self.violate(
                now,
                format!(
                    "i{instance} never returned the permit of lease {} (done with it at {done}ms)",
                    lease % 10_000
                ),
            );
        }
    }

    fn check_wedge(&mut self, s: &Scenario, now: u64, store: Option<View>) {
        if !self.healthy || !self.store_calm(now) {
            return;
        }
        let since = self.healthy_since.max(self.calm_since);
        if now < since + s.wedge_bound() {
            return;
        }
        self.stats.wedge_checks += 1;
        let stuck = self
            .members
            .iter()
            .find(|(_, m)| !World::closed(m))
            .map(|(i, m)| (*i, World::view(m)));
        if let Some((i, ((state, generation), degraded))) = stuck {
            self.violate(
                now,
                format!(
                    "i{i} is {state}@{}{} {}ms after the store and the dependency became healthy (bound {}ms)",
                    generation % 100_000,
                    if degraded { " (degraded)" } else { "" },
                    now - since,
                    s.wedge_bound()
                ),
            );
        } else if let Some((state, generation)) = store.filter(|v| v.0 != State::Closed) {
            self.violate(
                now,
                format!(
                    "the store is {state}@{} {}ms after it and the dependency became healthy",
                    generation % 100_000,
                    now - since
                ),
            );
        }
    }
}
