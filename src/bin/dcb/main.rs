//! `dcb`: the fleet's circuit breakers from a terminal (feature `cli`).
//!
//! ```text
//! dcb list [--prefix P] [--state open]
//! dcb show NAME
//! dcb open NAME [--for 10m] [--reason ..] [--actor ..]
//! dcb close NAME [--for ..]      dcb disable NAME [--for ..]
//! dcb reset NAME
//! dcb watch
//! ```
//!
//! `--json` for scripts, `--redis URL` or `REDIS_URL`.

mod args;
mod connect;
mod table;
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use distributed_circuit_breaker::ops::{self, Action, ApplyError};
use distributed_circuit_breaker::store::{BreakerInfo, StoreError};
use distributed_circuit_breaker::{BreakerName, ForceNote, RedisStore, Store};

use args::{exit, Cli, Command, ForceArgs};

/// A failure to report: the message and the exit code.
struct Failure(String, i32);

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure(e.to_string(), exit::STORE)
    }
}

impl From<ApplyError> for Failure {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Unknown(_) => Failure(e.to_string(), exit::UNKNOWN),
            ApplyError::Store(e) => e.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dcb: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let urls = cli.connection.redis.clone();
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message, code)) => {
            // Whatever quoted the URL, its passwords never reach the terminal.
            eprintln!("dcb: {}", connect::scrub(&message, &urls));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // Reading needs no write or PUBLISH rights (a read-only ACL user).
    let read_only = matches!(
        cli.command,
        Command::List { .. } | Command::Show { .. } | Command::Watch { .. }
    );
    let store = connect::connect(&cli.connection, read_only).await?;
    match cli.command {
        Command::List { prefix, state } => list(&store, prefix, state, cli.json).await,
        Command::Show { name } => show(&store, &name, cli.json).await,
        Command::Open(args) => force(&store, Action::Open, args, cli.json).await,
        Command::Close(args) => force(&store, Action::Close, args, cli.json).await,
        Command::Disable(args) => force(&store, Action::Disable, args, cli.json).await,
        Command::Reset { name } => {
            let args = ForceArgs {
                name,
                duration: None,
                reason: None,
                actor: None,
                create: false,
            };
            force(&store, Action::Reset, args, cli.json).await
        }
        Command::Watch { prefix } => watch::watch(&store, prefix, cli.json).await,
    }
}

fn name(text: &str) -> Result<BreakerName, Failure> {
    BreakerName::new(text).map_err(|e| Failure(format!("invalid name `{text}`: {e}"), exit::USAGE))
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

async fn list(
    store: &RedisStore,
    prefix: Option<String>,
    state: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let wanted = match state.as_deref() {
        None => None,
        Some(word) => Some(ops::states_matching(word).ok_or_else(|| {
            Failure(
                format!("unknown state `{word}`: closed, open, half_open, forced_open, forced_closed or disabled"),
                exit::USAGE,
            )
        })?),
    };
    let infos: Vec<BreakerInfo> = store
        .list_info()
        .await?
        .into_iter()
        .filter(|i| prefix.as_deref().is_none_or(|p| i.name.starts_with(p)))
        .filter(|i| wanted.as_ref().is_none_or(|w| w.contains(&i.state)))
        .collect();
    if json {
        print_json(&infos.iter().map(ops::info_json).collect());
    } else {
        print!("{}", table::table(&infos));
    }
    Ok(())
}

async fn show(store: &RedisStore, text: &str, json: bool) -> Result<(), Failure> {
    let name = name(text)?;
    let info = store
        .info(&name)
        .await?
        .ok_or_else(|| Failure::from(ApplyError::Unknown(name.clone())))?;
    if json {
        print_json(&ops::info_json(&info));
    } else {
        print!("{}", table::detail(&info));
    }
    Ok(())
}

async fn force(
    store: &RedisStore,
    action: Action,
    args: ForceArgs,
    json: bool,
) -> Result<(), Failure> {
    let name = name(&args.name)?;
    let actor = args
        .actor
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default();
    let mut note = ForceNote::new().actor(actor);
    if let Some(reason) = &args.reason {
        note = note.reason(reason);
    }
    let info = ops::apply(store, &name, action, args.duration, &note, args.create)
        .await
        .map_err(|e| match e {
            ApplyError::Unknown(_) if action != Action::Reset => Failure(
                format!("{e}; pass --create to force it anyway"),
                exit::UNKNOWN,
            ),
            e => e.into(),
        })?;
    if json {
        print_json(&ops::info_json(&info));
    } else {
        // What the store kept, not what was asked: it caps a forced
        // state's duration (a year).
        let kept = info.remaining;
        let until = match (action, args.duration) {
            (Action::Reset, _) => String::new(),
            _ if info.forced_until_reset => " until reset".to_owned(),
            (_, Some(asked)) if kept + Duration::from_secs(2) < asked => format!(
                " for {} (the longest the store keeps a forced state)",
                ops::format_duration(kept)
            ),
            (_, Some(asked)) => format!(" for {}", ops::format_duration(asked)),
            (_, None) if kept.is_zero() => String::new(),
            (_, None) => format!(" for {}", ops::format_duration(kept)),
        };
        println!(
            "{}: {} (generation {}){until}",
            info.name, info.state, info.generation
        );
    }
    Ok(())
}
