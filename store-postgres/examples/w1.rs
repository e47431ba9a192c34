//! Workload W1 of docs/benchmarks.md — commands through `CommandHandler` — on the memory store and on
//! PostgreSQL, each run without cache, with the state cache, and with snapshots, beside the raw
//! baseline of the same run at the same client count.
//!
//! ```text
//! cargo run --release -p decider-store-postgres --example w1              # about 2 minutes
//! cargo run --release -p decider-store-postgres --example w1 -- postgres  # only PostgreSQL
//! cargo run --release -p decider-store-postgres --example w1 -- memory long
//! ```
//!
//! Arguments pick stores (`memory`, `postgres`) and runs (`short`: A=500/2,000 accounts × 5
//! deposits at C=1/4/16; `long`: 50 accounts × 1,000 deposits at C=16); none means all.
//!
//! Client `c` of `C` takes accounts c, c + C, …, one command at a time, every account once per
//! round, for D rounds; every command is a `Deposit { amount: 1 }` deciding one `Deposited`.
//! Modes: `none` (each command reads its whole stream, folds, decides, appends with `Exact`),
//! `cache` (a state cache holding every account: the first command of an account reads it, the
//! others decide on the cached state and only append), `cache+assume-new` (the same, and the
//! first command of an account, whose stream is new, appends without reading it: one round trip
//! for every command), `snapshots` (a snapshot every 100
//! events; each command reads the latest snapshot and the events after it).
//!
//! Raw baselines: on PostgreSQL, single-row `INSERT`s of the same rows (same payload, metadata
//! of the same size) into `raw_events`, a table created `LIKE events INCLUDING ALL` (the same
//! columns, defaults, identity, keys and indexes), from a pool of the same size, with the same
//! clients; measured before and after the store's runs and averaged, so that drift weighs on
//! both. On memory: bare appends of pre-encoded events, no load, fold, decide or encode.
//!
//! PostgreSQL is `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); each run
//! works in a schema of its own, `decider_w1_<uuid>`, dropped at the end.
// A benchmark that fails should stop loudly, and printing its figures is what it is for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::error::Error;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use decider_core::{
    CommandHandler, Decider, EventData, EventStore, ExpectedVersion, SnapshotPolicy, SnapshotStore,
    StreamId,
};
use decider_store_memory::{MemorySnapshotStore, MemoryStore};
use decider_store_postgres::{PostgresOptions, PostgresStore};
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

/// Plaintext, like the raw baseline, which connects without TLS: set `sslmode=disable` in your
/// own `DATABASE_URL` too, or the store pays for TLS and the raw side does not.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

/// Connections in the store's pool and in the raw baseline's: the most clients of any run.
const POOL_SIZE: usize = 16;

/// Events between snapshots in the `snapshots` mode.
const SNAPSHOT_EVERY: u64 = 100;

/// More than any run's accounts: in the `cache` mode every account stays cached.
const CACHE_ENTRIES: usize = 100_000;

// --- the domain ------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
enum Event {
    Deposited { amount: u64 },
}

struct Deposit(u64);

struct Account;

impl Decider for Account {
    type Command = Deposit;
    type Event = Event;
    type State = u64;
    type Error = std::convert::Infallible;
    fn initial_state(&self) -> u64 {
        0
    }
    fn decide(&self, Deposit(amount): &Deposit, _: &u64) -> Result<Vec<Event>, Self::Error> {
        Ok(vec![Event::Deposited { amount: *amount }])
    }
    fn evolve(&self, balance: u64, Event::Deposited { amount }: &Event) -> u64 {
        balance + amount
    }
}

// --- runs --------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Workload {
    clients: usize,
    accounts: usize,
    deposits: usize,
}

impl Workload {
    const fn new(clients: usize, accounts: usize, deposits: usize) -> Self {
        Self {
            clients,
            accounts,
            deposits,
        }
    }

    fn commands(self) -> usize {
        self.accounts * self.deposits
    }

    /// A prefix of stream names no other run of the process uses.
    fn prefix(self, side: &str) -> String {
        format!(
            "{side}-c{}a{}d{}-",
            self.clients, self.accounts, self.deposits
        )
    }

    fn label(self) -> String {
        format!(
            "clients={} accounts={} deposits={}",
            self.clients, self.accounts, self.deposits
        )
    }
}

/// The three runs of docs/benchmarks.md.
const SHORT: [Workload; 3] = [
    Workload::new(1, 500, 5),
    Workload::new(4, 2_000, 5),
    Workload::new(16, 2_000, 5),
];

/// Long streams: what a command costs when its stream holds up to 1,000 events.
const LONG: Workload = Workload::new(16, 50, 1_000);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    None,
    Cache,
    CacheAssumingNew,
    Snapshots,
}

