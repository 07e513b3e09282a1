use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::policy::Rate;
use crate::Policy;

fn params(builder: crate::PolicyBuilder) -> Params {
    *builder.build().unwrap().params()
}

fn consecutive(n: u32) -> Params {
    params(
        Policy::builder()
            .consecutive_failures(n)
            .break_duration(Duration::from_millis(1000))
            .probe_lease(Duration::from_millis(500))
            .sync_interval(Duration::from_millis(100)),
    )
}

pub(crate) fn batch(generation: u64, successes: u32, failures: u32, trailing: u32) -> OutcomeBatch {
    OutcomeBatch {
        generation,
        successes,
        failures,
        slow: 0,
        trailing_failures: trailing,
        ..OutcomeBatch::default()
    }
}

fn tripped(p: &Params) -> Machine {
    let mut m = Machine::new(0);
    let g = m.generation;
    m.record(p, 0, &batch(g, 0, p.consecutive, p.consecutive), 0);
    assert_eq!(m.state, State::Open);
    m
}

#[test]
fn new_machine_is_closed_with_a_time_based_generation() {
    let m = Machine::new(41);
    assert_eq!(m.state, State::Closed);
    assert_eq!(m.generation, 42);
}

#[test]
fn consecutive_failures_trip_across_batches() {
    let p = consecutive(5);
    let mut m = Machine::new(0);
    let g = m.generation;
    m.record(&p, 0, &batch(g, 0, 3, 3), 0);
    assert_eq!((m.state, m.consecutive), (State::Closed, 3));
    m.record(&p, 1, &batch(g, 0, 2, 2), 0);
    assert_eq!(m.state, State::Open);
    assert_eq!(m.generation, g + 1);
    assert_eq!(m.open_until, 1 + 1000);
}

#[test]
fn a_success_breaks_the_run() {
    let p = consecutive(5);
    let mut m = Machine::new(0);
    let g = m.generation;
    m.record(&p, 0, &batch(g, 0, 4, 4), 0);
    m.record(&p, 0, &batch(g, 1, 3, 1), 0);
    assert_eq!((m.state, m.consecutive), (State::Closed, 1));
}

/// A batch from `instance` whose last success was `success_age` ms ago and
/// whose trailing failures started `run_age` ms ago.
fn timed(
    g: u64,
    successes: u32,
    failures: u32,
    success_age: u64,
    run_age: u64,
    instance: u64,
) -> OutcomeBatch {
    OutcomeBatch {
        generation: g,
        successes,
        failures,
        trailing_failures: failures,
        success_age_ms: success_age,
        run_age_ms: run_age,
        instance,
        ..OutcomeBatch::default()
    }
}

#[test]
fn successes_from_before_the_run_do_not_erase_it() {
    // Ten instances were healthy; the dependency went down at t=1000. Each
    // one's first batch after that still carries its earlier successes.
    let p = consecutive(5);
    let mut m = Machine::new(0);
    let g = m.generation;
    for (i, now) in [1_010u64, 1_012, 1_015, 1_020].into_iter().enumerate() {
        // Successes up to t=990, one failure at t=1005.
        m.record(
            &p,
            now,
            &timed(g, 50, 1, now - 990, now - 1_005, i as u64),
            0,
        );
        assert_eq!(m.state, State::Closed);
    }
    assert_eq!(m.consecutive, 4, "old successes broke nothing");
    m.record(&p, 1_030, &timed(g, 50, 1, 40, 25, 9), 0);
    assert_eq!(m.state, State::Open, "the fifth failure fleet-wide trips");
}

#[test]
fn a_success_newer_than_the_run_breaks_it() {
    let p = consecutive(5);
    let mut m = Machine::new(0);
    let g = m.generation;
    m.record(&p, 100, &timed(g, 0, 3, 0, 10, 1), 0); // run from t=90
    assert_eq!(m.consecutive, 3);
    m.record(&p, 120, &timed(g, 4, 0, 5, 0, 2), 0); // a success at t=115
    assert_eq!(m.consecutive, 0);
    // Failures that started before that success do not count any more.
    m.record(&p, 130, &timed(g, 0, 2, 0, 30, 3), 0);
    assert_eq!(m.consecutive, 0);
    m.record(&p, 140, &timed(g, 0, 2, 0, 10, 3), 0);
    assert_eq!(m.consecutive, 2);
}

