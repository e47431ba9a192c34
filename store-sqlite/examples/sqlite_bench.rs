//! The SQLite store under the workloads of docs/benchmarks.md, each line beside raw rusqlite
//! doing the same work on a file with the same settings (WAL, the same `synchronous`), in the
//! same run:
//!
//! - **W1** commands through `CommandHandler` (a Deposit decider), modes `none`, `cache` and
//!   `cache+assume-new`, at C=1/4/16, each run stopped after 30 s and repeated until the runs
//!   add up to 2 s (`commands=` counts them all); raw: the single-row INSERT transactions of W2
//!   at the same C, measured before and after, the better kept.
//! - **W2** appends to distinct streams, beside the same INSERTs, one transaction per append on
//!   one connection shared by the raw clients (SQLite has one writer anyway). Each measurement
//!   runs twice, alternating with its baseline, and keeps the better; beside the rates, the
//!   median time of one append (`median_us`, `raw_median_us`), which a neighbour's burst moves
//!   less than it moves a rate.
//! - **W3** catch-up over 200k events (`events=N`), beside paged SELECTs.
//! - **W4** live latency: one writer at 500 appends/s for 10 s, one live subscriber; no raw.
//! - **W5** projection over 200k events (`events=N`) through `SqliteTransactionalSink`, beside
//!   paged SELECTs and the same upserts, a transaction a page.
//!
//! ```text
//! cargo run --release -p decider-store-sqlite --example sqlite_bench                # all, FULL
//! cargo run --release -p decider-store-sqlite --example sqlite_bench -- normal      # all, NORMAL
//! cargo run --release -p decider-store-sqlite --example sqlite_bench -- W1 W4       # some
//! cargo run --release -p decider-store-sqlite --example sqlite_bench -- W5 events=1000000
//! cargo run --release -p decider-store-sqlite --example sqlite_bench -- clients=16  # W1, W2 at C=16
//! cargo run --release -p decider-store-sqlite --example sqlite_bench -- W2 secs=5   # longer W2 runs
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use decider_core::projection::{Projection, ProjectionRunner, RunnerOptions, SinkError};
use decider_core::{
    CommandHandler, Decider, EventData, EventStore, ExpectedVersion, RecordedEvent, StreamId,
};
use decider_store_sqlite::{
    SqliteOptions, SqliteStore, SqliteTransactionalHandler, SqliteTransactionalSink, Synchronous,
    handle_error,
};
use serde::{Deserialize, Serialize};

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("decider-bench-{name}-{}.db", std::process::id()))
}

fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

fn open_store(path: &Path, sync: Synchronous) -> SqliteStore {
    let options = SqliteOptions {
        synchronous: sync,
        ..SqliteOptions::default()
    };
    SqliteStore::open_with(path, options).unwrap()
}

/// A connection of the raw baseline, with the store's file settings.
fn raw_connection(path: &Path, sync: Synchronous) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(path).unwrap();
    let mode = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {mode};"
        ))
        .unwrap();
    connection
}

/// What a W2 run measured: appends per second, and the median time one append took.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rate: f64,
    median: Duration,
}

impl Run {
    fn new(done: usize, took: Duration, mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Self {
            rate: done as f64 / took.as_secs_f64(),
            median: latencies
                .get(latencies.len() / 2)
                .copied()
                .unwrap_or_default(),
        }
    }

    /// The better of two runs: the higher rate, the lower median (each kept on its own).
    fn best(self, other: Self) -> Self {
        Self {
            rate: self.rate.max(other.rate),
            median: if self.median.is_zero() {
                other.median
            } else {
                self.median.min(other.median)
            },
        }
    }
}

