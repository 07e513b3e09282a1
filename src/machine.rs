//! The pure state machine of one breaker: no I/O and no clock of its own.
//!
//! Time is the store's clock in milliseconds, passed in; randomness (for jitter)
//! is passed in as a 16-bit number. `MemoryStore` runs this machine directly and
//! the Redis scripts run a line-for-line port of it, so both stores behave alike
//! (a differential test checks that they do). All arithmetic is on integers small
//! enough to be exact in Lua's doubles.

use std::time::Duration;

use crate::policy::Params;
use crate::store::{
    Acquired, BreakerInfo, Force, ForceNote, OperatorNote, OutcomeBatch, ProbeResult,
};
use crate::{Snapshot, State};

/// What a breaker forced open until reset reports as time left (callers'
/// `Retry-After`), at least: a minute, or the policy's longest break if
/// longer. Nobody knows when an operator will act, and people act in
/// minutes, not seconds: callers told to come back after the policy's
/// usual break would only retry in vain. (The fleet learns of a reset at
/// once all the same: it is announced, and forced states are re-read every
/// sync interval.)
pub(crate) const UNTIL_RESET_RETRY_MS: u64 = 60_000;

/// The most iterations the backoff loop takes; the break is capped long before.
const MAX_BACKOFF_STEPS: u32 = 64;

/// A half-open permit on loan until `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) id: u64,
    pub(crate) deadline: u64,
}

/// An instance the store heard from, and when (store clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) instance: u64,
    pub(crate) at: u64,
}

/// The most instances a quorum may ask for; bounds the lists the store keeps.
pub(crate) const MAX_QUORUM: u32 = 16;

/// One slice of the sliding window; `index` is `time / bucket_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Bucket {
    pub(crate) index: u64,
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// Everything the store keeps about one breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Machine {
    pub(crate) state: State,
    pub(crate) generation: u64,
    pub(crate) open_until: u64,
    /// When a forced state ends; 0 for never.
    pub(crate) forced_until: u64,
    /// Opens since the breaker last closed, for the backoff.
    pub(crate) opens: u32,
    /// The fleet's run of consecutive failures, merged by time across batches.
    pub(crate) consecutive: u64,
    /// When the run started (store clock); meaningful while `consecutive > 0`.
    pub(crate) run_start: u64,
    /// The latest success any batch proved (store clock): a run that started
    /// before it is broken.
    pub(crate) last_success: u64,
    /// Instances that reported failures, and when last (kept only when the
    /// policy's quorum is above one, pruned to the window).
    pub(crate) failing: Vec<Seen>,
    /// Instances that tripped their own breaker, and when (likewise).
    pub(crate) tripped: Vec<Seen>,
    pub(crate) probe_successes: u32,
    pub(crate) leases: Vec<Lease>,
    pub(crate) buckets: Vec<Bucket>,
    /// The bucket length the window was written with (0: not known yet).
    pub(crate) bucket_ms: u64,
    /// The fingerprint of the policy of the last process that wrote.
    pub(crate) policy: u64,
    /// The operator's note on the current state (see [`Machine::force_noted`]);
    /// cleared by every transition.
    pub(crate) note: Note,
}

/// Why and by whom a breaker was forced, and when (store clock; 0 with no note).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Note {
    pub(crate) reason: String,
    pub(crate) actor: String,
    pub(crate) at: u64,
}

/// The generation of a breaker the store does not hold: closed, with nothing
/// counted. Stores create no record for it until something worth keeping
/// happens (see [`Machine::worth_keeping`]), and every process agrees on it
/// without asking anyone to write.
pub(crate) const IMPLICIT_GENERATION: u64 = 1;

impl Machine {
    /// A breaker the store does not hold (see [`IMPLICIT_GENERATION`]).
    pub(crate) fn implicit() -> Self {
        Machine {
            generation: IMPLICIT_GENERATION,
            ..Machine::new(0)
        }
    }

    /// Whether a store must keep a record of this breaker: anything but a
    /// closed breaker of the implicit generation with no run, trip or lease,
    /// and nothing in its window that a rule of the policy reads (calls and
    /// failures only under a rate rule, failing instances only under a
    /// quorum). Failures that never formed a run are forgotten under a
    /// runs-only policy: a flood of keys failing once each leaves nothing.
    pub(crate) fn worth_keeping(&self, p: &Params) -> bool {
        let rates = p.failure.is_on() || p.slow.is_on();
        self.state != State::Closed
            || self.generation != IMPLICIT_GENERATION
            || self.consecutive != 0
            || (p.quorum > 1 && !self.failing.is_empty())
            || !self.tripped.is_empty()
            || !self.leases.is_empty()
            || (rates && self.buckets.iter().any(|b| b.calls != 0))
    }