#[test]
fn a_local_trip_opens_the_fleet_at_quorum_one() {
    let p = consecutive(5);
    let mut m = Machine::new(0);
    let g = m.generation;
    let trip = OutcomeBatch {
        tripped: true,
        ..timed(g, 0, 0, 0, 0, 7)
    };
    m.record(&p, 10, &trip, 0);
    assert_eq!(m.state, State::Open);
}

#[test]
fn a_quorum_needs_distinct_instances() {
    let mut p = consecutive(5);
    p.quorum = 2;
    let mut m = Machine::new(0);
    let g = m.generation;
    let trip = |instance| OutcomeBatch {
        tripped: true,
        ..timed(g, 0, 5, 0, 0, instance)
    };
    m.record(&p, 10, &trip(1), 0);
    m.record(&p, 20, &timed(g, 0, 10, 0, 0, 1), 0);
    m.record(&p, 30, &trip(1), 0);
    assert_eq!(m.state, State::Closed, "one instance alone, however often");
    m.record(&p, 40, &trip(2), 0);
    assert_eq!(m.state, State::Open, "a second instance tripped");

    // The merged run trips once its failures come from two instances.
    let mut m = Machine::new(0);
    let g = m.generation;
    m.record(&p, 10, &timed(g, 0, 6, 0, 0, 1), 0);
    assert_eq!(m.state, State::Closed);
    m.record(&p, 11, &timed(g, 0, 1, 0, 0, 2), 0);
    assert_eq!(m.state, State::Open);

    // Trips older than the window do not count.
    let mut m = Machine::new(0);
    let g = m.generation;
    let window = p.bucket_ms * u64::from(p.buckets);
    m.record(
        &p,
        10,
        &OutcomeBatch {
            tripped: true,
            ..timed(g, 1, 0, 0, 0, 1)
        },
        0,
    );
    m.record(
        &p,
        10 + window,
        &OutcomeBatch {
            tripped: true,
            ..timed(g, 1, 0, 0, 0, 2)
        },
        0,
    );
    assert_eq!(m.state, State::Closed);
}

#[test]
fn two_window_layouts_share_a_breaker_without_wiping_each_other() {
    let rate = |window_ms: u64, buckets: u32| {
        params(
            Policy::builder()
                .no_consecutive_failures()
                .failure_rate(0.5)
                .minimum_calls(100)
                .window(Duration::from_millis(window_ms))
                .window_buckets(buckets),
        )
    };
    let (old, new) = (rate(10_000, 10), rate(60_000, 12));
    assert_ne!(old.fingerprint, new.fingerprint);
    let mut m = Machine::new(0);
    let g = m.generation;
    let failing = |n| OutcomeBatch {
        generation: g,
        failures: n,
        trailing_failures: n,
        ..OutcomeBatch::default()
    };
    // A rolling deploy: the two policies take turns, 10 failures each time.
    for i in 0..9u64 {
        let p = if i % 2 == 0 { &old } else { &new };
        let other = m.record(p, 1_000 + i * 100, &failing(10), 0);
        assert_eq!(other.is_some(), i > 0, "a change of policy is reported");
        assert_eq!(m.state, State::Closed, "after {} calls", (i + 1) * 10);
    }
    m.record(&old, 2_000, &failing(10), 0);
    assert_eq!(m.state, State::Open, "100 failures in the window trip");
}

#[test]
fn forcing_the_state_it_is_in_only_changes_the_expiry() {
    let p = consecutive(1);
    let mut m = Machine::new(0);
    m.force(0, Force::Open(Some(Duration::from_millis(100))));
    let g = m.generation;
    m.force(50, Force::Open(Some(Duration::from_millis(1_000))));
    assert_eq!(m.generation, g, "no transition, nothing announced");
    assert_eq!(m.snapshot(&p, 50).remaining, Duration::from_millis(1_000));
    m.force(60, Force::Open(None));
    assert_eq!((m.generation, m.forced_until), (g, 0));
}

