//! The Lua scripts, each the shared state machine plus one operation.

use redis::Script;

macro_rules! script {
    ($op:literal) => {
        Script::new(concat!(
            include_str!("lua/machine.lua"),
            "\n",
            include_str!(concat!("lua/", $op, ".lua"))
        ))
    };
}

/// One script per store operation; `EVALSHA` with a reload on `NOSCRIPT`
/// (after a restart or `SCRIPT FLUSH`) comes from redis-rs's `Script`.
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) record: Script,
    pub(super) acquire: Script,
    pub(super) release: Script,
    pub(super) force: Script,
    pub(super) read: Script,
    /// `read` without writes, for `EVALSHA_RO`.
    pub(super) read_ro: Script,
    pub(super) health: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            record: script!("record"),
            acquire: script!("acquire"),
            release: script!("release"),
            force: script!("force"),
            read: script!("read"),
            read_ro: script!("read_ro"),
            health: script!("health"),
        }
    }

    pub(super) fn all(&self) -> [&Script; 7] {
        [
            &self.health,
            &self.record,
            &self.acquire,
            &self.release,
            &self.force,
            &self.read,
            &self.read_ro,
        ]
    }
}
