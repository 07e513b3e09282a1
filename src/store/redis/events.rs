//! The one subscriber connection per store: turns announcements on the
//! store's channel into [`StoreEvent`]s, and re-subscribes (announcing a
//! resync) after any disconnect.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::sentinel::Primary;
use crate::{BreakerName, Snapshot, State, StoreEvent, Transition};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// What a store publishes at connect to prove its right to announce; every
/// subscriber ignores it.
pub(super) const PING: &str = "v1 ping";
/// At most this many characters of a malformed announcement are logged.
const MAX_LOGGED: usize = 120;
/// The largest generation a script can write (exact in Lua's doubles).
const MAX_GENERATION: u64 = (1 << 53) - 1;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the subscriber connects.
pub(super) enum Endpoints {
    /// These nodes in turn (one node, or a cluster's seeds: a `PUBLISH`
    /// reaches every node of a cluster).
    Nodes(Vec<redis::Client>),
    /// The current primary behind the sentinels; moves with it.
    Primary(Arc<Primary>),
}

/// Runs until the task is aborted (when the store is dropped).
pub(super) async fn subscribe_forever(
    endpoints: Endpoints,
    channel: String,
    events: broadcast::Sender<StoreEvent>,
    connect_timeout: Duration,
) {
    let mut backoff = MIN_BACKOFF;
    let mut attempt = 0usize;
    let mut healthy = true;
    let mut switches = match &endpoints {
        Endpoints::Primary(primary) => Some(primary.switches()),
        Endpoints::Nodes(_) => None,
    };
    loop {
        if let Some(switches) = &mut switches {
            switches.mark_unchanged();
        }
        let client = match &endpoints {
            Endpoints::Nodes(clients) => clients[attempt % clients.len()].clone(),
            Endpoints::Primary(primary) => primary.client(),
        };
        attempt += 1;
        let subscribe = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        });
        // A new primary while connecting to the old one: go there at once.
        let connected = tokio::select! {
            connected = subscribe => connected,
            _ = switched(&mut switches) => {
                backoff = MIN_BACKOFF;
                continue;
            }
        };
        match connected {
            Ok(Ok(mut pubsub)) => {
                if !healthy {
                    tracing::info!(channel = %channel, "breaker announcements subscribed again");
                }
                backoff = MIN_BACKOFF;
                // Whatever was announced while unsubscribed is lost: re-read.
                let _ = events.send(StoreEvent::Resync);
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        // A new primary: subscribe there.
                        _ = switched(&mut switches) => None,
                    };
                    let Some(message) = message else {
                        break;
                    };
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    if payload == PING {
                        continue;
                    }
                    match parse(&payload) {
                        Some(transition) => {
                            let _ = events.send(StoreEvent::Transition(transition));
                        }
                        None => {
                            // Bounded: the channel is writable by anyone with
                            // PUBLISH rights, and logs must not be flooded.
                            let shown: String = payload.chars().take(MAX_LOGGED).collect();
                            tracing::warn!(payload = %shown, bytes = payload.len(), "ignoring a malformed breaker announcement")
                        }
                    }
                }
                tracing::warn!(channel = %channel, "lost the breaker announcements subscription; resubscribing");
            }
            Ok(Err(error)) => {
                if healthy {
                    tracing::warn!(%error, "cannot subscribe to breaker announcements; retrying");
                }
            }
            Err(_) => {
                if healthy {
                    tracing::warn!("subscribing to breaker announcements timed out; retrying");
                }
            }
        }
        healthy = false;
        tokio::select! {
            () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(MAX_BACKOFF),
            // A new primary ends the backoff.
            _ = switched(&mut switches) => backoff = MIN_BACKOFF,
        }
    }
}

/// Resolves when the primary changes; never without one to follow.
async fn switched(switches: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match switches {
        Some(switches) => {
            if switches.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// `v2 <state> <generation> <remaining ms> <origin> <state before> <name>`,
/// or (from processes of the version before) `v1 <state> <generation>
/// <remaining ms> <name>`.
pub(super) fn parse(payload: &str) -> Option<Transition> {
    let v2 = payload.starts_with("v2 ");
    let mut parts = payload.splitn(if v2 { 7 } else { 5 }, ' ');
    if !matches!(parts.next()?, "v1" | "v2") {
        return None;
    }
    let state = State::from_code(parts.next()?.parse().ok()?)?;
    let generation: u64 = parts.next()?.parse().ok()?;
    let remaining = Duration::from_millis(parts.next()?.parse().ok()?);
    let (origin, from) = if v2 {
        let origin: u64 = parts.next()?.parse().ok()?;
        let from = State::from_code(parts.next()?.parse().ok()?)?;
        (origin, Some(from))
    } else {
        (0, None)
    };
    let name = parts.next()?;
    // What no script writes is not an announcement.
    if generation == 0
        || generation > MAX_GENERATION
        || remaining > crate::machine::MAX_FORCE
        || BreakerName::new(name).is_err()
    {
        return None;
    }
    let name = name.to_owned();
    Some(Transition {
        name,
        snapshot: Snapshot {
            state,
            generation,
            remaining,
        },
        received: tokio::time::Instant::now(),
        origin,
        from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_announcements_and_rejects_garbage() {
        let t = parse("v1 1 1700000000123 5000 GET /pay ments").unwrap();
        assert_eq!(t.name, "GET /pay ments");
        assert_eq!(t.snapshot.state, State::Open);
        assert_eq!(t.snapshot.generation, 1_700_000_000_123);
        assert_eq!(t.snapshot.remaining, Duration::from_secs(5));
        let t = parse("v2 0 7 0 65536 2 GET /pay ments").unwrap();
        assert_eq!(t.name, "GET /pay ments");
        assert_eq!(
            (t.snapshot.state, t.snapshot.generation),
            (State::Closed, 7)
        );
        assert_eq!((t.origin, t.from), (65_536, Some(State::HalfOpen)));
        for bad in [
            "",
            "v2 1 1 1 x",
            "v2 1 1 1 1 9 x",
            "v2 1 1 1 -1 1 x",
            "v2 1 1 1 x",
            "v1 9 1 1 x",
            "v1 1 x 1 x",
            "v1 1 1 -1 x",
            "v1 1 1 1",
            "v1 1 0 1 x",
            "v1 3 99999999999999999 1 x",
            "v1 1 1 99999999999999 x",
            "v1 1 1 1 a{b}",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