#[test]
fn outcomes_count_in_the_bucket_of_when_they_happened() {
    let p = params(
        Policy::builder()
            .failure_rate(0.5)
            .minimum_calls(10)
            .window(Duration::from_millis(1000))
            .window_buckets(10),
    );
    let mut m = Machine::new(0);
    let g = m.generation;
    let failing = |n, counted_age_ms| OutcomeBatch {
        generation: g,
        failures: n,
        trailing_failures: n,
        counted_age_ms,
        ..OutcomeBatch::default()
    };
    // Six failures that happened at t=50, flushed at t=1000...
    m.record(&p, 1_000, &failing(6, 950), 0);
    // ...have left the one-second window by t=1060: four calls in it.
    m.record(&p, 1_060, &failing(4, 0), 0);
    assert_eq!(m.state, State::Closed);
    m.record(&p, 1_070, &failing(6, 0), 0);
    assert_eq!(m.state, State::Open, "ten calls in the window now");
}

#[test]
fn stale_generation_batches_are_dropped() {
    let p = consecutive(1);
    let mut m = Machine::new(10);
    let g = m.generation;
    m.record(&p, 0, &batch(g - 1, 0, 10, 10), 0);
    m.record(&p, 0, &batch(g + 1, 0, 10, 10), 0);
    assert_eq!(m.state, State::Closed);
    assert_eq!(m.generation, g);
}

#[test]
fn failure_rate_needs_minimum_calls_in_the_window() {
    let p = params(
        Policy::builder()
            .no_consecutive_failures()
            .failure_rate(0.5)
            .minimum_calls(10)
            .window(Duration::from_millis(1000))
            .window_buckets(10),
    );
    let mut m = Machine::new(0);
    let g = m.generation;
    m.record(&p, 0, &batch(g, 0, 9, 9), 0);
    assert_eq!(m.state, State::Closed, "9 calls < minimum 10");
    // The 9 failures slide out of the window; 10 fresh calls at 40% stay closed.
    m.record(&p, 1000, &batch(g, 6, 4, 0), 0);
    assert_eq!(m.state, State::Closed);
    m.record(&p, 1050, &batch(g, 0, 3, 3), 0);
    assert_eq!(m.state, State::Open, "7 of 13 failed");
}

#[test]
fn slow_call_rate_trips() {
    let p = params(
        Policy::builder()
            .no_consecutive_failures()
            .slow_call_rate(0.5)
            .slow_call_duration(Duration::from_millis(100))
            .minimum_calls(4),
    );
    let mut m = Machine::new(0);
    let g = m.generation;
    m.record(
        &p,
        0,
        &OutcomeBatch {
            generation: g,
            successes: 4,
            failures: 0,
            slow: 2,
            trailing_failures: 0,
            ..OutcomeBatch::default()
        },
        0,
    );
    assert_eq!(m.state, State::Open);
}

#[test]
fn open_becomes_half_open_only_after_the_break() {
    let p = consecutive(1);
    let mut m = tripped(&p);
    let open_gen = m.generation;
    let early = m.acquire(&p, 999, 101);
    assert_eq!(early.lease, None);
    assert_eq!(early.snapshot.state, State::Open);
    assert_eq!(early.snapshot.remaining, Duration::from_millis(1));
    let probe = m.acquire(&p, 1000, 102);
    assert_eq!(probe.lease, Some(102));
    assert_eq!(probe.snapshot.state, State::HalfOpen);
    assert_eq!(probe.snapshot.generation, open_gen + 1);
}

#[test]
fn half_open_grants_exactly_the_permits_and_reissues_expired_leases() {
    let p = consecutive(1);
    let mut m = tripped(&p);
    assert!(m.acquire(&p, 1000, 103).lease.is_some());
    let denied = m.acquire(&p, 1100, 104);
    assert_eq!(denied.lease, None);
    // The next permit frees in 400ms, but processes ask again every sync interval.
    assert_eq!(denied.snapshot.remaining, Duration::from_millis(100));
    assert_eq!(m.acquire(&p, 1499, 105).lease, None);
    assert_eq!(
        m.acquire(&p, 1500, 106).lease,
        Some(106),
        "the lease ran out"
    );
}

