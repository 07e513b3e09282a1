//! `dcb watch`: transitions as they are announced, one line each.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use distributed_circuit_breaker::ops::{self, format_duration};
use distributed_circuit_breaker::{BreakerName, RedisStore, State, Store, StoreEvent};
use tokio::sync::broadcast::error::RecvError;

use crate::Failure;

pub(crate) async fn watch(
    store: &RedisStore,
    prefix: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let mut events = store.subscribe();
    // The store announces a resync once its subscription stands; it may
    // have done so already (while connecting), so wait a little at most.
    let subscribed =
        async { while !matches!(events.recv().await, Ok(StoreEvent::Resync) | Err(_)) {} };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), subscribed).await;
    // What each breaker was, to print `before -> after`.
    let mut states = read_states(store).await?;
    // On stderr: JSON lines on stdout stay clean.
    eprintln!(
        "watching {} breakers' transitions (ctrl-c to stop)",
        states.len()
    );
    // A subscription says nothing while Redis is gone: a cheap read every
    // few seconds tells the operator (on stderr), and the states are read
    // again once it answers (transitions may have been missed meanwhile).
    let mut health = tokio::time::interval(HEALTH_EVERY);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.tick().await;
    let probe = BreakerName::new("__dcb_watch").expect("a valid name");
    let mut down = false;
    let mut stale = false;
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = health.tick() => {
                match store.info(&probe).await {
                    Err(e) if !down => {
                        down = true;
                        eprintln!("dcb: Redis does not answer, still watching (retrying every {}): {e}", format_duration(HEALTH_EVERY));
                    }
                    Err(_) => {}
                    Ok(_) => {
                        if down {
                            down = false;
                            stale = true;
                            eprintln!("dcb: Redis answers again; transitions meanwhile were missed");
                        }
                        if stale {
                            stale = !reread(store, &mut states).await;
                        }
                    }
                }
                continue;
            }
        };
        let transition = match event {
            Ok(StoreEvent::Transition(t)) => t,
            Ok(StoreEvent::Resync) => {
                // Resubscribed (Redis restarted, a failover, a dropped
                // connection): what was read before may be wrong now.
                stale = !reread(store, &mut states).await;
                continue;
            }
            Err(RecvError::Lagged(n)) => {
                eprintln!("dcb: missed {n} transitions (too many at once)");
                stale = !reread(store, &mut states).await;
                continue;
            }
            Err(RecvError::Closed) => return Ok(()),
        };
        if prefix
            .as_deref()
            .is_some_and(|p| !transition.name.starts_with(p))
        {
            continue;
        }
        let after = transition.snapshot.state;
        let before = states.insert(transition.name.clone(), after);
        // Who forced it, why and until when: one read, only for
        // operators' states.
        let info = match BreakerName::new(&transition.name) {
            Ok(name) if is_forced(after) => store.info(&name).await.ok().flatten(),
            _ => None,
        };
        let note = info.as_ref().and_then(|i| i.note.clone());
        if json {
            let mut line = ops::transition_json(&transition);
            line["from"] = before.unwrap_or(State::Closed).as_str().into();
            line["forced_by"] = note.as_ref().and_then(|n| n.actor.clone()).into();
            line["reason"] = note.as_ref().and_then(|n| n.reason.clone()).into();
            println!("{line}");
            continue;
        }
        let time = humantime::format_rfc3339_millis(SystemTime::now());
        // A breaker the store held no record of was the implicit closed one.
        let before = before.unwrap_or(State::Closed);
        let mut line = format!(
            "{time}  {}  {before} -> {after}  generation {}",
            transition.name, transition.snapshot.generation
        );
        match &info {
            Some(i) if i.forced_until_reset => line.push_str("  until reset"),
            Some(i) if !i.remaining.is_zero() => {
                line.push_str(&format!("  for {}", format_duration(i.remaining)));
            }
            None if after == State::Open => line.push_str(&format!(
                "  for {}",
                format_duration(transition.snapshot.remaining)
            )),
            _ => {}
        }
        if let Some(n) = note {
            if let Some(actor) = n.actor {
                line.push_str(&format!("  by {actor}"));
            }
            if let Some(reason) = n.reason {
                line.push_str(&format!(": {reason}"));
            }
        }
        println!("{line}");
    }
}

/// How often `watch` checks that Redis still answers.
const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// Every breaker's state, by name.
async fn read_states(store: &RedisStore) -> Result<HashMap<String, State>, Failure> {
    Ok(store
        .list_info()
        .await?
        .into_iter()
        .map(|i| (i.name, i.state))
        .collect())
}

/// Reads the states again; false (and a word on stderr) if that failed,
/// to try again on the next health check.
async fn reread(store: &RedisStore, states: &mut HashMap<String, State>) -> bool {
    match read_states(store).await {
        Ok(fresh) => {
            *states = fresh;
            true
        }
        Err(Failure(message, _)) => {
            eprintln!("dcb: cannot read the breakers again (retrying): {message}");
            false
        }
    }
}

fn is_forced(state: State) -> bool {
    matches!(
        state,
        State::ForcedOpen | State::ForcedClosed | State::Disabled
    )
}