/// Appends of `events` events by `clients` clients, each to streams of its own, for `secs`.
async fn store_run(sync: Synchronous, clients: usize, events: usize, secs: Duration) -> Run {
    let path = temp("store");
    let store = open_store(&path, sync);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let stream = StreamId::new(format!("bench-{client}-{n}")).unwrap();
                    let batch = (0..events)
                        .map(|_| EventData::json("Deposited", r#"{"amount":10}"#))
                        .collect();
                    let called = Instant::now();
                    store
                        .append(&stream, ExpectedVersion::NoStream, batch)
                        .await
                        .unwrap();
                    latencies.push(called.elapsed());
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let run = Run::new(
        done.load(Ordering::Relaxed) as usize,
        started.elapsed(),
        latencies,
    );
    drop(store);
    remove(&path);
    run
}

/// The same rows through raw rusqlite: the store's table (created by opening a store), one
/// `BEGIN IMMEDIATE … COMMIT` per append, `clients` threads taking turns on one connection.
fn raw_run(sync: Synchronous, clients: usize, events: usize, secs: Duration) -> Run {
    let path = temp("raw");
    drop(SqliteStore::open(&path).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let connection = Arc::new(Mutex::new(raw_connection(&path, sync)));
    let next_seq = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (connection, stop, done, next_seq) = (
                connection.clone(),
                stop.clone(),
                done.clone(),
                next_seq.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let stream = format!("bench-{client}-{n}");
                    let called = Instant::now();
                    let connection = connection.lock().unwrap();
                    let transaction = connection.unchecked_transaction().unwrap();
                    {
                        let mut insert = transaction
                            .prepare_cached(
                                "INSERT INTO events (seq, stream_id, category, revision, event_id, \
                                 event_type, content_type, payload, metadata, recorded_at, \
                                 batch_start, batch_len) VALUES (?1, ?2, 'bench', ?3, ?4, \
                                 'Deposited', 0, ?5, '{}', 0, ?6, ?7)",
                            )
                            .unwrap();
                        let start = next_seq.fetch_add(events as u64, Ordering::Relaxed) as i64;
                        for i in 0..events {
                            insert
                                .execute(rusqlite::params![
                                    start + i as i64,
                                    stream,
                                    i as i64,
                                    uuid::Uuid::new_v4().as_bytes().as_slice(),
                                    br#"{"amount":10}"#.as_slice(),
                                    start,
                                    events as i64,
                                ])
                                .unwrap();
                        }
                    }
                    transaction.commit().unwrap();
                    drop(connection);
                    latencies.push(called.elapsed());
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().unwrap());
    }
    let run = Run::new(
        done.load(Ordering::Relaxed) as usize,
        started.elapsed(),
        latencies,
    );
    drop(connection);
    remove(&path);
    run
}

/// Every column the store reads, as the raw baseline decodes it.
type RawRow = (i64, String, i64, Vec<u8>, String, i64, Vec<u8>, String, i64);

/// W3 at a smaller scale: `subscribe_all` from the start over `events` events until `CaughtUp`,
/// beside raw paged SELECTs of the same rows in global order, 1,000 a page.
async fn catch_up(sync: Synchronous, events: usize) -> (f64, f64) {
    let path = temp("catch-up");
    let store = open_store(&path, sync);
    for n in 0..events / 100 {
        let stream = StreamId::new(format!("fill-{n}")).unwrap();
        let batch = (0..100)
            .map(|_| EventData::json("Deposited", r#"{"amount":10}"#))
            .collect();
        store
            .append(&stream, ExpectedVersion::NoStream, batch)
            .await
            .unwrap();
    }
    let started = Instant::now();
    let mut subscription = Box::pin(store.subscribe_all(None, &decider_core::EventFilter::all()));
    let mut seen = 0usize;
    while let Some(message) = futures::StreamExt::next(&mut subscription).await {
        match message.unwrap() {
            decider_core::SubscriptionMessage::Event(_) => seen += 1,
            decider_core::SubscriptionMessage::CaughtUp => break,
        }
    }
    assert_eq!(seen, events);
    let store_rate = seen as f64 / started.elapsed().as_secs_f64();
    drop(subscription);

    let connection = rusqlite::Connection::open(&path).unwrap();
    let started = Instant::now();
    let (mut after, mut read) = (0i64, 0usize);
    let mut page = connection
        .prepare(
            "SELECT seq, stream_id, revision, event_id, event_type, content_type, payload, \
             metadata, recorded_at FROM events WHERE seq > ?1 ORDER BY seq LIMIT 1000",
        )
        .unwrap();
    loop {
        let rows: Vec<RawRow> = page
            .query_map([after], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                    row.get(7)?,
                    row.get(8)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let Some(last) = rows.last() else { break };
        after = last.0;
        read += rows.len();
    }
    assert_eq!(read, events);
    let raw_rate = read as f64 / started.elapsed().as_secs_f64();
    drop(page);
    drop(connection);
    drop(store);
    remove(&path);
    (store_rate, raw_rate)
}

// --- W1: commands through `CommandHandler` ---------------------------------------------------

#[derive(Serialize, Deserialize)]
enum Event {
    Deposited { amount: u64 },
}

struct Deposit(u64);

/// A bank account that only takes deposits: the smallest decider that loads, folds and decides.
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

/// C clients, A accounts, D deposits into each.
#[derive(Debug, Clone, Copy)]
struct Workload {
    clients: usize,
    accounts: usize,
    deposits: usize,
}

/// The three runs of docs/benchmarks.md.
const W1_RUNS: [Workload; 3] = [
    Workload {
        clients: 1,
        accounts: 500,
        deposits: 5,
    },
    Workload {
        clients: 4,
        accounts: 2_000,
        deposits: 5,
    },
    Workload {
        clients: 16,
        accounts: 2_000,
        deposits: 5,
    },
];

/// More than any run's accounts: in the cache modes every account stays cached.
const CACHE_ENTRIES: usize = 100_000;

/// A run of W1 that has not finished by then stops and reports the commands it did.
const W1_LIMIT: Duration = Duration::from_secs(30);

/// The least time a W1 figure is measured over, in whole runs.
const W1_AT_LEAST: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Every command reads its whole stream, folds, decides and appends with `Exact`.
    None,
    /// The first command of an account reads it; the others decide on the cached state.
    Cache,
    /// As `Cache`, and the first command appends to its new stream without reading it.
    CacheAssumingNew,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::None, Mode::Cache, Mode::CacheAssumingNew];

    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Cache => "cache",
            Self::CacheAssumingNew => "cache+assume-new",
        }
    }

    fn handler(self, store: SqliteStore) -> CommandHandler<Account, SqliteStore> {
        let handler = CommandHandler::new(Account, store);
        match self {
            Self::None => handler,
            Self::Cache => handler.with_cache(CACHE_ENTRIES),
            Self::CacheAssumingNew => handler.with_cache(CACHE_ENTRIES).assume_new_streams(),
        }
    }
}

/// Runs `workload` through a handler in `mode` on a fresh file: client c takes accounts c,
/// c + C, …, one command at a time, every account once a round, for D rounds. Returns the
/// commands done (all of them, unless `W1_LIMIT` passed first) and the seconds they took.
async fn commands(sync: Synchronous, workload: Workload, mode: Mode) -> (u64, f64) {
    let path = temp("w1");
    let store = open_store(&path, sync);
    let handler = Arc::new(mode.handler(store.clone()));
    let accounts: Arc<Vec<StreamId>> = Arc::new(
        (0..workload.accounts)
            .map(|a| StreamId::new(format!("account-{a}")).unwrap())
            .collect(),
    );
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + W1_LIMIT;
    let tasks: Vec<_> = (0..workload.clients)
        .map(|client| {
            let (handler, accounts, done) = (handler.clone(), accounts.clone(), done.clone());
            tokio::spawn(async move {
                for _ in 0..workload.deposits {
                    for account in (client..workload.accounts).step_by(workload.clients) {
                        if Instant::now() > deadline {
                            return;
                        }
                        handler
                            .handle(&accounts[account], Deposit(1))
                            .await
                            .unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    drop(handler);
    drop(store);
    let written: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        written as u64, done,
        "every command acknowledged wrote one event"
    );
    remove(&path);
    (done, secs)
}

// --- W4: live latency --------------------------------------------------------------------------

/// Appends per second of the W4 writer.
const W4_RATE: u64 = 500;

/// One writer appending 1-event batches at `W4_RATE` for `duration`, one live `subscribe_all`
/// subscriber on the same store. Returns the achieved rate, the events, and the latencies from
/// each append's call and from its return to the event's delivery.
async fn live_latency(
    sync: Synchronous,
    duration: Duration,
) -> (f64, usize, Vec<Duration>, Vec<Duration>) {
    let path = temp("live");
    let store = open_store(&path, sync);
    let total = (W4_RATE as f64 * duration.as_secs_f64()) as usize;
    let (caught_up_tx, caught_up_rx) = tokio::sync::oneshot::channel();
    let subscriber = tokio::spawn({
        let store = store.clone();
        async move {
            let mut subscription =
                Box::pin(store.subscribe_all(None, &decider_core::EventFilter::all()));
            let mut caught_up = Some(caught_up_tx);
            let mut delivered = Vec::with_capacity(total);
            while delivered.len() < total {
                let message = tokio::time::timeout(
                    Duration::from_secs(30),
                    futures::StreamExt::next(&mut subscription),
                )
                .await
                .expect("an event within 30 s")
                .expect("the subscription goes on");
                match message.unwrap() {
                    decider_core::SubscriptionMessage::CaughtUp => {
                        if let Some(caught_up) = caught_up.take() {
                            caught_up.send(()).unwrap();
                        }
                    }
                    decider_core::SubscriptionMessage::Event(event) => {
                        assert_eq!(event.revision as usize, delivered.len(), "in order, no gap");
                        delivered.push(Instant::now());
                    }
                }
            }
            delivered
        }
    });
    caught_up_rx.await.unwrap();

    let stream = StreamId::new("live").unwrap();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / W4_RATE));
    let (mut called, mut returned) = (Vec::with_capacity(total), Vec::with_capacity(total));
    let started = Instant::now();
    for revision in 0..total as u64 {
        tick.tick().await;
        let expected = ExpectedVersion::from_last_revision(revision.checked_sub(1));
        let event = EventData::json("Deposited", r#"{"amount":10}"#);
        called.push(Instant::now());
        store.append(&stream, expected, vec![event]).await.unwrap();
        returned.push(Instant::now());
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    let delivered = subscriber.await.unwrap();
    // An event may reach the subscriber before its append's reply reaches the writer: zero.
    let since = |from: &[Instant]| -> Vec<Duration> {
        delivered
            .iter()
            .zip(from)
            .map(|(delivered, from)| delivered.saturating_duration_since(*from))
            .collect()
    };
    let (from_call, from_return) = (since(&called), since(&returned));
    drop(store);
    remove(&path);
    (achieved, total, from_call, from_return)
}

/// `p50=… p99=… max=…` in milliseconds.
fn percentiles(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    let ms = |share: f64| {
        let index = ((latencies.len() - 1) as f64 * share).round() as usize;
        latencies[index].as_secs_f64() * 1e3
    };
    format!(
        "p50={:.2}ms p99={:.2}ms max={:.2}ms",
        ms(0.5),
        ms(0.99),
        ms(1.0)
    )
}

// --- W5: projection ----------------------------------------------------------------------------

/// Streams the W5 events are spread over: the rows of the counter table.
const W5_STREAMS: usize = 1_000;

/// Events per batch, for the runner and for the raw baseline alike.
const W5_BATCH: usize = 1_000;

const COUNTER_TABLES: &str = "
    CREATE TABLE counters (stream_id TEXT PRIMARY KEY, n INTEGER NOT NULL) STRICT;
    CREATE TABLE raw_counters (stream_id TEXT PRIMARY KEY, n INTEGER NOT NULL) STRICT;";

const COUNTERS_AGREEING: &str = "SELECT count(*) FROM counters c JOIN raw_counters r \
     USING (stream_id) WHERE c.n = r.n";

/// Adds the events of a batch to a counter per stream in `table`: one upsert per stream of the
/// batch, in the caller's transaction. Both sides of W5 write through it.
fn add_counts<'a>(
    transaction: &rusqlite::Transaction<'_>,
    table: &str,
    streams: impl Iterator<Item = &'a str>,
) -> rusqlite::Result<()> {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for stream in streams {
        *counts.entry(stream).or_default() += 1;
    }
    let mut upsert = transaction.prepare_cached(&format!(
        "INSERT INTO {table} (stream_id, n) VALUES (?1, ?2) \
         ON CONFLICT (stream_id) DO UPDATE SET n = n + excluded.n"
    ))?;
    for (stream, n) in counts {
        upsert.execute(rusqlite::params![stream, n])?;
    }
    Ok(())
}

/// The projection: a counter per stream in `counters`; it counts the batches it is handed.
#[derive(Default)]
struct Counters {
    batches: AtomicU64,
}

impl SqliteTransactionalHandler for Counters {
    fn handle(
        &self,
        transaction: &rusqlite::Transaction<'_>,
        batch: &[RecordedEvent],
    ) -> Result<(), SinkError> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        add_counts(
            transaction,
            "counters",
            batch.iter().map(|event| event.stream.as_str()),
        )
        .map_err(handle_error)
    }
}

/// W5 over `events` events: the projection runner catching up through the exactly-once sink,
/// then raw rusqlite reading the same events in pages of `W5_BATCH` and upserting the same
/// counters, a transaction a page. Returns both rates and the batches the runner handed over.
async fn projection(sync: Synchronous, events: usize) -> (f64, f64, u64) {
    let path = temp("projection");
    let store = open_store(&path, sync);
    store
        .write(|connection| connection.execute_batch(COUNTER_TABLES))
        .await
        .unwrap()
        .unwrap();
    // 100-event appends spread over the streams, four writers sharing group commits.
    let appends = events / 100;
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for append in (writer..appends).step_by(4) {
                    let stream = StreamId::new(format!("account-{}", append % W5_STREAMS));
                    let batch = (0..100)
                        .map(|_| EventData::json("Deposited", r#"{"amount":10}"#))
                        .collect();
                    store
                        .append(&stream.unwrap(), ExpectedVersion::Any, batch)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let events = appends * 100;

    let options = RunnerOptions {
        buffer: 4 * W5_BATCH,
        max_batch: W5_BATCH,
        max_linger: Duration::from_millis(5),
        ..RunnerOptions::default()
    };
    let counters = Arc::new(Counters::default());
    let runner = Arc::new(
        ProjectionRunner::new(
            store.clone(),
            Projection::new("counters"),
            SqliteTransactionalSink::new(store.clone(), counters.clone()),
        )
        .with_options(options),
    );
    let status = runner.status_handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let run = tokio::spawn({
        let runner = runner.clone();
        async move {
            runner
                .run(async {
                    stopped.await.ok();
                })
                .await
        }
    });
    while status.get().handled < events as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let store_rate = events as f64 / started.elapsed().as_secs_f64();
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();

    let connection = raw_connection(&path, sync);
    let mut page = connection
        .prepare(&format!(
            "SELECT seq, stream_id FROM events WHERE seq > ?1 ORDER BY seq LIMIT {W5_BATCH}"
        ))
        .unwrap();
    let (mut after, mut read) = (0i64, 0usize);
    let started = Instant::now();
    loop {
        let rows: Vec<(i64, String)> = page
            .query_map([after], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let Some(last) = rows.last() else { break };
        after = last.0;
        read += rows.len();
        let transaction = connection.unchecked_transaction().unwrap();
        add_counts(
            &transaction,
            "raw_counters",
            rows.iter().map(|(_, stream)| stream.as_str()),
        )
        .unwrap();
        transaction.commit().unwrap();
    }
    let raw_rate = read as f64 / started.elapsed().as_secs_f64();
    assert_eq!(read, events);
    let agreeing: i64 = connection
        .query_row(COUNTERS_AGREEING, [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        agreeing as usize,
        W5_STREAMS.min(appends),
        "the projection and the raw run disagree"
    );
    drop(page);
    drop(connection);
    drop(runner);
    drop(store);
    remove(&path);
    (
        store_rate,
        raw_rate,
        counters.batches.load(Ordering::Relaxed),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sync = if args.iter().any(|a| a == "normal") {
        Synchronous::Normal
    } else {
        Synchronous::Full
    };
    let secs = args
        .iter()
        .find_map(|a| a.strip_prefix("secs="))
        .map_or(3.0, |s| s.parse().unwrap());
    let secs = Duration::from_secs_f64(secs);
    let events: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("events="))
        .map_or(200_000, |e| e.parse().unwrap());
    let only: Option<usize> = args
        .iter()
        .find_map(|a| a.strip_prefix("clients="))
        .map(|c| c.parse().unwrap());
    let named: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| ["W1", "W2", "W3", "W4", "W5"].contains(a))
        .collect();
    // Naming no workload runs them all; `clients=N` alone runs only W1 and W2 at N clients.
    let runs = |workload: &str| {
        named.contains(&workload)
            || (named.is_empty() && (only.is_none() || ["W1", "W2"].contains(&workload)))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let label = match sync {
        Synchronous::Full => "full",
        Synchronous::Normal => "normal",
    };
    if runs("W1") {
        for workload in W1_RUNS {
            if only.is_some_and(|only| only != workload.clients) {
                continue;
            }
            // The raw baseline before and after the store's runs, the better kept.
            let mut raw = raw_run(sync, workload.clients, 1, secs).rate;
            let mut lines = Vec::new();
            for mode in Mode::ALL {
                // Runs shorter than `W1_AT_LEAST` are repeated on fresh files and added up.
                let (mut done, mut took) = (0, 0.0);
                while took < W1_AT_LEAST.as_secs_f64() {
                    let (commands, secs) = runtime.block_on(commands(sync, workload, mode));
                    (done, took) = (done + commands, took + secs);
                }
                lines.push((mode, (done, took)));
            }
            raw = raw.max(raw_run(sync, workload.clients, 1, secs).rate);
            for (mode, (commands, secs)) in lines {
                let rate = commands as f64 / secs;
                println!(
                    "W1 sqlite synchronous={label} clients={} accounts={} deposits={} mode={} \
                     commands={commands} secs={secs:.2} commands/s={rate:.0} \
                     raw_insert/s={raw:.0} ratio={:.2}",
                    workload.clients,
                    workload.accounts,
                    workload.deposits,
                    mode.name(),
                    rate / raw
                );
            }
        }
    }
    if runs("W2") {
        for (clients, events) in [(1, 1), (4, 1), (16, 1), (4, 100)] {
            if only.is_some_and(|only| only != clients) {
                continue;
            }
            // Two rounds, alternating, the better of each kept: on a shared machine a
            // neighbour's burst should not decide the ratio.
            let (mut store, mut raw) = (Run::default(), Run::default());
            for _ in 0..2 {
                store = store.best(runtime.block_on(store_run(sync, clients, events, secs)));
                raw = raw.best(raw_run(sync, clients, events, secs));
            }
            let micros = |run: Run| run.median.as_secs_f64() * 1e6;
            println!(
                "W2 sqlite synchronous={label} clients={clients} events_per_append={events} \
                 secs={:.1} appends/s={:.0} raw_insert/s={:.0} ratio={:.2} \
                 median_us={:.0} raw_median_us={:.0}",
                secs.as_secs_f64(),
                store.rate,
                raw.rate,
                store.rate / raw.rate,
                micros(store),
                micros(raw),
            );
        }
    }
    if runs("W3") {
        let (store, raw) = runtime.block_on(catch_up(sync, events));
        println!(
            "W3 sqlite synchronous={label} events={events} events/s={store:.0} \
             raw_select/s={raw:.0} ratio={:.2}",
            store / raw
        );
    }
    if runs("W4") {
        let duration = Duration::from_secs(10);
        let (achieved, total, from_call, from_return) =
            runtime.block_on(live_latency(sync, duration));
        println!(
            "W4 sqlite synchronous={label} rate={W4_RATE}/s secs={} achieved={achieved:.0}/s \
             events={total} latency_from_append_call {} latency_from_append_return {}",
            duration.as_secs(),
            percentiles(from_call),
            percentiles(from_return)
        );
    }
    if runs("W5") {
        let (store, raw, batches) = runtime.block_on(projection(sync, events));
        println!(
            "W5 sqlite synchronous={label} events={} batch={W5_BATCH} batches={batches} \
             events/s={store:.0} raw_upsert/s={raw:.0} ratio={:.2}",
            events / 100 * 100,
            store / raw
        );
    }
}
