//! `banking demo` runs a scripted day at the bank; `banking serve` serves the HTTP API.
//! Both take `--store`: a `sqlite://PATH` file (what `serve` uses by default:
//! `sqlite://banking.db`), a `postgres://` URL, an EventStoreDB / KurrentDB connection string
//! (`esdb://…`, `kurrentdb://…`), or `memory` (what `demo` uses by default; nothing is kept).
//! Every store but memory is compiled in by a cargo feature (`sqlite` and `postgres` by default,
//! `eventstoredb` when asked for); a URL of a store left out is refused with the feature's name.

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;

use banking::bank::{self, ReadSide, Running};
use banking::read_model::ReadModels;
use banking::store_url::{Openable, StoreUrl};
use banking::{demo, http};
use clap::{Parser, Subcommand};
use decider_core::EventStore;
#[cfg(feature = "postgres")]
use decider_store_postgres::PostgresOptions;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A bank built with decider: accounts, transfers with compensation, read models.
#[derive(Debug, Parser)]
#[command(name = "banking", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The event store: a sqlite://PATH file (serve's default: sqlite://banking.db), a
    /// postgres:// URL, an EventStoreDB / KurrentDB connection string such as
    /// esdb://127.0.0.1:2113?tls=false, or "memory" (demo's default; nothing survives a restart).
    #[arg(long, global = true)]
    store: Option<StoreUrl>,
    /// On PostgreSQL, the schema holding the bank's tables (created if missing).
    #[arg(long, global = true, default_value = "banking")]
    schema: String,
    /// Partitions of the accounts read model (PostgreSQL and SQLite): the processes serving
    /// one bank share them, each claiming free ones. Every process of a bank must use the same
    /// count; changing it is a rebuild (the checkpoints of one count mean nothing to another).
    #[arg(long, global = true, default_value_t = 1)]
    accounts_partitions: u32,
    /// The version of the accounts read model this process builds (PostgreSQL and SQLite). One
    /// later than the active version is a blue/green rebuild without downtime: it builds into
    /// its own tables while readers read the active one, readers switch to it once it has caught
    /// up, and the old version's tables are dropped. `decider version banking-accounts` shows
    /// the active one.
    #[arg(long, global = true, default_value_t = 1)]
    accounts_version: u32,
}

impl Cli {
    /// The store named, or the command's default: a file for the server, which must keep what
    /// it is told; memory for the demo, which starts afresh every time.
    fn read_side(&self) -> ReadSide {
        ReadSide {
            partitions: self.accounts_partitions,
            version: self.accounts_version,
        }
    }

    fn store(&self) -> StoreUrl {
        self.store.clone().unwrap_or_else(|| match self.command {
            Command::Serve { .. } => StoreUrl::Sqlite("sqlite://banking.db".to_owned()),
            Command::Demo => StoreUrl::Memory,
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
    },
    /// Run a scripted scenario and print the balances and a ledger.
    Demo,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let store = format!("{:?}", cli.store());
    match start(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("banking: {error} (store: {store})");
            ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> Result<(), Box<dyn Error>> {
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        Command::Demo => "warn",
    };
    let logs = tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with(tracing_subscriber::fmt::layer());
    #[cfg(feature = "otlp")]
    let (logs, otlp) = {
        let (layer, otlp) = banking::otlp::from_env()?.unzip();
        (logs.with(layer), otlp)
    };
    logs.init();
    if matches!(cli.command, Command::Serve { .. }) {
        // Before the bank starts, so that its projections' catching up is counted too.
        banking::metrics::install()?;
    }
    let result = serve_or_demo(cli).await;
    #[cfg(feature = "otlp")]
    if let Some(otlp) = otlp {
        otlp.shutdown();
    }
    result
}

async fn serve_or_demo(cli: Cli) -> Result<(), Box<dyn Error>> {
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    let read_side = cli.read_side();
    match cli.store().openable()? {
        Openable::Memory => {
            one_process_read_side(&cli)?;
            if matches!(cli.command, Command::Serve { .. }) {
                tracing::warn!(
                    "the store is in memory: every account, transfer and idempotency key is lost \
                     when the server stops (use --store sqlite://PATH or postgres://… to keep them)"
                );
            }
            run(cli.command, bank::in_memory()).await
        }
        #[cfg(feature = "sqlite")]
        Openable::Sqlite(url) => run(cli.command, bank::on_sqlite(&url, read_side).await?).await,
        #[cfg(feature = "postgres")]
        Openable::Postgres(url) => {
            let options = PostgresOptions {
                schema: cli.schema.clone(),
                ..PostgresOptions::default()
            };
            run(
                cli.command,
                bank::on_postgres(&url, options, read_side).await?,
            )
            .await
        }
        #[cfg(feature = "eventstoredb")]
        Openable::EventStoreDb(url) => {
            one_process_read_side(&cli)?;
            run(cli.command, bank::on_eventstoredb(&url).await?).await
        }
    }
}

/// The in-memory read models (of the memory store and of EventStoreDB) live in one process and
/// are rebuilt at each start: nothing to partition between processes, no version to switch to.
fn one_process_read_side(cli: &Cli) -> Result<(), Box<dyn Error>> {
    if cli.read_side() == ReadSide::default() {
        return Ok(());
    }
    Err(
        "--accounts-partitions and --accounts-version need a store that several processes \
         share: --store sqlite://PATH or postgres://…"
            .into(),
    )
}

async fn run<S: EventStore + Clone, R: ReadModels>(
    command: Command,
    running: Running<S, R>,
) -> Result<(), Box<dyn Error>> {
    match command {
        Command::Serve { listen } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            tracing::info!(address = %listener.local_addr()?, "serving the bank's HTTP API");
            let shutdown = async {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing the requests and batches in hand");
            };
            let metrics = banking::metrics::install()?;
            tokio::spawn(banking::metrics::upkeep(metrics.clone()));
            let router =
                http::router(running.bank().clone()).merge(banking::metrics::routes(metrics));
            http::serve(listener, router, shutdown).await?;
        }
        Command::Demo => {
            demo::run(running.bank(), &mut std::io::stdout().lock()).await?;
        }
    }
    running.stop().await?;
    Ok(())
}

/// Resolves on Ctrl-C, or on SIGTERM (how containers and service managers stop a process).
async fn shutdown_signal() {
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