#[test]
fn probe_success_closes_and_failure_reopens_with_backoff() {
    let p = params(
        Policy::builder()
            .consecutive_failures(1)
            .break_duration(Duration::from_millis(1000))
            .backoff(2.0, Duration::from_millis(3000))
            .successes_to_close(2)
            .half_open_permits(2),
    );
    let mut m = tripped(&p);
    let a = m.acquire(&p, 1000, 107).lease.unwrap();
    let gen = m.generation;
    m.release(&p, 1010, gen, a, ProbeResult::Failure, 0);
    assert_eq!(m.state, State::Open);
    assert_eq!(m.open_until, 1010 + 2000, "second open in a row doubles");
    let a = m.acquire(&p, 3010, 108).lease.unwrap();
    let b = m.acquire(&p, 3010, 109).lease.unwrap();
    let gen = m.generation;
    m.release(&p, 3020, gen, a, ProbeResult::Success, 0);
    assert_eq!(m.state, State::HalfOpen);
    m.release(&p, 3020, gen, b, ProbeResult::Success, 0);
    assert_eq!(m.state, State::Closed);
    assert_eq!(m.opens, 0, "closing resets the backoff");
}

#[test]
fn a_permit_is_asked_for_by_id_and_freed_blindly() {
    let p = consecutive(1);
    let mut m = tripped(&p);
    assert_eq!(m.acquire(&p, 1000, 7).lease, Some(7));
    assert_eq!(
        m.acquire(&p, 1001, 7).lease,
        Some(7),
        "asked again: the same permit"
    );
    assert_eq!(m.acquire(&p, 1001, 8).lease, None, "one permit");
    // The asker of 7 never heard back: it frees the permit blindly.
    m.release(&p, 1002, 0, 7, ProbeResult::Failure, 0);
    assert_eq!(m.state, State::HalfOpen, "a blind release counts nothing");
    assert_eq!(m.acquire(&p, 1003, 8).lease, Some(8));
    // An expired lease re-granted to another id is not freed by the old one.
    assert_eq!(m.acquire(&p, 1003 + 500, 9).lease, Some(9));
    let g = m.generation;
    m.release(&p, 1504, g, 8, ProbeResult::Success, 0);
    assert_eq!(m.state, State::Closed);
}

#[test]
fn cancelled_probe_frees_its_permit() {
    let p = consecutive(1);
    let mut m = tripped(&p);
    let lease = m.acquire(&p, 1000, 110).lease.unwrap();
    let gen = m.generation;
    m.release(&p, 1001, gen, lease, ProbeResult::Cancelled, 0);
    assert_eq!(m.state, State::HalfOpen);
    assert!(m.acquire(&p, 1002, 111).lease.is_some());
}

#[test]
fn late_probe_result_from_an_old_generation_is_ignored() {
    let p = consecutive(1);
    let mut m = tripped(&p);
    let lease = m.acquire(&p, 1000, 112).lease.unwrap();
    let gen = m.generation;
    m.force(1001, Force::Reset);
    m.release(&p, 1002, gen, lease, ProbeResult::Failure, 0);
    assert_eq!(m.state, State::Closed);
}

#[test]
fn forced_states_hold_and_expire() {
    let p = consecutive(1);
    let mut m = Machine::new(0);
    let g = m.generation;
    m.force(0, Force::Open(Some(Duration::from_millis(300))));
    assert_eq!(m.state, State::ForcedOpen);
    assert_eq!(m.generation, g + 1);
    assert_eq!(m.acquire(&p, 100, 113).lease, None);
    assert_eq!(m.snapshot(&p, 100).remaining, Duration::from_millis(200));
    let after = m.acquire(&p, 300, 114);
    assert_eq!(after.snapshot.state, State::Closed);
    assert_eq!(after.snapshot.generation, g + 2);

    m.force(300, Force::Closed(None));
    let g = m.generation;
    m.record(&p, 301, &batch(g, 0, 100, 100), 0);
    assert_eq!(m.state, State::ForcedClosed, "forced closed never trips");
    m.force(302, Force::Disabled(None));
    m.record(&p, 303, &batch(m.generation, 0, 100, 100), 0);
    assert_eq!(m.state, State::Disabled);
    m.force(304, Force::Reset);
    assert_eq!(m.state, State::Closed);
}

