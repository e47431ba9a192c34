//! The PostgreSQL store under workloads W2–W4 of docs/benchmarks.md, each line beside the raw database
//! doing the same work in the same run.
//!
//! ```text
//! cargo run --release -p decider-store-postgres --example bench            # about 2 minutes
//! BENCH_SCALE=0.1 cargo run --release -p decider-store-postgres --example bench
//! cargo run --release -p decider-store-postgres --example bench -- 0.1     # the same
//! ```
//!
//! The database is `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`). Every run
//! works in a schema of its own, `decider_bench_<uuid>`, holding the store's tables and the raw
//! baseline's `raw_events` (the same columns, defaults, keys and indexes as the store's `events`),
//! and drops it at the end, also when a measurement fails. Both sides share the server and its
//! session defaults, so they commit with the same `synchronous_commit`, printed in the header.
//!
//! Throughput runs are time-boxed and interleaved store, raw, raw, store, so that drift during the
//! run (autovacuum, checkpoints, a noisy neighbour) weighs on both sides alike; each W2 line ends
//! with the rate of each of the four rounds. Each W2 run starts from empty tables on both sides.
//! `BENCH_WORKLOADS=W3,W4` runs only those workloads.
// A benchmark that fails should stop loudly, and printing its figures is what it is for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::error::Error;
use std::future::Future;
use std::pin::pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use decider_core::{
    EventData, EventFilter, EventStore, ExpectedVersion, Position, StreamId, SubscriptionMessage,
};
use decider_store_postgres::{PostgresOptions, PostgresStore};
use futures::StreamExt;
use tokio_postgres::NoTls;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

/// Plaintext, like the raw baseline, which connects without TLS: set `sslmode=disable` in your
/// own `DATABASE_URL` too, or the store pays for TLS and the raw side does not.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

/// Connections in the store's pool and in the raw baseline's: the most clients of any run.
const POOL_SIZE: usize = 16;

/// Every event of the benchmark carries this payload and empty metadata.
const PAYLOAD: &[u8] = br#"{"amount":1}"#;
const EMPTY_METADATA: &[u8] = b"{}";

/// The raw baseline's table: the store's `events` table (migration 1), column for column.
const RAW_TABLE: &str = r#"
CREATE TABLE {schema}.raw_events (
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text NOT NULL,
    category        text NOT NULL GENERATED ALWAYS AS (split_part(stream_id, '-', 1)) STORED,
    revision        bigint NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    data            jsonb,
    binary_data     bytea,
    metadata        jsonb NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, revision),
    UNIQUE (event_id),
    CHECK ((data IS NULL) <> (binary_data IS NULL))
);
CREATE INDEX raw_events_global_order ON {schema}.raw_events (transaction_id, global_position);
"#;

const RAW_INSERT_ONE: &str = "INSERT INTO {schema}.raw_events \
     (stream_id, revision, event_id, event_type, data, metadata) VALUES ($1, $2, $3, $4, $5, $6)";

const RAW_INSERT_BATCH: &str = "INSERT INTO {schema}.raw_events \
     (stream_id, revision, event_id, event_type, data, metadata) \
     SELECT $1, b.revision, b.id, b.type, b.data, b.metadata \
     FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[]) \
         AS b(revision, id, type, data, metadata)";

/// One page of the raw table in global order: the columns the store's reads fetch. The ORDER BY
/// names the table's columns: a bare `transaction_id` would mean the output column of that name,
/// the `bigint` cast, which no index provides, and every page would sort the rest of the table.
const RAW_PAGE: &str = "SELECT stream_id, revision, transaction_id::text::bigint, global_position, \
     event_id, event_type, data, binary_data, metadata, recorded_at FROM {schema}.raw_events e \
     WHERE (transaction_id, global_position) > ($1::bigint::text::xid8, $2) \
     ORDER BY e.transaction_id, e.global_position LIMIT 1000";

/// Copies the store's log into the raw table, keeping positions and physical order, so that both
/// reads of W3 walk the same data laid out alike.
const RAW_COPY_LOG: &str = "INSERT INTO {schema}.raw_events (global_position, transaction_id, \
     stream_id, revision, event_id, event_type, data, binary_data, metadata, recorded_at) \
     OVERRIDING SYSTEM VALUE \
     SELECT global_position, transaction_id, stream_id, revision, event_id, event_type, data, \
         binary_data, metadata, recorded_at \
     FROM {schema}.events ORDER BY ctid";

const EMPTY_TABLES: &str = "TRUNCATE {schema}.events, {schema}.raw_events RESTART IDENTITY";