    /// A closed breaker. Its generation starts at the current time so that a
    /// breaker re-created after the store lost its data (restart, flush) is
    /// still newer than anything a process remembers of the old one.
    pub(crate) fn new(now: u64) -> Self {
        Machine {
            state: State::Closed,
            generation: now + 1,
            open_until: 0,
            forced_until: 0,
            opens: 0,
            consecutive: 0,
            run_start: 0,
            last_success: 0,
            failing: Vec::new(),
            tripped: Vec::new(),
            probe_successes: 0,
            leases: Vec::new(),
            buckets: Vec::new(),
            bucket_ms: 0,
            policy: 0,
            note: Note::default(),
        }
    }

    /// What the machine looks like from outside at `now`.
    pub(crate) fn snapshot(&self, p: &Params, now: u64) -> Snapshot {
        let remaining = match self.state {
            State::Open => self.open_until.saturating_sub(now),
            State::HalfOpen if self.live_leases(now) >= p.permits => {
                let first_free = self.leases.iter().map(|l| l.deadline).min().unwrap_or(now);
                first_free.saturating_sub(now).min(p.sync_ms)
            }
            // Until an operator acts: see `UNTIL_RESET_RETRY_MS`.
            State::ForcedOpen if self.forced_until == 0 => p.break_max_ms.max(UNTIL_RESET_RETRY_MS),
            State::ForcedOpen | State::ForcedClosed | State::Disabled => {
                self.forced_until.saturating_sub(now)
            }
            _ => 0,
        };
        Snapshot {
            state: self.state,
            generation: self.generation,
            remaining: Duration::from_millis(remaining),
        }
    }

    /// Until when a store must keep this breaker if nothing touches it:
    /// `key_ttl` from now, or until a forced state or a break ends and
    /// `key_ttl` after; a closed breaker only as long as its window (its
    /// counts mean nothing after that), at most `key_ttl`;
    /// `u64::MAX` for a forced state without an expiry.
    pub(crate) fn keep_until(&self, p: &Params, now: u64) -> u64 {
        let forced = matches!(
            self.state,
            State::ForcedOpen | State::ForcedClosed | State::Disabled
        );
        match (forced, self.forced_until) {
            (true, 0) => u64::MAX,
            (true, until) => until.max(now).saturating_add(p.ttl_ms),
            // An operator's break may outlast the TTL.
            (false, _) if self.state == State::Open => {
                self.open_until.max(now).saturating_add(p.ttl_ms)
            }
            (false, _) if self.state == State::Closed => now.saturating_add(
                p.ttl_ms
                    .min(p.bucket_ms.saturating_mul(u64::from(p.buckets))),
            ),
            (false, _) => now.saturating_add(p.ttl_ms),
        }
    }

    /// Ends a forced state whose time is up. Every operation calls this first.
    pub(crate) fn expire(&mut self, now: u64) {
        let forced = matches!(
            self.state,
            State::ForcedOpen | State::ForcedClosed | State::Disabled
        );
        if forced && self.forced_until != 0 && now >= self.forced_until {
            self.close(now);
        }
    }

    /// Counts a batch of outcomes observed under `batch.generation`; a batch from
    /// another generation is dropped. Generation 0 is a process that has not
    /// heard from the store yet: it believed the breaker closed, so its batch
    /// counts toward whatever generation is current.
    ///
    /// Returns the fingerprint of another policy that wrote this breaker
    /// before, if the caller's differs (a rolling deploy, or a mistake).
    pub(crate) fn record(
        &mut self,
        p: &Params,
        now: u64,
        batch: &OutcomeBatch,
        rand16: u32,
    ) -> Option<u64> {
        self.expire(now);
        let other = self.note_policy(p);
        if batch.generation != self.generation
            && batch.generation != 0
            // A breaker that never left its implicit generation holds only
            // closed-state counts: a batch of an earlier life counts too.
            && self.generation != IMPLICIT_GENERATION
        {
            return other;
        }
        match self.state {
            State::Closed => {
                self.count(p, now, batch);
                if self.should_trip(p, now, batch.tripped) {
                    self.open(p, now, rand16);
                }
            }
            // Metrics only: counted, never tripped.
            State::ForcedClosed => self.count(p, now, batch),
            _ => {}
        }
        other
    }