#[test]
fn indefinite_forced_open_reports_a_minute_or_the_longest_break() {
    let p = consecutive(1);
    let mut m = Machine::new(0);
    m.force(0, Force::Open(None));
    assert_eq!(m.snapshot(&p, 10_000).remaining, Duration::from_secs(60));
    let long = params(
        Policy::builder()
            .break_duration(Duration::from_secs(10))
            .backoff(2.0, Duration::from_secs(600)),
    );
    assert_eq!(
        m.snapshot(&long, 10_000).remaining,
        Duration::from_secs(600)
    );
    let info = m.info("x", 10_000);
    assert!(info.forced_until_reset);
    assert_eq!(info.remaining, Duration::ZERO);
}

#[test]
fn notes_stay_with_the_forced_state_until_the_next_transition() {
    use crate::store::ForceNote;
    let mut m = Machine::new(0);
    let note = ForceNote::new().reason("incident 7").actor("alice");
    m.force_noted(100, Force::Open(Some(Duration::from_millis(500))), &note);
    let info = m.info("x", 200);
    let noted = info.note.clone().unwrap();
    assert_eq!(noted.reason.as_deref(), Some("incident 7"));
    assert_eq!(noted.actor.as_deref(), Some("alice"));
    assert_eq!(info.remaining, Duration::from_millis(400));
    assert!(!info.forced_until_reset);
    // Past its expiry it reads as the closed breaker it becomes.
    let later = m.info("x", 700);
    assert_eq!((later.state, later.note.is_none()), (State::Closed, true));
    // Re-forcing the same state replaces the note, without a transition.
    let g = m.generation;
    m.force_noted(300, Force::Open(None), &ForceNote::new().actor("bob"));
    assert_eq!(m.generation, g);
    assert_eq!(m.note.actor, "bob");
    assert_eq!(m.note.reason, "");
    m.force_noted(301, Force::Reset, &note);
    assert_eq!(m.note, Note::default());
}

#[test]
fn break_backoff_is_capped_and_jitter_only_shortens() {
    let p = params(
        Policy::builder()
            .break_duration(Duration::from_millis(1000))
            .backoff(3.0, Duration::from_millis(5000))
            .jitter(0.5),
    );
    assert_eq!(break_ms(&p, 1, 0), 1000);
    assert_eq!(break_ms(&p, 2, 0), 3000);
    assert_eq!(break_ms(&p, 3, 0), 5000);
    assert_eq!(break_ms(&p, u32::MAX, 0), 5000);
    assert_eq!(break_ms(&p, 1, 32_768), 750);
    assert_eq!(break_ms(&p, 1, 65_535), 501);
}

// ---------------------------------------------------------------------------
// Model-based property test: the machine against a small reference model that
// keeps every outcome (instead of buckets and counters) and recomputes the
// rules from scratch after each step.

#[derive(Debug, Clone)]
struct Model {
    state: State,
    generation: u64,
    open_until: u64,
    forced_until: u64,
    opens: u32,
    /// (time, failed, slow) for every counted call since the last transition.
    calls: Vec<(u64, bool, bool)>,
    /// Latest success proved by a batch, and the accepted runs (start, count).
    latest_success: u64,
    runs: Vec<(u64, u64)>,
    /// Instances seen failing / tripping: instance -> time.
    failing: BTreeMap<u64, u64>,
    tripped: BTreeMap<u64, u64>,
    probe_successes: u32,
    leases: BTreeMap<u64, u64>,
}

impl Model {
    fn new(now: u64) -> Self {
        Model {
            state: State::Closed,
            generation: now + 1,
            open_until: 0,
            forced_until: 0,
            opens: 0,
            calls: vec![],
            latest_success: 0,
            runs: vec![],
            failing: BTreeMap::new(),
            tripped: BTreeMap::new(),
            probe_successes: 0,
            leases: BTreeMap::new(),
        }
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.generation += 1;
        self.calls.clear();
        self.latest_success = 0;
        self.runs.clear();
        self.failing.clear();
        self.tripped.clear();
        self.probe_successes = 0;
        self.forced_until = 0;
        self.leases.clear();
    }

    fn expire(&mut self, now: u64) {
        let forced = matches!(
            self.state,
            State::ForcedOpen | State::ForcedClosed | State::Disabled
        );
        if forced && self.forced_until != 0 && now >= self.forced_until {
            self.enter(State::Closed);
        }
    }