const SERVER_SETTINGS: &str = "SELECT current_setting('server_version'), \
     current_setting('synchronous_commit'), current_setting('fsync'), \
     current_setting('wal_sync_method'), current_setting('shared_buffers')";

/// JSON text sent as `jsonb` in binary format (a version byte, then the text), as the store
/// sends it.
#[derive(Debug, Clone, Copy)]
struct Jsonb(&'static [u8]);

impl ToSql for Jsonb {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

/// A column's bytes as they arrive, for any type: what a raw reader gets without decoding.
struct RawValue<'a>(&'a [u8]);

impl<'a> FromSql<'a> for RawValue<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Self(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// What every workload needs: the store, the raw pool, the schema and the run's scale.
#[derive(Clone)]
struct Bench {
    url: String,
    scale: f64,
    store: PostgresStore,
    raw: Pool,
}

impl Bench {
    /// Connects; touches no schema yet, so that a failure from here on can drop it.
    async fn connect(url: String, scale: f64) -> Self {
        let schema = format!("decider_bench_{}", Uuid::new_v4().simple());
        let store = PostgresStore::connect_with(
            &url,
            PostgresOptions {
                schema,
                pool_size: POOL_SIZE,
                ..PostgresOptions::default()
            },
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "cannot reach PostgreSQL at {url}: {error}\n\
                 Start the server (e.g. `pg_ctlcluster 15 main start`) or set DATABASE_URL to a \
                 database this benchmark may create and drop schemas in \
                 (default {DEFAULT_DATABASE_URL})."
            )
        });
        let config = tokio_postgres::Config::from_str(&url).expect("the store accepted this URL");
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
            .expect("a pool with a runtime and a size builds");
        Self {
            url,
            scale,
            store,
            raw,
        }
    }

    /// Creates the store's schema and the raw table beside its tables.
    async fn create_tables(&self) {
        self.store
            .migrate()
            .await
            .unwrap_or_else(|error| panic!("cannot create the store's schema: {error}"));
        self.raw_batch(RAW_TABLE).await;
    }

    fn sql(&self, template: &str) -> String {
        template.replace("{schema}", &format!("\"{}\"", self.store.schema()))
    }

    async fn raw_batch(&self, template: &str) {
        let sql = self.sql(template);
        let client = self.raw.get().await.expect("a raw connection");
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|error| panic!("{error}: {sql}"));
    }

    /// Prints the server, its durability settings, and checks both sides run with the same.
    async fn print_header(&self) {
        let settings = |client: deadpool_postgres::Object| async move {
            let row = client.query_one(SERVER_SETTINGS, &[]).await.unwrap();
            (0..5).map(|i| row.get(i)).collect::<Vec<String>>()
        };
        let store_side = settings(self.store.pool().get().await.unwrap()).await;
        let raw_side = settings(self.raw.get().await.unwrap()).await;
        assert_eq!(store_side, raw_side, "both sides must commit alike");
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "# postgres server=\"{}\" synchronous_commit={} fsync={} wal_sync_method={} \
             shared_buffers={} pool={POOL_SIZE} client_cores={cores} scale={:.2} schema={}",
            store_side[0],
            store_side[1],
            store_side[2],
            store_side[3],
            store_side[4],
            self.scale,
            self.store.schema()
        );
    }

    fn scaled(&self, full: Duration) -> Duration {
        full.mul_f64(self.scale).max(Duration::from_millis(200))
    }
}

/// Operations done and the time they took.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    operations: u64,
    secs: f64,
}

impl Tally {
    fn add(self, other: Self) -> Self {
        Self {
            operations: self.operations + other.operations,
            secs: self.secs + other.secs,
        }
    }

    fn rate(self) -> f64 {
        self.operations as f64 / self.secs
    }
}

/// Which operation of which run this is: names it a stream of its own.
#[derive(Debug, Clone, Copy)]
struct Turn {
    round: usize,
    client: usize,
    sequence: u64,
}

impl Turn {
    fn stream(self) -> String {
        format!("bench-r{}c{}n{}", self.round, self.client, self.sequence)
    }
}

