//! `courses demo` runs a scripted term of course subscriptions, with a race for the last seat
//! of a course, on the store of `--store` (default: memory).

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use courses::{Courses, Retries, StoreUrl};
use decider_core::dcb::DcbStore;
use decider_store_memory::MemoryStore;
use decider_store_postgres::{PostgresOptions, PostgresStore};
use decider_store_sqlite::SqliteStore;

/// Course subscriptions with dynamic consistency boundaries, built with decider.
#[derive(Debug, Parser)]
#[command(name = "courses", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The event store: "memory" (nothing is kept), a sqlite://PATH file, or a postgres:// URL.
    #[arg(long, global = true, default_value = "memory")]
    store: StoreUrl,
    /// On PostgreSQL, the schema holding the events (created if missing).
    #[arg(long, global = true, default_value = "courses")]
    schema: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scripted term: courses, subscriptions, a race for the last seat, the rosters.
    Demo,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match start(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("courses: {error} (store: {:?})", cli.store);
            ExitCode::FAILURE
        }
    }
}

async fn start(cli: &Cli) -> Result<(), Box<dyn Error>> {
    // Before any handler runs, so that every retry is counted.
    let retries = Retries::install()?;
    match &cli.store {
        StoreUrl::Memory => run(&cli.command, MemoryStore::new(), &retries).await,
        StoreUrl::Sqlite(url) => {
            let url = url.clone();
            // Opening may create or upgrade the file: blocking work, off the runtime's workers.
            let store = tokio::task::spawn_blocking(move || SqliteStore::connect(&url)).await??;
            run(&cli.command, store, &retries).await
        }
        StoreUrl::Postgres(url) => {
            let options = PostgresOptions {
                schema: cli.schema.clone(),
                ..PostgresOptions::default()
            };
            let store = PostgresStore::connect_with(url, options).await?;
            store.migrate().await?;
            run(&cli.command, store, &retries).await
        }
    }
}

async fn run<S>(command: &Command, store: S, retries: &Retries) -> Result<(), Box<dyn Error>>
where
    S: DcbStore + Clone + Send + Sync + 'static,
{
    match command {
        Command::Demo => {
            let courses = Arc::new(Courses::new(store));
            courses::demo::run(courses, retries, &mut std::io::stdout().lock()).await?;
        }
    }
    Ok(())
}