    fn open(&mut self, p: &Params, now: u64, rand16: u32) {
        self.enter(State::Open);
        self.opens += 1;
        self.open_until = now + break_ms(p, self.opens, rand16);
    }

    fn trips(&self, p: &Params, now: u64, tripped: bool) -> bool {
        let window = p.bucket_ms * u64::from(p.buckets);
        let live = |seen: &BTreeMap<u64, u64>| {
            seen.values().filter(|at| **at + window > now).count() as u32
        };
        if p.quorum <= 1 && tripped {
            return true;
        }
        if p.quorum > 1 && live(&self.tripped) >= p.quorum {
            return true;
        }
        if p.quorum > 1 && live(&self.failing) < p.quorum {
            return false;
        }
        let run: u64 = self.runs.iter().map(|r| r.1).sum();
        if p.consecutive > 0 && run >= u64::from(p.consecutive) {
            return true;
        }
        let current = now / p.bucket_ms;
        let in_window: Vec<_> = self
            .calls
            .iter()
            .filter(|(t, _, _)| t / p.bucket_ms + u64::from(p.buckets) > current)
            .collect();
        let calls = in_window.len() as f64;
        if in_window.len() < p.minimum_calls as usize || in_window.is_empty() {
            return false;
        }
        let failures = in_window.iter().filter(|c| c.1).count() as f64;
        let slow = in_window.iter().filter(|c| c.2).count() as f64;
        let reached =
            |n: f64, r: Rate| r.num > 0 && n * f64::from(r.den) >= f64::from(r.num) * calls;
        reached(failures, p.failure) || reached(slow, p.slow)
    }

    fn record(&mut self, p: &Params, now: u64, b: &OutcomeBatch, rand16: u32) {
        self.expire(now);
        if (b.generation != self.generation && b.generation != 0)
            || !matches!(self.state, State::Closed | State::ForcedClosed)
        {
            return;
        }
        if b.successes > 0 {
            self.latest_success = self
                .latest_success
                .max(now.saturating_sub(b.success_age_ms));
        }
        if b.successes > 0 && self.runs.iter().any(|r| r.0 <= self.latest_success) {
            self.runs.clear();
        }
        let start = now.saturating_sub(b.run_age_ms);
        if b.trailing_failures > 0
            && b.run_age_ms < OutcomeBatch::UNKNOWN_AGE
            && start >= self.latest_success
        {
            self.runs.push((start, u64::from(b.trailing_failures)));
        }
        let window = p.bucket_ms * u64::from(p.buckets);
        if p.quorum > 1 {
            if b.failures > 0 {
                self.failing.insert(b.instance, now);
            }
            if b.tripped {
                self.tripped.insert(b.instance, now);
            }
            self.failing.retain(|_, at| *at + window > now);
            self.tripped.retain(|_, at| *at + window > now);
        }
        let mut slow_left = b.slow;
        for failed in std::iter::repeat_n(true, b.failures as usize)
            .chain(std::iter::repeat_n(false, b.successes as usize))
        {
            let slow = slow_left > 0;
            slow_left = slow_left.saturating_sub(1);
            self.calls
                .push((now.saturating_sub(b.counted_age_ms), failed, slow));
        }
        if self.state == State::Closed && self.trips(p, now, b.tripped) {
            self.open(p, now, rand16);
        }
    }

    fn acquire(&mut self, p: &Params, now: u64, id: u64) -> Option<u64> {
        self.expire(now);
        if self.state == State::Open && now >= self.open_until {
            self.enter(State::HalfOpen);
        }
        if self.state != State::HalfOpen {
            return None;
        }
        self.leases.retain(|_, deadline| *deadline > now);
        if self.leases.contains_key(&id) {
            return Some(id);
        }
        if self.leases.len() as u32 >= p.permits {
            return None;
        }
        self.leases.insert(id, now + p.lease_ms);
        Some(id)
    }

