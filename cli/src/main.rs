//! `decider`: an operator's command line for decider event stores. See the crate's README.

mod commands;
mod control;
mod error;
mod open;
mod render;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::From;
use crate::error::CliError;
use crate::open::Opened;

/// Inspect and repair a decider event store: streams, events, the live log, projections,
/// rebuilds, dead letters.
#[derive(Debug, Parser)]
#[command(name = "decider", version)]
struct Cli {
    /// The store: postgres://USER@HOST:PORT/DATABASE or sqlite://PATH.
    #[arg(long, env = "DECIDER_STORE", value_name = "URL")]
    store: String,
    /// PostgreSQL only: the schema holding the store's tables (default: the store's, `decider`).
    #[arg(long)]
    schema: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List streams with their event counts and last revisions, in id order.
    Streams {
        /// Only streams whose id starts with this (a category is `account-`, say).
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many streams.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Print a stream's events with their metadata, oldest first.
    Read {
        /// The stream id.
        stream: String,
        /// One JSON object per line instead of tab-separated rows.
        #[arg(long)]
        json: bool,
    },
    /// Follow the global log live.
    Tail {
        /// `start` (the whole log), `end` (new events only) or a position (after it).
        #[arg(long, default_value = "end")]
        from: From,
        /// Only events of this type (repeatable).
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Only events of streams whose id starts with this.
        #[arg(long, default_value = "")]
        stream_prefix: String,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// One JSON object per line instead of tab-separated rows.
        #[arg(long)]
        json: bool,
    },
    /// The projections whose runners report to this store: state, checkpoint, head, lag.
    Projections,
    /// Ask the runner holding a projection's lease to empty its read model and replay the log;
    /// waits until the replay has caught up.
    Rebuild {
        /// The projection's name (`decider projections` lists them).
        projection: String,
        /// Return once the request is stored, without waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Which version of a blue/green read model readers read now.
    Version {
        /// The read model's group (`BlueGreen::new`'s name).
        group: String,
    },
    /// Switch the readers of a blue/green read model to another version (a rollback, say; a
    /// rebuild switches by itself once the new version has caught up). The old version's
    /// runners stop by themselves when a later version becomes active; switching back needs
    /// them started again, and works only while the old version's data has not been dropped.
    Switch {
        /// The read model's group.
        group: String,
        /// The version to switch to (1, 2, …).
        version: u32,
    },
    /// A projection's dead letters: the events it gave up on.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetters,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetters {
    /// List them.
    List {
        /// The projection's name.
        projection: String,
    },
    /// Ask the runner holding the projection's lease to hand them to its handler again (once
    /// it is fixed); those handled are forgotten.
    Redrive {
        /// The projection's name.
        projection: String,
        /// Return once the request is stored, without waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("decider: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decider: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let opened = open::open(&cli.store, cli.schema.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    let result = match opened {
        #[cfg(feature = "postgres")]
        Opened::Postgres(store) => {
            let (letters, control) = (store.dead_letters(), store.control());
            execute(cli.command, &store, &letters, &control, &mut out).await
        }
        #[cfg(feature = "sqlite")]
        Opened::Sqlite(store) => {
            let (letters, control) = (store.dead_letters(), store.control());
            execute(cli.command, &store, &letters, &control, &mut out).await
        }
    };
    out.flush()?;
    result
}

async fn execute<S, D, C>(
    command: Command,
    store: &S,
    letters: &D,
    control: &C,
    out: &mut impl Write,
) -> Result<(), CliError>
where
    S: decider_core::StoreCatalog,
    D: decider_core::projection::DeadLetterStore,
    C: decider_core::projection::ProjectionControl,
{
    use decider_core::projection::ControlAction;

    match command {
        Command::Streams { prefix, limit } => commands::streams(store, &prefix, limit, out).await,
        Command::Read { stream, json } => commands::read(store, &stream, json, out).await,
        Command::Tail {
            from,
            types,
            stream_prefix,
            limit,
            json,
        } => commands::tail(store, from, types, &stream_prefix, limit, json, out).await,
        Command::Projections => control::projections(control, out).await,
        Command::Version { group } => control::version(control, &group, out).await,
        Command::Switch { group, version } => control::switch(control, &group, version, out).await,
        Command::Rebuild {
            projection,
            no_wait,
        } => control::request(control, &projection, ControlAction::Rebuild, no_wait, out).await,
        Command::DeadLetters {
            command: DeadLetters::List { projection },
        } => commands::dead_letters(letters, &projection, out).await,
        Command::DeadLetters {
            command:
                DeadLetters::Redrive {
                    projection,
                    no_wait,
                },
        } => {
            let action = ControlAction::RedriveDeadLetters;
            control::request(control, &projection, action, no_wait, out).await
        }
    }
}