    /// Asks for a half-open probe permit under the id `lease` the caller chose.
    /// Moves an open breaker whose break is over to half-open; grants the
    /// lease while fewer than `permits` are out. Asking again with an id that
    /// holds a live lease answers with that lease (a retried request takes no
    /// second permit), and because the caller knows the id before it asks, it
    /// can free a permit it never heard back about (see [`Machine::release`]).
    pub(crate) fn acquire(&mut self, p: &Params, now: u64, lease: u64) -> Acquired {
        self.expire(now);
        if self.state == State::Open && now >= self.open_until {
            self.transition(State::HalfOpen, now);
        }
        let mut granted = None;
        if self.state == State::HalfOpen {
            self.leases.retain(|l| l.deadline > now);
            if self.leases.iter().any(|l| l.id == lease) {
                granted = Some(lease);
            } else if lease != 0 && self.live_leases(now) < p.permits {
                self.leases.push(Lease {
                    id: lease,
                    deadline: now.saturating_add(p.lease_ms),
                });
                granted = Some(lease);
            }
        }
        Acquired {
            lease: granted,
            snapshot: self.snapshot(p, now),
        }
    }

    /// Returns a probe's permit with its result. A result for another generation
    /// is dropped (the breaker has moved on without it). Generation 0 is a
    /// blind release of an acquire whose answer never arrived: it frees the
    /// permit if that id holds one, and counts nothing.
    pub(crate) fn release(
        &mut self,
        p: &Params,
        now: u64,
        generation: u64,
        lease: u64,
        result: ProbeResult,
        rand16: u32,
    ) {
        self.expire(now);
        if self.state != State::HalfOpen {
            return;
        }
        if generation == 0 {
            // Blind: the caller never learned whether (or under which
            // generation) the permit was granted; free it, count nothing.
            self.leases.retain(|l| l.id != lease);
            return;
        }
        if generation != self.generation {
            return;
        }
        self.leases.retain(|l| l.id != lease);
        match result {
            ProbeResult::Failure => self.open(p, now, rand16),
            ProbeResult::Success => {
                self.probe_successes += 1;
                if self.probe_successes >= p.successes {
                    self.opens = 0;
                    self.close(now);
                }
            }
            ProbeResult::Cancelled => {}
        }
    }

    /// An operator's command with its note: the note stays with the state
    /// the command leaves (none after a reset) until the next transition.
    pub(crate) fn force_noted(&mut self, now: u64, force: Force, note: &ForceNote) {
        self.force(now, force);
        if force == Force::Reset || note.is_empty() {
            self.note = Note::default();
        } else {
            self.note = Note {
                reason: note.reason_str().unwrap_or_default().to_owned(),
                actor: note.actor_str().unwrap_or_default().to_owned(),
                at: now.max(1),
            };
        }
    }

    /// What an operator sees of the breaker at `now`, without a policy: a
    /// forced state past its expiry shows as the closed breaker it becomes
    /// on its next operation, and the window's counts are those of the
    /// layout it was last written with.
    pub(crate) fn info(&self, name: &str, now: u64) -> BreakerInfo {
        let mut m = self.clone();
        m.expire(now);
        let forced = matches!(
            m.state,
            State::ForcedOpen | State::ForcedClosed | State::Disabled
        );
        let remaining = match m.state {
            State::Open => m.open_until.saturating_sub(now),
            _ if forced => m.forced_until.saturating_sub(now),
            _ => 0,
        };
        let (mut calls, mut failures, mut slow) = (0, 0, 0);
        if m.bucket_ms > 0 && !m.buckets.is_empty() {
            let current = now / m.bucket_ms;
            let oldest = (current + 1).saturating_sub(m.buckets.len() as u64);
            for b in m
                .buckets
                .iter()
                .filter(|b| b.calls > 0 && b.index >= oldest && b.index <= current)
            {
                calls += b.calls;
                failures += b.failures;
                slow += b.slow;
            }
        }
        let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let mut info = BreakerInfo::new(
            name,
            Snapshot {
                state: m.state,
                generation: m.generation,
                remaining: Duration::from_millis(remaining),
            },
        );
        info.calls = calls;
        info.failures = failures;
        info.slow = slow;
        info.consecutive_failures = m.consecutive;
        info.note = (m.note.at > 0).then(|| OperatorNote {
            reason: text(&m.note.reason),
            actor: text(&m.note.actor),
            at: std::time::UNIX_EPOCH + Duration::from_millis(m.note.at),
        });
        info.forced_until_reset = forced && m.forced_until == 0;
        info
    }