    fn release(&mut self, p: &Params, now: u64, gen: u64, lease: u64, r: ProbeResult, rand16: u32) {
        self.expire(now);
        if self.state != State::HalfOpen {
            return;
        }
        if gen == 0 {
            self.leases.remove(&lease);
            return;
        }
        if gen != self.generation {
            return;
        }
        self.leases.remove(&lease);
        match r {
            ProbeResult::Failure => self.open(p, now, rand16),
            ProbeResult::Success => {
                self.probe_successes += 1;
                if self.probe_successes >= p.successes {
                    self.opens = 0;
                    self.enter(State::Closed);
                }
            }
            ProbeResult::Cancelled => {}
        }
    }

    fn force(&mut self, now: u64, f: Force) {
        self.expire(now);
        let (state, d) = match f {
            Force::Reset => {
                self.opens = 0;
                self.enter(State::Closed);
                return;
            }
            Force::OpenThenProbe(d) => {
                self.enter(State::Open);
                self.open_until = now + (d.as_millis() as u64).max(1);
                return;
            }
            Force::Open(d) => (State::ForcedOpen, d),
            Force::Closed(d) => (State::ForcedClosed, d),
            Force::Disabled(d) => (State::Disabled, d),
        };
        if self.state != state {
            self.enter(state);
        }
        self.forced_until = d.map_or(0, |d| now + (d.as_millis() as u64).max(1));
    }

    fn remaining(&self, p: &Params, now: u64) -> u64 {
        match self.state {
            State::Open => self.open_until.saturating_sub(now),
            State::HalfOpen => {
                let live: Vec<u64> = self.leases.values().copied().filter(|d| *d > now).collect();
                if live.len() as u32 >= p.permits {
                    live.iter().min().map_or(0, |d| d - now).min(p.sync_ms)
                } else {
                    0
                }
            }
            State::ForcedOpen if self.forced_until == 0 => p.break_max_ms.max(UNTIL_RESET_RETRY_MS),
            State::ForcedOpen | State::ForcedClosed | State::Disabled => {
                self.forced_until.saturating_sub(now)
            }
            State::Closed => 0,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Record {
        stale: bool,
        successes: u32,
        failures: u32,
        slow: u32,
        trailing: u32,
        success_age: u64,
        run_age: u64,
        instance: u64,
        tripped: bool,
        counted_age: u64,
    },
    /// Ask for a permit, with a new id or (`again`) an id asked with before.
    Acquire {
        again: Option<usize>,
    },
    /// Return the `pick`-th permit granted: stale (older generation) or blind
    /// (generation 0, as after a lost answer).
    Release {
        pick: usize,
        result: u8,
        stale: bool,
        blind: bool,
    },
    Force {
        kind: u8,
        ms: Option<u64>,
    },
    Advance(u64),
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            (any::<bool>(), 0u32..5, 0u32..6, 0u32..4, 0u32..6),
            (prop_oneof![0u64..300, Just(OutcomeBatch::UNKNOWN_AGE)], prop_oneof![0u64..300, Just(OutcomeBatch::UNKNOWN_AGE)], 0u64..4, prop::bool::weighted(0.1), prop_oneof![Just(0u64), 0u64..500]),
        ).prop_map(|((stale, successes, failures, slow, trailing), (success_age, run_age, instance, tripped, counted_age))| Op::Record {
            stale: stale && successes % 4 == 0,
            successes,
            failures,
            slow: slow.min(successes + failures),
            trailing: trailing.min(failures),
            success_age,
            run_age,
            instance,
            tripped,
            counted_age,
        }),
        3 => proptest::option::weighted(0.2, 0usize..3).prop_map(|again| Op::Acquire { again }),
        3 => (0usize..4, 0u8..3, any::<bool>(), prop::bool::weighted(0.15)).prop_map(|(pick, result, stale, blind)| Op::Release { pick, result, stale: stale && pick == 0, blind }),
        1 => (0u8..5, proptest::option::of(1u64..400)).prop_map(|(kind, ms)| Op::Force { kind, ms }),
        4 => (0u64..400).prop_map(Op::Advance),
    ]
}

