//! Reading breakers for operators ([`Store::info`](crate::Store::info),
//! [`Store::list_info`](crate::Store::list_info)): plain `HMGET`s, no
//! script and no policy, turned into the pure machine's view.

use futures_util::StreamExt;

use super::error::map_error;
use super::{Connection, RedisStore};
use crate::machine::{Bucket, Machine, Note};
use crate::store::{BreakerInfo, BreakerName, StoreError, StoreErrorKind};
use crate::State;

/// The hash fields an operator's view needs (machine.lua: `save`).
const FIELDS: [&str; 11] = [
    "st", "g", "ou", "fu", "cf", "bm", "w", "fr", "fa", "ft", "fg",
];

/// How many reads are in flight at once while listing.
const CONCURRENCY: usize = 16;

/// How many breakers one read asks for (on one server).
const BATCH: usize = 100;

impl RedisStore {
    /// One breaker; `None` without a record (or with one this client cannot read).
    pub(super) async fn inspect(
        &self,
        name: &BreakerName,
    ) -> Result<Option<BreakerInfo>, StoreError> {
        self.inspect_at(name, 0).await
    }

    /// [`inspect`](Self::inspect) at `now` (0: Redis's clock; tests set it).
    pub(super) async fn inspect_at(
        &self,
        name: &BreakerName,
        now: u64,
    ) -> Result<Option<BreakerInfo>, StoreError> {
        let mut connection = self.inner.connection.clone();
        let now = match now {
            0 => server_time(&mut connection).await?,
            now => now,
        };
        let key = self.key(name);
        let fields = fetch(&mut connection, &key)
            .await
            .map_err(|e| match e.kind() {
                StoreErrorKind::Corrupt => invalid(&key, e),
                _ => e,
            })?;
        match machine(&fields) {
            Ok(m) => Ok(m.map(|m| m.info(name.as_str(), now))),
            Err(Unreadable) => Err(invalid(&key, "fields missing or out of range")),
        }
    }

    /// Every breaker under the prefix, on every master of a cluster.
    pub(super) async fn inspect_all(&self) -> Result<Vec<BreakerInfo>, StoreError> {
        let keys = self.scan_keys().await?;
        let mut connection = self.inner.connection.clone();
        let now = server_time(&mut connection).await?;
        let head = format!("{}:{{", self.inner.prefix);
        let named: Vec<(String, String)> = keys
            .into_iter()
            .filter_map(|key| {
                let name = key.strip_prefix(&head)?.strip_suffix('}')?.to_owned();
                Some((name, key))
            })
            .collect();
        // On one server, many `HMGET`s per round trip (dashboards re-read
        // thousands of breakers every few seconds); on a cluster, one each
        // (the keys live on different masters).
        let batch = match connection {
            Connection::Cluster(_) => 1,
            _ => BATCH,
        };
        let chunks: Vec<Vec<(String, String)>> = named.chunks(batch).map(<[_]>::to_vec).collect();
        let reads = chunks.into_iter().map(|chunk| {
            let mut connection = connection.clone();
            async move { fetch_all(&mut connection, &chunk).await }
        });
        let mut replies = futures_util::stream::iter(reads)
            .buffer_unordered(CONCURRENCY)
            .flat_map(futures_util::stream::iter);
        let mut all = Vec::new();
        let mut unreadable = Vec::new();
        while let Some((name, fields)) = replies.next().await {
            // A key that expired since the scan is skipped; one holding
            // bad data (or of another type) is named in the error; a store
            // that stopped answering is an error.
            let fields = match fields {
                Ok(fields) => fields,
                Err(e) if e.kind() == StoreErrorKind::Corrupt => {
                    unreadable.push(name);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match machine(&fields) {
                Ok(Some(m)) => all.push(m.info(&name, now)),
                Ok(None) => {}
                Err(Unreadable) => unreadable.push(name),
            }
        }
        if !unreadable.is_empty() {
            // Not a list without them: it would look complete.
            unreadable.sort();
            let shown: Vec<String> = unreadable
                .iter()
                .take(10)
                .map(|n| format!("`{n}`"))
                .collect();
            let more = unreadable.len().saturating_sub(shown.len());
            return Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "{} breaker record(s) under `{}:` cannot be read: {}{}; force or reset them (with `create`) to rewrite them, or delete the keys",
                    unreadable.len(),
                    self.inner.prefix,
                    shown.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() }
                ),
            ));
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}

/// Redis's clock in milliseconds (the scripts' clock).
async fn server_time(connection: &mut Connection) -> Result<u64, StoreError> {
    let (secs, micros): (u64, u64) = connection.query(redis::cmd("TIME")).await?;
    Ok(secs * 1000 + micros / 1000)
}

