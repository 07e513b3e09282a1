//! The command line, as clap reads it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Exit codes other than 0, also listed in `dcb --help`.
pub(crate) mod exit {
    /// Redis could not be reached, refused, or held bad data.
    pub(crate) const STORE: i32 = 1;
    /// Bad arguments (clap's own code): an unknown flag, a bad duration.
    pub(crate) const USAGE: i32 = 2;
    /// No breaker of that name in the store.
    pub(crate) const UNKNOWN: i32 = 3;
}

const AFTER_HELP: &str = "\
Exit codes: 0 done; 1 Redis unreachable, refused or holding bad data; \
2 bad arguments (e.g. a bad duration); 3 no breaker of that name.

Durations: 500ms, 90s, 10m, 1h30m, 2days. Without --for, a forced state \
stays until `dcb reset`.";

/// Steer a fleet's circuit breakers in Redis: list them, see why one is
/// open, force one open or closed for a while, watch transitions live.
#[derive(Debug, Parser)]
#[command(name = "dcb", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// Print JSON (one object, an array, or one object per line for `watch`).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the breakers are.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Redis URL: redis://host:6379 or redis://user:password@host:6379/0,
    /// rediss:// for TLS, redis+sentinel://host:26379,.../master; with
    /// --cluster, a comma-separated list of node URLs.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) redis: String,
    /// The URL(s) name Redis Cluster nodes.
    #[arg(long, global = true)]
    pub(crate) cluster: bool,
    /// The key prefix the services use (RedisStoreBuilder::prefix).
    #[arg(long, env = "DCB_KEY_PREFIX", default_value = "dcb", global = true)]
    pub(crate) key_prefix: String,
    /// A PEM file of the CA(s) to trust for rediss:// instead of the system's.
    #[arg(long, global = true, value_name = "PEM")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// How long connecting may take.
    #[arg(long, global = true, default_value = "3s", value_parser = duration, value_name = "DURATION")]
    pub(crate) connect_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Every breaker the store holds, with state, failure rate, calls in the
    /// window, time left and who forced it.
    List {
        /// Only names starting with this.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Only this state: closed, open, half_open, forced_open,
        /// forced_closed, disabled; `open` also matches forced_open.
        #[arg(long)]
        state: Option<String>,
    },
    /// One breaker in detail.
    Show {
        /// The breaker's name.
        name: String,
    },
    /// Reject every call, fleet-wide, for a while or until reset.
    Open(ForceArgs),
    /// Admit every call (outcomes counted, never tripping), fleet-wide.
    Close(ForceArgs),
    /// Admit every call and count nothing, fleet-wide.
    Disable(ForceArgs),
    /// Back to closed, counters cleared.
    Reset {
        /// The breaker's name.
        name: String,
    },
    /// Print every transition as it happens, one line each, until stopped.
    Watch {
        /// Only names starting with this.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
    },
}

/// What `open`, `close` and `disable` take.
#[derive(Debug, Args)]
pub(crate) struct ForceArgs {
    /// The breaker's name.
    pub(crate) name: String,
    /// How long (e.g. 10m); without it, until `dcb reset`.
    #[arg(long = "for", value_parser = duration, value_name = "DURATION")]
    pub(crate) duration: Option<Duration>,
    /// Why, kept with the forced state.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Who (default: $USER).
    #[arg(long, env = "DCB_ACTOR")]
    pub(crate) actor: Option<String>,
    /// Force it even if the store holds no record of it (a healthy idle
    /// breaker keeps none; without this, an unknown name is refused as a
    /// likely typo).
    #[arg(long)]
    pub(crate) create: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    distributed_circuit_breaker::ops::parse_duration(text)
}