    /// An operator's command.
    pub(crate) fn force(&mut self, now: u64, force: Force) {
        self.expire(now);
        let (state, duration) = match force {
            Force::Reset => {
                self.opens = 0;
                self.close(now);
                return;
            }
            Force::OpenThenProbe(d) => {
                // An ordinary break of the operator's length: half-open after.
                self.transition(State::Open, now);
                self.open_until = now.saturating_add(force_ms(d));
                return;
            }
            Force::Open(d) => (State::ForcedOpen, d),
            Force::Closed(d) => (State::ForcedClosed, d),
            Force::Disabled(d) => (State::Disabled, d),
        };
        // Forcing the state a breaker is in changes only its expiry: no
        // transition, nothing announced.
        if self.state != state {
            self.transition(state, now);
        }
        self.forced_until = duration.map_or(0, |d| now.saturating_add(force_ms(d)));
    }

    fn live_leases(&self, now: u64) -> u32 {
        let live = self.leases.iter().filter(|l| l.deadline > now).count();
        u32::try_from(live).unwrap_or(u32::MAX)
    }

    /// Merges a batch into the fleet's counts. The run of consecutive
    /// failures is merged by time, not by arrival: a batch's success breaks
    /// the run only if it happened after the run started, and a batch's
    /// trailing failures extend it only if no known success is newer. So a
    /// batch that still carries successes from before an outage never erases
    /// the failures other instances reported since.
    fn count(&mut self, p: &Params, now: u64, batch: &OutcomeBatch) {
        if batch.successes > 0 {
            let at = now.saturating_sub(batch.success_age_ms);
            self.last_success = self.last_success.max(at);
            if self.consecutive > 0 && self.run_start <= self.last_success {
                self.consecutive = 0;
            }
        }
        if batch.trailing_failures > 0 && batch.run_age_ms < OutcomeBatch::UNKNOWN_AGE {
            let start = now.saturating_sub(batch.run_age_ms);
            if start >= self.last_success {
                self.run_start = if self.consecutive == 0 {
                    start
                } else {
                    self.run_start.min(start)
                };
                self.consecutive += u64::from(batch.trailing_failures);
            }
        }
        if p.quorum > 1 {
            let window = p.bucket_ms * u64::from(p.buckets);
            if batch.failures > 0 {
                note(&mut self.failing, batch.instance, now, window);
            }
            if batch.tripped {
                note(&mut self.tripped, batch.instance, now, window);
            }
        }
        self.rebucket(p, now);
        // The bucket of when the calls happened, not of when they arrived.
        let index = now.saturating_sub(batch.counted_age_ms) / p.bucket_ms;
        if index + u64::from(p.buckets) <= now / p.bucket_ms {
            return; // older than the window
        }
        let slot = &mut self.buckets[(index % u64::from(p.buckets)) as usize];
        if slot.index < index || slot.calls == 0 {
            *slot = Bucket {
                index,
                ..Bucket::default()
            };
        } else if slot.index > index {
            return; // its bucket was reused for a newer one: out of the window
        }
        slot.calls += u64::from(batch.successes) + u64::from(batch.failures);
        slot.failures += u64::from(batch.failures);
        slot.slow += u64::from(batch.slow);
    }

    /// Lays the window out as `p` says, keeping what it counted: during a
    /// rolling deploy two policies with different windows share a breaker,
    /// and each process's counts must survive the other's writes.
    fn rebucket(&mut self, p: &Params, now: u64) {
        let from_ms = if self.bucket_ms == 0 {
            p.bucket_ms
        } else {
            self.bucket_ms
        };
        if self.buckets.len() == p.buckets as usize && from_ms == p.bucket_ms {
            self.bucket_ms = p.bucket_ms;
            return;
        }
        let old = std::mem::replace(
            &mut self.buckets,
            vec![Bucket::default(); p.buckets as usize],
        );
        self.bucket_ms = p.bucket_ms;
        let current = now / p.bucket_ms;
        for b in old.into_iter().filter(|b| b.calls > 0) {
            let index = b.index.saturating_mul(from_ms) / p.bucket_ms;
            if index > current || index + u64::from(p.buckets) <= current {
                continue; // outside the new window
            }
            let slot = &mut self.buckets[(index % u64::from(p.buckets)) as usize];
            if slot.index != index {
                if slot.calls > 0 && slot.index > index {
                    continue;
                }
                *slot = Bucket {
                    index,
                    ..Bucket::default()
                };
            }
            slot.calls += b.calls;
            slot.failures += b.failures;
            slot.slow += b.slow;
        }
    }

    /// Records which policy wrote last; the previous one if it differed.
    pub(crate) fn note_policy(&mut self, p: &Params) -> Option<u64> {
        let before = std::mem::replace(&mut self.policy, p.fingerprint);
        (before != 0 && before != p.fingerprint).then_some(before)
    }