/// The fields of every `(name, key)`, one round trip for all of them (one
/// key at a time again if one of them holds another type).
async fn fetch_all(
    connection: &mut Connection,
    chunk: &[(String, String)],
) -> Vec<(String, Result<Vec<Option<String>>, StoreError>)> {
    if let [(name, key)] = chunk {
        return vec![(name.clone(), fetch(connection, key).await)];
    }
    let mut pipe = redis::pipe();
    for (_, key) in chunk {
        pipe.cmd("HMGET").arg(key).arg(&FIELDS[..]);
    }
    match connection
        .query_pipe::<Vec<Vec<Option<String>>>>(&pipe)
        .await
    {
        Ok(replies) if replies.len() == chunk.len() => chunk
            .iter()
            .zip(replies)
            .map(|((name, _), fields)| (name.clone(), Ok(fields)))
            .collect(),
        Ok(_) => chunk
            .iter()
            .map(|(name, _)| {
                (
                    name.clone(),
                    Err(super::corrupt(
                        "a pipeline's replies do not match its commands",
                    )),
                )
            })
            .collect(),
        Err(e) => {
            let e = map_error(e);
            if e.kind() != StoreErrorKind::Corrupt {
                return chunk
                    .iter()
                    .map(|(name, _)| (name.clone(), Err(e.clone())))
                    .collect();
            }
            let mut each = Vec::with_capacity(chunk.len());
            for (name, key) in chunk {
                each.push((name.clone(), fetch(connection, key).await));
            }
            each
        }
    }
}

async fn fetch(connection: &mut Connection, key: &str) -> Result<Vec<Option<String>>, StoreError> {
    let mut hmget = redis::cmd("HMGET");
    hmget.arg(key).arg(&FIELDS[..]);
    connection.query_raw(&hmget).await.map_err(map_error)
}

/// A record that exists but cannot be read.
#[derive(Debug, PartialEq, Eq)]
struct Unreadable;

/// The error for the breaker at `key` holding bad data.
fn invalid(key: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!("the breaker record `{key}` cannot be read ({why}); forcing or resetting the breaker rewrites it"),
    )
}

/// The machine the fields describe, as far as an operator's view needs it;
/// `None` for a missing record, [`Unreadable`] for one with fields missing
/// or out of range.
fn machine(fields: &[Option<String>]) -> Result<Option<Machine>, Unreadable> {
    if fields.iter().all(Option::is_none) {
        return Ok(None);
    }
    read_machine(fields).map(Some).ok_or(Unreadable)
}

fn read_machine(fields: &[Option<String>]) -> Option<Machine> {
    let [st, g, ou, fu, cf, bm, w, fr, fa, ft, fg] = fields else {
        return None;
    };
    let number = |f: &Option<String>| f.as_deref()?.parse::<u64>().ok();
    let mut m = Machine::new(0);
    m.state = State::from_code(number(st)?)?;
    m.generation = number(g)?;
    m.open_until = number(ou)?;
    m.forced_until = number(fu)?;
    m.consecutive = number(cf).unwrap_or(0);
    m.bucket_ms = number(bm).unwrap_or(0);
    m.buckets = w
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|b| !b.is_empty())
        .map(|b| {
            let mut n = b.split(':').map(|x| x.parse::<u64>().ok());
            Some(Bucket {
                index: n.next()??,
                calls: n.next()??,
                failures: n.next()??,
                slow: n.next()??,
            })
        })
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    // A note counts only under the generation it was written with (one
    // left by a client that knows no notes is stale).
    let noted_now = number(fg) == Some(m.generation);
    if let Some(at) = number(ft).filter(|at| *at > 0 && noted_now) {
        m.note = Note {
            reason: fr.clone().unwrap_or_default(),
            actor: fa.clone().unwrap_or_default(),
            at,
        };
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(values: [&str; 11]) -> Vec<Option<String>> {
        values
            .iter()
            .map(|v| (!v.is_empty()).then(|| v.to_string()))
            .collect()
    }

    #[test]
    fn reads_what_the_scripts_write() {
        let m = read_machine(&fields([
            "3",
            "42",
            "0",
            "9000",
            "2",
            "1000",
            "4:10:3:0,5:2:1:1",
            "incident",
            "alice",
            "1000",
            "42",
        ]))
        .unwrap();
        let info = m.info("x", 5_500);
        assert_eq!(info.state, State::ForcedOpen);
        assert_eq!(info.generation, 42);
        assert_eq!(info.remaining, std::time::Duration::from_millis(3_500));
        assert_eq!((info.calls, info.failures, info.slow), (12, 4, 1));
        assert_eq!(info.consecutive_failures, 2);
        assert_eq!(m.info("x", 9_000).state, State::Closed, "expired");
        let note = info.note.unwrap();
        assert_eq!(note.reason.as_deref(), Some("incident"));
        assert_eq!(note.actor.as_deref(), Some("alice"));
        assert_eq!(
            machine(&fields(["", "", "", "", "", "", "", "", "", "", ""])).map(|m| m.is_none()),
            Ok(true),
            "no record"
        );
        assert_eq!(
            machine(&fields(["9", "1", "0", "0", "", "", "", "", "", "", ""])).err(),
            Some(Unreadable),
            "bad data is not a missing record"
        );
        // A note of another generation is stale.
        let stale = read_machine(&fields([
            "0", "43", "0", "0", "0", "1000", "", "incident", "alice", "1000", "42",
        ]))
        .unwrap();
        assert_eq!(stale.info("x", 5_500).note, None);
    }
}
