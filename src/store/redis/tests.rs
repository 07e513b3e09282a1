//! The Lua scripts against the Rust state machine: random operation
//! sequences, the same clock and the same random numbers, identical answers.

#[path = "../../../tests/support/redis.rs"]
#[allow(dead_code, unreachable_pub)]
mod server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::machine::tests::{op, policy, Op};
use crate::machine::Machine;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn schema_version_matches_the_scripts() {
    let lua = include_str!("lua/machine.lua");
    assert!(lua.contains(&format!("local SCHEMA = {SCHEMA_VERSION}\n")));
}

#[test]
fn lua_scripts_match_the_rust_machine() {
    let redis = server::RedisServer::start();
    let rt = runtime();
    let store = rt.block_on(RedisStore::connect(&redis.url())).unwrap();
    let case = AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    };
    proptest!(config, |(p in policy(), ops in proptest::collection::vec((op(), 0u32..65_536), 1..80))| {
        let n = case.fetch_add(1, Ordering::SeqCst);
        let name = BreakerName::new(format!("diff-{n}")).unwrap();
        let s = &store;
        let scripts = &store.inner.scripts;
        let mut now = 1_700_000_000_000u64 + n * 10_000_000;
        // What the store holds: nothing until something worth keeping
        // happens (the implicit breaker meanwhile), as in MemoryStore.
        let mut held: Option<Machine> = None;
        let mut granted: Vec<(u64, u64)> = vec![];
        let mut asked: Vec<u64> = vec![];
        let mut next_id = 0u64;
        // A breaker nobody wrote reads as the implicit one in both.
        let first = rt.block_on(s.run_with(&scripts.read, &name, &p, &[], now, 0)).unwrap();
        prop_assert_eq!(first.snapshot, Machine::implicit().snapshot(&p, now));
        for (op, rand16) in ops {
            let existed = held.is_some();
            let mut machine = held.take().unwrap_or_else(Machine::implicit);
            let reply = match op {
                Op::Record { stale, successes, failures, slow, trailing, success_age, run_age, instance, tripped, counted_age } => {
                    let generation = match (stale, successes % 3) {
                        (true, _) => machine.generation - 1,
                        (false, 0) => 0,
                        _ => machine.generation,
                    };
                    let batch = OutcomeBatch {
                        generation, successes, failures, slow, trailing_failures: trailing,
                        success_age_ms: success_age, run_age_ms: run_age, instance, tripped,
                        counted_age_ms: counted_age,
                    };
                    machine.record(&p, now, &batch, rand16);
                    let args = [
                        generation, successes.into(), failures.into(), slow.into(), trailing.into(),
                        success_age, run_age, instance, u64::from(tripped), counted_age,
                    ];
                    rt.block_on(s.run_with(&scripts.record, &name, &p, &args, now, rand16)).unwrap()
                }
                Op::Acquire { again } => {
                    next_id += 1;
                    let id = again.and_then(|i| asked.get(i).copied()).unwrap_or(next_id);
                    asked.insert(0, id);
                    let want = machine.acquire(&p, now, id);
                    let got = rt.block_on(s.run_with(&scripts.acquire, &name, &p, &[id], now, rand16)).unwrap();
                    prop_assert_eq!(got.lease, want.lease);
                    if let Some(lease) = got.lease {
                        granted.insert(0, (machine.generation, lease));
                    }
                    got
                }
                Op::Release { pick, result, stale, blind } => {
                    let Some(&(generation, lease)) = granted.get(pick) else {
                        if existed {
                            held = Some(machine);
                        }
                        continue;
                    };
                    let generation = if blind { 0 } else { generation - u64::from(stale) };
                    let r = [ProbeResult::Success, ProbeResult::Failure, ProbeResult::Cancelled][result as usize];
                    machine.release(&p, now, generation, lease, r, rand16);
                    let args = [generation, lease, u64::from(result)];
                    rt.block_on(s.run_with(&scripts.release, &name, &p, &args, now, rand16)).unwrap()
                }
                Op::Force { kind, ms } => {
                    let d = ms.map(Duration::from_millis);
                    let f = [Force::Open(d), Force::Closed(d), Force::Disabled(d), Force::Reset, Force::OpenThenProbe(d.unwrap_or(Duration::from_millis(100)))][kind as usize];
                    // A note of its own for each case: none, a reason, both.
                    let note = match rand16 % 3 {
                        0 => crate::store::ForceNote::new(),
                        1 => crate::store::ForceNote::new().reason(format!("why {rand16}")),
                        _ => crate::store::ForceNote::new().reason("a b, c:d").actor(format!("op-{rand16}")),
                    };
                    machine.force_noted(now, f, &note);
                    let args = [u64::from(kind), if kind == 4 { ms.unwrap_or(100) } else { ms.map_or(0, |ms| ms.max(1)) }];
                    let text = [note.reason_str().unwrap_or_default(), note.actor_str().unwrap_or_default()];
                    rt.block_on(s.run_with_text(&scripts.force, &name, &p, &args, &text, now, rand16)).unwrap()
                }
                Op::Advance(ms) => {
                    now += ms;
                    machine.expire(now);
                    rt.block_on(s.run_with(&scripts.read, &name, &p, &[], now, rand16)).unwrap()
                }
            };
            prop_assert!(!reply.reset, "the scripts never see corrupt data here");
            prop_assert_eq!(reply.snapshot, machine.snapshot(&p, now));
            let stored: bool = rt.block_on(async {
                let mut c = s.inner.connection.clone();
                c.query::<bool>(redis::cmd("EXISTS").arg(s.key(&name)).clone()).await
            }).unwrap();
            if existed || machine.worth_keeping(&p) {
                // The operator's view agrees too (the note included).
                let seen = rt.block_on(s.inspect_at(&name, now)).unwrap();
                prop_assert_eq!(seen, stored.then(|| machine.info(name.as_str(), now)));
                held = Some(machine);
            }
            prop_assert_eq!(stored, held.is_some(), "a record exactly when worth keeping");
        }
    });
}