pub(crate) fn policy() -> impl Strategy<Value = Params> {
    (
        0u32..4,
        prop_oneof![Just((0u32, 1u32)), Just((1, 2)), Just((1, 5)), Just((2, 3))],
        prop_oneof![Just((0u32, 1u32)), Just((3, 10))],
        1u32..8,
        (10u64..100, 1u32..5),
        (50u64..400, 1000u32..3000, 1u64..4),
        prop_oneof![Just(0u32), Just(300_000)],
        (1u32..4, 1u32..4, 20u64..300, 10u64..100),
        prop_oneof![3 => Just(1u32), 1 => 2u32..4],
    )
        .prop_map(
            |(
                consecutive,
                failure_ppm,
                slow_ppm,
                minimum_calls,
                (bucket_ms, buckets),
                (break_ms, backoff, cap),
                jitter_ppm,
                (permits, successes, lease_ms, sync_ms),
                quorum,
            )| Params {
                consecutive: if consecutive == 0 && failure_ppm.0 == 0 && slow_ppm.0 == 0 {
                    3
                } else {
                    consecutive
                },
                failure: Rate {
                    num: failure_ppm.0,
                    den: failure_ppm.1,
                },
                slow: Rate {
                    num: slow_ppm.0,
                    den: slow_ppm.1,
                },
                minimum_calls,
                bucket_ms,
                buckets,
                break_ms,
                backoff_permille: backoff,
                break_max_ms: break_ms * cap,
                jitter_ppm,
                permits,
                successes,
                lease_ms,
                ttl_ms: 3_600_000,
                sync_ms,
                quorum,
                fingerprint: 1,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn machine_matches_the_reference_model(
        p in policy(),
        ops in proptest::collection::vec((op(), 0u32..65_536), 1..120),
    ) {
        let mut now = 1_000u64;
        let mut machine = Machine::new(now);
        let mut model = Model::new(now);
        let mut granted: Vec<(u64, u64)> = vec![];
        let mut asked: Vec<u64> = vec![];
        let mut next_id = 0u64;
        for (op, rand16) in ops {
            match op {
                Op::Record { stale, successes, failures, slow, trailing, success_age, run_age, instance, tripped, counted_age } => {
                    let generation = match (stale, successes % 3) {
                        (true, _) => machine.generation - 1,
                        (false, 0) => 0, // a process that has not synced yet
                        _ => machine.generation,
                    };
                    let b = OutcomeBatch {
                        generation, successes, failures, slow, trailing_failures: trailing,
                        success_age_ms: success_age, run_age_ms: run_age, instance, tripped,
                        counted_age_ms: counted_age,
                    };
                    machine.record(&p, now, &b, rand16);
                    model.record(&p, now, &b, rand16);
                }
                Op::Acquire { again } => {
                    next_id += 1;
                    let id = again.and_then(|i| asked.get(i).copied()).unwrap_or(next_id);
                    asked.insert(0, id);
                    let got = machine.acquire(&p, now, id);
                    let want = model.acquire(&p, now, id);
                    prop_assert_eq!(got.lease, want);
                    if let Some(lease) = got.lease {
                        granted.insert(0, (machine.generation, lease));
                    }
                }
                Op::Release { pick, result, stale, blind } => {
                    if let Some(&(gen, lease)) = granted.get(pick) {
                        let gen = if blind { 0 } else { gen - u64::from(stale) };
                        let r = [ProbeResult::Success, ProbeResult::Failure, ProbeResult::Cancelled][result as usize];
                        machine.release(&p, now, gen, lease, r, rand16);
                        model.release(&p, now, gen, lease, r, rand16);
                    }
                }
                Op::Force { kind, ms } => {
                    let d = ms.map(Duration::from_millis);
                    let f = [Force::Open(d), Force::Closed(d), Force::Disabled(d), Force::Reset, Force::OpenThenProbe(d.unwrap_or(Duration::from_millis(100)))][kind as usize];
                    machine.force(now, f);
                    model.force(now, f);
                }
                Op::Advance(ms) => now += ms,
            }
            let snap = machine.snapshot(&p, now);
            prop_assert_eq!(snap.state, model.state);
            prop_assert_eq!(snap.generation, model.generation);
            prop_assert_eq!(snap.remaining, Duration::from_millis(model.remaining(&p, now)));
            prop_assert_eq!(machine.opens, model.opens);
            prop_assert_eq!(machine.live_leases(now) as usize, model.leases.values().filter(|d| **d > now).count());
        }
    }
}