    /// Whether the fleet opens now: on enough distinct local trips, or on the
    /// fleet's own counts once failures came from enough distinct instances.
    fn should_trip(&self, p: &Params, now: u64, tripped: bool) -> bool {
        let window = p.bucket_ms * u64::from(p.buckets);
        let distinct = |seen: &[Seen]| {
            let live = seen.iter().filter(|s| s.at + window > now).count();
            u32::try_from(live).unwrap_or(u32::MAX)
        };
        if p.quorum <= 1 {
            if tripped {
                return true;
            }
        } else {
            if distinct(&self.tripped) >= p.quorum {
                return true;
            }
            if distinct(&self.failing) < p.quorum {
                return false;
            }
        }
        if p.consecutive > 0 && self.consecutive >= u64::from(p.consecutive) {
            return true;
        }
        if !p.failure.is_on() && !p.slow.is_on() {
            return false;
        }
        let current = now / p.bucket_ms;
        let oldest = (current + 1).saturating_sub(u64::from(p.buckets));
        let (mut calls, mut failures, mut slow) = (0, 0, 0);
        for b in self
            .buckets
            .iter()
            .filter(|b| b.calls > 0 && b.index >= oldest && b.index <= current)
        {
            calls += b.calls;
            failures += b.failures;
            slow += b.slow;
        }
        if calls < u64::from(p.minimum_calls) {
            return false;
        }
        p.failure.reached(failures, calls) || p.slow.reached(slow, calls)
    }

    fn open(&mut self, p: &Params, now: u64, rand16: u32) {
        self.transition(State::Open, now);
        self.opens = self.opens.saturating_add(1);
        self.open_until = now + break_ms(p, self.opens, rand16);
    }

    fn close(&mut self, now: u64) {
        self.transition(State::Closed, now);
    }

    /// Applies the report of the fleet's health check on the open state of
    /// `generation`: healthy moves it to half-open at once; unhealthy keeps
    /// it open for at least `extend_ms` from now. Returns whether it moved.
    pub(crate) fn health_report(
        &mut self,
        now: u64,
        generation: u64,
        healthy: bool,
        extend_ms: u64,
    ) -> bool {
        if self.state != State::Open || self.generation != generation {
            return false;
        }
        if healthy {
            self.transition(State::HalfOpen, now);
            return true;
        }
        self.open_until = self.open_until.max(now.saturating_add(extend_ms));
        false
    }

    /// Every transition bumps the generation and starts the new state clean.
    /// The first transition of a breaker the store did not hold jumps to
    /// the current time: newer than anything a process may remember of an
    /// earlier life of the same breaker (before a flush or an expiry).
    fn transition(&mut self, state: State, now: u64) {
        self.state = state;
        self.generation = if self.generation == IMPLICIT_GENERATION {
            self.generation.max(now) + 1
        } else {
            self.generation + 1
        };
        self.consecutive = 0;
        self.run_start = 0;
        self.last_success = 0;
        self.failing.clear();
        self.tripped.clear();
        self.probe_successes = 0;
        self.forced_until = 0;
        self.leases.clear();
        self.buckets.clear();
        self.note = Note::default();
    }
}

/// Notes that `instance` was seen at `now`, forgetting what left the window;
/// the list never holds more than [`MAX_QUORUM`] instances (the oldest go).
fn note(seen: &mut Vec<Seen>, instance: u64, now: u64, window: u64) {
    seen.retain(|s| s.instance != instance && s.at + window > now);
    if seen.len() >= MAX_QUORUM as usize {
        seen.remove(0);
    }
    seen.push(Seen { instance, at: now });
}

/// The break after the `opens`-th open in a row: exponential backoff, capped,
/// minus up to `jitter` of itself.
pub(crate) fn break_ms(p: &Params, opens: u32, rand16: u32) -> u64 {
    let mut duration = p.break_ms;
    for _ in 1..opens.min(MAX_BACKOFF_STEPS) {
        if duration >= p.break_max_ms {
            break;
        }
        duration = duration * u64::from(p.backoff_permille) / 1000;
    }
    let duration = duration.min(p.break_max_ms);
    let span = duration * u64::from(p.jitter_ppm) / 1_000_000;
    (duration - span * u64::from(rand16 & 0xFFFF) / 65_536).max(1)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The longest a forced state may be set for: a year. Longer durations are cut
/// to it (both stores alike), keeping every time exact in Lua's doubles.
pub(crate) const MAX_FORCE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A forced state's duration in whole milliseconds, within `1..=MAX_FORCE`.
pub(crate) fn force_ms(d: Duration) -> u64 {
    millis(d.min(MAX_FORCE)).max(1)
}

#[cfg(test)]
pub(crate) mod tests;