const MODES: [Mode; 4] = [
    Mode::None,
    Mode::Cache,
    Mode::CacheAssumingNew,
    Mode::Snapshots,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Cache => "cache",
            Self::CacheAssumingNew => "cache+assume-new",
            Self::Snapshots => "snapshots",
        }
    }

    fn handler<S: EventStore>(
        self,
        store: S,
        snapshots: impl SnapshotStore,
    ) -> CommandHandler<Account, S> {
        let handler = CommandHandler::new(Account, store);
        match self {
            Self::None => handler,
            Self::Cache => handler.with_cache(CACHE_ENTRIES),
            Self::CacheAssumingNew => handler.with_cache(CACHE_ENTRIES).assume_new_streams(),
            Self::Snapshots => {
                handler.with_snapshots(snapshots, SnapshotPolicy::every(SNAPSHOT_EVERY))
            }
        }
    }
}

fn streams(prefix: &str, count: usize) -> Arc<Vec<StreamId>> {
    Arc::new(
        (0..count)
            .map(|a| StreamId::new(format!("account-{prefix}{a}")).unwrap())
            .collect(),
    )
}

/// Runs the workload's clients on the current runtime; `work(account, deposit)` is one command.
/// Returns the elapsed seconds.
async fn drive<F, Fut>(workload: Workload, work: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let work = Arc::new(work);
    let start = Instant::now();
    let tasks: Vec<_> = (0..workload.clients)
        .map(|c| {
            let work = work.clone();
            tokio::spawn(async move {
                for d in 0..workload.deposits {
                    for a in (c..workload.accounts).step_by(workload.clients) {
                        work(a, d).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed().as_secs_f64()
}

/// Runs every command of `workload` through `handler` and checks the first account's balance.
async fn commands<S: EventStore>(
    workload: Workload,
    handler: CommandHandler<Account, S>,
    prefix: &str,
) -> f64 {
    let handler = Arc::new(handler);
    let accounts = streams(prefix, workload.accounts);
    let secs = drive(workload, {
        let (handler, accounts) = (handler.clone(), accounts.clone());
        move |a, _| {
            let (handler, accounts) = (handler.clone(), accounts.clone());
            async move {
                handler.handle(&accounts[a], Deposit(1)).await.unwrap();
            }
        }
    })
    .await;
    let balance = handler.load(&accounts[0]).await.unwrap().state;
    assert_eq!(balance, workload.deposits as u64, "a deposit went missing");
    secs
}

fn print_line(store: &str, workload: Workload, mode: Mode, secs: f64, raw: &str, raw_rate: f64) {
    let rate = workload.commands() as f64 / secs;
    println!(
        "W1 {store} {} mode={} commands={} secs={secs:.3} commands/s={rate:.0} {raw}/s={raw_rate:.0} \
         ratio={:.2}",
        workload.label(),
        mode.name(),
        workload.commands(),
        rate / raw_rate
    );
}

// --- memory ----------------------------------------------------------------------------------

fn memory(workload: Workload) {
    let runtime = if workload.clients == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
    .unwrap();
    runtime.block_on(async {
        let raw_secs = median_secs(|| {
            let store = MemoryStore::new();
            let accounts = streams("raw-", workload.accounts);
            drive(workload, move |a, d| {
                let (store, accounts) = (store.clone(), accounts.clone());
                async move {
                    let event = EventData::json("Deposited", &br#"{"amount":1}"#[..]);
                    let last = d.checked_sub(1).map(|r| r as u64);
                    let expected = ExpectedVersion::from_last_revision(last);
                    store
                        .append(&accounts[a], expected, vec![event])
                        .await
                        .unwrap();
                }
            })
        })
        .await;
        let raw_rate = workload.commands() as f64 / raw_secs;
        for mode in MODES {
            let secs = median_secs(|| {
                let handler = mode.handler(MemoryStore::new(), MemorySnapshotStore::new());
                commands(workload, handler, "")
            })
            .await;
            print_line("memory", workload, mode, secs, "raw_append", raw_rate);
        }
    });
}

/// Memory runs last milliseconds: each is repeated on fresh stores until they add up to half a
/// second, and the median counts.
async fn median_secs<F, Fut>(mut once: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = f64>,
{
    let mut runs = Vec::new();
    while runs.iter().sum::<f64>() < 0.5 {
        runs.push(once().await);
    }
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

// --- PostgreSQL --------------------------------------------------------------------------------

/// JSON text sent as `jsonb` in binary format, as the store sends payloads: a version byte and
/// the text, parsed by the server alike on both sides.
#[derive(Debug)]
struct Jsonb<'a>(&'a [u8]);

impl ToSql for Jsonb<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_u8(1);
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

const RAW_TABLE: &str = "CREATE TABLE {schema}.raw_events (LIKE {schema}.events INCLUDING ALL)";

const RAW_INSERT: &str = "INSERT INTO {schema}.raw_events \
     (stream_id, revision, event_id, event_type, data, metadata) VALUES ($1, $2, $3, $4, $5, $6)";

struct Postgres {
    store: PostgresStore,
    raw: Pool,
    raw_insert: String,
}

impl Postgres {
    async fn new(url: &str) -> Self {
        let schema = format!("decider_w1_{}", Uuid::new_v4().simple());
        let store = PostgresStore::connect_with(
            url,
            PostgresOptions {
                schema,
                pool_size: POOL_SIZE,
                ..PostgresOptions::default()
            },
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "cannot reach PostgreSQL at {url}: {error}\nStart the server or set DATABASE_URL \
                 to a database this benchmark may create and drop schemas in."
            )
        });
        store.migrate().await.unwrap();
        let config = tokio_postgres::Config::from_str(url).unwrap();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let raw = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .build()
            .unwrap();
        let quoted = format!("\"{}\"", store.schema());
        raw.get()
            .await
            .unwrap()
            .batch_execute(&RAW_TABLE.replace("{schema}", &quoted))
            .await
            .unwrap();
        let raw_insert = RAW_INSERT.replace("{schema}", &quoted);
        let bench = Self {
            store,
            raw,
            raw_insert,
        };
        bench.warm_up().await;
        bench
    }

    /// Opens every connection of both pools before anything is timed.
    async fn warm_up(&self) {
        let mut clients = Vec::new();
        for _ in 0..POOL_SIZE {
            clients.push(self.raw.get().await.unwrap());
            clients.push(self.store.pool().get().await.unwrap());
        }
        for client in &clients {
            client.simple_query("SELECT 1").await.unwrap();
        }
    }

    async fn header(&self) {
        let client = self.raw.get().await.unwrap();
        let mut settings = Vec::new();
        for name in ["server_version", "synchronous_commit", "fsync"] {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap();
            settings.push(format!("{name}={}", row.get::<_, String>(0)));
        }
        println!(
            "W1 postgres {} pool={POOL_SIZE} client_cores={} schema={}",
            settings.join(" "),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            self.store.schema()
        );
    }

    /// Single-row INSERTs of the workload's rows into `raw_events`.
    async fn raw(&self, workload: Workload, round: usize) -> f64 {
        let accounts = streams(&workload.prefix(&format!("raw{round}")), workload.accounts);
        let (raw, sql) = (self.raw.clone(), Arc::new(self.raw_insert.clone()));
        drive(workload, move |a, d| {
            let (raw, sql, accounts) = (raw.clone(), sql.clone(), accounts.clone());
            async move {
                // The handler's metadata: a correlation id drawn for the command.
                let metadata = format!(r#"{{"$correlationId":"{}"}}"#, Uuid::new_v4());
                let client = raw.get().await.unwrap();
                let statement = client.prepare_cached(&sql).await.unwrap();
                client
                    .execute(
                        &statement,
                        &[
                            &accounts[a].as_str(),
                            &(d as i64),
                            &Uuid::new_v4(),
                            &"Deposited",
                            &Jsonb(br#"{"amount":1}"#),
                            &Jsonb(metadata.as_bytes()),
                        ],
                    )
                    .await
                    .unwrap();
            }
        })
        .await
    }

    async fn run(&self, workload: Workload) {
        let before = self.raw(workload, 0).await;
        let mut store_secs = Vec::new();
        for mode in MODES {
            let handler = mode.handler(self.store.clone(), self.store.clone());
            store_secs.push(commands(workload, handler, &workload.prefix(mode.name())).await);
        }
        let after = self.raw(workload, 1).await;
        let raw_rate = workload.commands() as f64 / ((before + after) / 2.0);
        for (mode, secs) in MODES.into_iter().zip(store_secs) {
            print_line("postgres", workload, mode, secs, "raw_insert", raw_rate);
        }
        println!(
            "W1 postgres {} raw_insert/s before={:.0} after={:.0}",
            workload.label(),
            workload.commands() as f64 / before,
            workload.commands() as f64 / after
        );
    }
}

fn postgres(workloads: &[Workload]) {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bench = Arc::new(Postgres::new(&url).await);
        bench.header().await;
        let runs = tokio::spawn({
            let (bench, workloads) = (bench.clone(), workloads.to_vec());
            async move {
                for workload in workloads {
                    bench.run(workload).await;
                }
            }
        })
        .await;
        // Dropped also when a run failed, before its panic goes on.
        bench.store.drop_schema().await.unwrap();
        if let Err(failed) = runs {
            std::panic::resume_unwind(failed.into_panic());
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wants = |word: &str, others: &[&str]| {
        args.iter().any(|a| a == word) || !args.iter().any(|a| others.contains(&a.as_str()))
    };
    let mut workloads = Vec::new();
    if wants("short", &["short", "long"]) {
        workloads.extend(SHORT);
    }
    if wants("long", &["short", "long"]) {
        workloads.push(LONG);
    }
    if wants("memory", &["memory", "postgres"]) {
        for workload in &workloads {
            memory(*workload);
        }
    }
    if wants("postgres", &["memory", "postgres"]) {
        postgres(&workloads);
    }
}