/// Runs `operation` from `clients` tasks, back to back, until `duration` has passed.
async fn run_for<F, Fut>(round: usize, clients: usize, duration: Duration, operation: F) -> Tally
where
    F: Fn(Turn) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let operation = operation.clone();
            tokio::spawn(async move {
                let mut sequence = 0;
                while Instant::now() < deadline {
                    operation(Turn {
                        round,
                        client,
                        sequence,
                    })
                    .await;
                    sequence += 1;
                }
                sequence
            })
        })
        .collect();
    let mut operations = 0;
    for task in tasks {
        operations += task.await.unwrap();
    }
    Tally {
        operations,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// The four rounds of an interleaved run: store, raw, raw, store.
#[derive(Debug, Clone, Copy)]
struct Rounds([Tally; 4]);

impl Rounds {
    fn store(&self) -> Tally {
        self.0[0].add(self.0[3])
    }

    fn raw(&self) -> Tally {
        self.0[1].add(self.0[2])
    }

    /// Operations per second of each round, in the order they ran: a store that slows down as
    /// its tables grow shows here.
    fn rates(&self, per_operation: f64) -> String {
        let rates: Vec<String> = self
            .0
            .iter()
            .map(|round| format!("{:.0}", round.rate() * per_operation))
            .collect();
        rates.join(",")
    }
}

/// Store, raw, raw, store, each for half of `duration`.
async fn interleaved<S, SF, R, RF>(
    clients: usize,
    duration: Duration,
    store_op: S,
    raw_op: R,
) -> Rounds
where
    S: Fn(Turn) -> SF + Clone + Send + 'static,
    SF: Future<Output = ()> + Send,
    R: Fn(Turn) -> RF + Clone + Send + 'static,
    RF: Future<Output = ()> + Send,
{
    let half = duration / 2;
    Rounds([
        run_for(0, clients, half, store_op.clone()).await,
        run_for(1, clients, half, raw_op.clone()).await,
        run_for(2, clients, half, raw_op).await,
        run_for(3, clients, half, store_op).await,
    ])
}

fn events(batch: usize) -> Vec<EventData> {
    (0..batch)
        .map(|_| EventData::json("Deposited", Bytes::from_static(PAYLOAD)))
        .collect()
}

/// W2: `batch`-event appends, each to a new stream, from `clients` tasks, beside one INSERT per
/// append (single-row, or one multi-row `INSERT … SELECT unnest(…)`), autocommit.
async fn w2(bench: &Bench, clients: usize, batch: usize) {
    bench.raw_batch(EMPTY_TABLES).await;
    let store_op = {
        let store = bench.store.clone();
        move |turn: Turn| {
            let store = store.clone();
            async move {
                let stream = StreamId::new(turn.stream()).unwrap();
                store
                    .append(&stream, ExpectedVersion::NoStream, events(batch))
                    .await
                    .unwrap();
            }
        }
    };
    let raw_op = {
        let pool = bench.raw.clone();
        let insert = Arc::new(bench.sql(if batch == 1 {
            RAW_INSERT_ONE
        } else {
            RAW_INSERT_BATCH
        }));
        move |turn: Turn| {
            let (pool, insert) = (pool.clone(), insert.clone());
            async move {
                let client = pool.get().await.unwrap();
                let statement = client.prepare_cached(&insert).await.unwrap();
                let stream = turn.stream();
                let written = if batch == 1 {
                    let params: [&(dyn ToSql + Sync); 6] = [
                        &stream,
                        &0_i64,
                        &Uuid::new_v4(),
                        &"Deposited",
                        &Jsonb(PAYLOAD),
                        &Jsonb(EMPTY_METADATA),
                    ];
                    client.execute(&statement, &params).await
                } else {
                    let revisions: Vec<i64> = (0..batch as i64).collect();
                    let ids: Vec<Uuid> = (0..batch).map(|_| Uuid::new_v4()).collect();
                    let types = vec!["Deposited"; batch];
                    let data = vec![Jsonb(PAYLOAD); batch];
                    let metadata = vec![Jsonb(EMPTY_METADATA); batch];
                    let params: [&(dyn ToSql + Sync); 6] =
                        [&stream, &revisions, &ids, &types, &data, &metadata];
                    client.execute(&statement, &params).await
                };
                assert_eq!(written.unwrap(), batch as u64);
            }
        }
    };
    let duration = bench.scaled(Duration::from_secs(6));
    let rounds = interleaved(clients, duration, store_op, raw_op).await;
    let (store, raw) = (rounds.store(), rounds.raw());
    let events_per_sec = store.rate() * batch as f64;
    let raw_per_sec = raw.rate() * batch as f64;
    println!(
        "W2 postgres clients={clients} batch={batch} appends={} secs={:.3} events/s={:.0} \
         raw_inserts={} raw_secs={:.3} raw_insert/s={:.0} ratio={:.2} \
         rounds_store,raw,raw,store_events/s={}",
        store.operations,
        store.secs,
        events_per_sec,
        raw.operations,
        raw.secs,
        raw_per_sec,
        events_per_sec / raw_per_sec,
        rounds.rates(batch as f64)
    );
}

/// W3: a catch-up `subscribe_all` from the start over `total` events until `CaughtUp`, beside
/// keyset-paged `SELECT`s of the same columns in the same order, 1,000 rows a page.
async fn w3(bench: &Bench) {
    const BATCH: usize = 1_000;
    const CLIENTS: usize = 4;
    let appends = ((1_000_000.0 * bench.scale / BATCH as f64).round() as u64).max(1);
    let total = appends * BATCH as u64;
    bench.raw_batch(EMPTY_TABLES).await;

    // Fill through the store's own append, so the log is laid out as appends lay it out.
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS as u64)
        .map(|client| {
            let store = bench.store.clone();
            tokio::spawn(async move {
                for sequence in (client..appends).step_by(CLIENTS) {
                    let stream = StreamId::new(format!("bench-fill{sequence}")).unwrap();
                    store
                        .append(&stream, ExpectedVersion::NoStream, events(BATCH))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let fill_secs = start.elapsed().as_secs_f64();
    bench.raw_batch(RAW_COPY_LOG).await;
    for table in ["events", "raw_events"] {
        bench
            .raw_batch(&format!("VACUUM (ANALYZE) {{schema}}.{table}"))
            .await;
    }
    println!(
        "W3 fill postgres clients={CLIENTS} batch={BATCH} events={total} secs={fill_secs:.3} \
         events/s={:.0}",
        total as f64 / fill_secs
    );

    // Raw first: the fill and the VACUUMs have just read both tables, so both start warm.
    let start = Instant::now();
    let (read, bytes) = raw_read_all(bench).await;
    let raw_secs = start.elapsed().as_secs_f64();
    assert_eq!(read, total, "the raw read saw every event");

    // Bounded, so that a store whose pages get slower as the log grows still ends the run.
    let limit = bench
        .scaled(Duration::from_secs(60))
        .max(Duration::from_secs(5));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let mut subscription = pin!(bench.store.subscribe_all(None, &EventFilter::all()));
    let mut seen = 0_u64;
    let mut last: Option<Position> = None;
    let mut caught_up = false;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, subscription.next()).await {
        match message.unwrap() {
            SubscriptionMessage::Event(event) => {
                assert!(Some(event.position) > last, "positions increase");
                last = Some(event.position);
                seen += 1;
            }
            SubscriptionMessage::CaughtUp => {
                caught_up = true;
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if caught_up {
        assert_eq!(seen, total, "the subscription caught up over every event");
    }

    let rate = seen as f64 / secs;
    let raw = total as f64 / raw_secs;
    let incomplete = if caught_up {
        String::new()
    } else {
        format!(" NOT_CAUGHT_UP_AFTER={:.0}s", limit.as_secs_f64())
    };
    println!(
        "W3 postgres events={seen} page=1000 secs={secs:.3} events/s={rate:.0} \
         raw_events={total} raw_secs={raw_secs:.3} raw_select/s={raw:.0} raw_MB={:.0} \
         ratio={:.2}{incomplete}",
        bytes as f64 / 1e6,
        rate / raw
    );
}

/// Reads the raw table in global order, a page at a time, touching every column; returns the
/// rows and the bytes read.
async fn raw_read_all(bench: &Bench) -> (u64, u64) {
    let client = bench.raw.get().await.unwrap();
    let page = client.prepare_cached(&bench.sql(RAW_PAGE)).await.unwrap();
    let (mut transaction, mut global) = (0_i64, 0_i64);
    let (mut rows_read, mut bytes) = (0_u64, 0_u64);
    loop {
        let rows = client.query(&page, &[&transaction, &global]).await.unwrap();
        let Some(last) = rows.last() else {
            return (rows_read, bytes);
        };
        for row in &rows {
            for column in 0..row.len() {
                let value: Option<RawValue<'_>> = row.get(column);
                bytes += value.map_or(0, |v| v.0.len() as u64);
            }
        }
        rows_read += rows.len() as u64;
        transaction = last.get(2);
        global = last.get(3);
    }
}

/// W4: one writer appending 1-event batches at a steady rate, two live subscribers: one on the
/// writer's store (woken in-process), one on a second store on the same schema, as another
/// process would run it (woken by `LISTEN`/`NOTIFY`).
async fn w4(bench: &Bench) {
    const RATE: u64 = 500;
    let duration = bench.scaled(Duration::from_secs(10));
    let total = ((RATE as f64 * duration.as_secs_f64()) as usize).max(50);
    let writer_store = bench.store.clone();
    let other_store = PostgresStore::connect_with(
        &bench.url,
        PostgresOptions {
            schema: writer_store.schema().to_owned(),
            pool_size: 4,
            ..PostgresOptions::default()
        },
    )
    .await
    .expect("a second store on the same schema");

    // Subscribe after the head: the log may hold millions of events from W3.
    let head = writer_store
        .append(
            &StreamId::new("bench-w4head").unwrap(),
            ExpectedVersion::Any,
            events(1),
        )
        .await
        .unwrap()
        .position;
    let live = StreamId::new("bench-w4live").unwrap();
    let subscribers: Vec<_> = [writer_store.clone(), other_store.clone()]
        .into_iter()
        .map(|store| {
            let (caught_up_tx, caught_up_rx) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(deliveries(store, head, total, caught_up_tx));
            (task, caught_up_rx)
        })
        .collect();
    let mut tasks = Vec::new();
    for (task, caught_up) in subscribers {
        caught_up.await.expect("the subscriber caught up");
        tasks.push(task);
    }

    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut called = Vec::with_capacity(total);
    let mut returned = Vec::with_capacity(total);
    let start = Instant::now();
    for revision in 0..total as u64 {
        tick.tick().await;
        let expected = ExpectedVersion::from_last_revision(revision.checked_sub(1));
        called.push(Instant::now());
        writer_store
            .append(&live, expected, events(1))
            .await
            .unwrap();
        returned.push(Instant::now());
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();

    for (task, name) in tasks.into_iter().zip(["same-store", "other-store"]) {
        let delivered = task.await.unwrap();
        let mut from_call: Vec<Duration> = (0..total)
            .map(|i| delivered[i].saturating_duration_since(called[i]))
            .collect();
        let mut from_return: Vec<Duration> = (0..total)
            .map(|i| delivered[i].saturating_duration_since(returned[i]))
            .collect();
        println!(
            "W4 postgres subscriber={name} rate={RATE}/s achieved={achieved:.0}/s events={total} \
             latency_from_append_call {} latency_from_append_return {}",
            percentiles(&mut from_call),
            percentiles(&mut from_return)
        );
    }
}

/// Follows the log after `head` and returns when each of the first `total` events arrived,
/// indexed by revision.
async fn deliveries(
    store: PostgresStore,
    head: Position,
    total: usize,
    caught_up: tokio::sync::oneshot::Sender<()>,
) -> Vec<Instant> {
    let mut subscription = pin!(store.subscribe_all(Some(head), &EventFilter::all()));
    let mut caught_up = Some(caught_up);
    let mut delivered = Vec::with_capacity(total);
    while delivered.len() < total {
        let message = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .expect("a live event within 30 s")
            .expect("the subscription goes on")
            .unwrap();
        match message {
            SubscriptionMessage::CaughtUp => {
                caught_up.take().unwrap().send(()).unwrap();
            }
            SubscriptionMessage::Event(event) => {
                assert_eq!(event.revision as usize, delivered.len(), "in order, no gap");
                delivered.push(Instant::now());
            }
        }
    }
    delivered
}

fn percentiles(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50={:.2}ms p99={:.2}ms max={:.2}ms",
        ms(at(0.50)),
        ms(at(0.99)),
        ms(at(1.0))
    )
}

async fn workloads(bench: Bench) {
    bench.create_tables().await;
    bench.print_header().await;
    let chosen = std::env::var("BENCH_WORKLOADS").unwrap_or_else(|_| "W2,W3,W4".to_owned());
    let runs = |id: &str| chosen.split(',').any(|c| c.trim().eq_ignore_ascii_case(id));
    if runs("W2") {
        for clients in [1, 4, 16] {
            w2(&bench, clients, 1).await;
        }
        w2(&bench, 4, 100).await;
    }
    if runs("W3") {
        w3(&bench).await;
    }
    if runs("W4") {
        w4(&bench).await;
    }
}

/// The scale of the run: the first argument or `BENCH_SCALE`, default 1.
fn scale() -> f64 {
    let given = std::env::args()
        .nth(1)
        .filter(|arg| arg != "--bench")
        .or_else(|| std::env::var("BENCH_SCALE").ok());
    let Some(text) = given else { return 1.0 };
    match text.parse::<f64>() {
        Ok(scale) if scale > 0.0 && scale <= 10.0 => scale,
        _ => panic!("the scale must be a number in (0, 10], e.g. BENCH_SCALE=0.1; got {text:?}"),
    }
}

fn main() {
    let scale = scale();
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bench = Bench::connect(url, scale).await;
        let outcome = tokio::spawn(workloads(bench.clone())).await;
        // Drop the schema whatever happened, then report the failure if there was one.
        if let Err(error) = bench.store.drop_schema().await {
            println!("# could not drop schema {}: {error}", bench.store.schema());
        }
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
    });
}
