//! W5 (docs/benchmarks.md): a projection catching up over 1M events into a per-stream counter table
//! through `PgTransactionalSink`, beside the raw database doing the same work in the same run —
//! keyset-paged reads of the same events and a batched `INSERT … ON CONFLICT DO UPDATE` of the
//! same rows, one transaction per batch.
//!
//! Then the same projection partitioned (`PartitionedRunner`) into 1, 2 and 4 partitions, first
//! all in this process, then shared by two child processes (this binary, run with `--child`),
//! each into a counter table of its own.
//!
//! `cargo run --release -p decider-store-postgres --example w5` (DATABASE_URL, default
//! `postgres://postgres@127.0.0.1:5432/test`; BENCH_SCALE=0.1 for a tenth of the events).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark: fail loudly, print

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use decider_core::EventFilter;
use decider_core::projection::{
    ClaimOptions, Partition, PartitionedRunner, Projection, ProjectionRunner, RunnerOptions,
    SinkError,
};
use decider_core::{EventData, EventStore, ExpectedVersion, RecordedEvent, StreamId};
use decider_store_postgres::{
    PgTransactionalSink, PostgresOptions, PostgresStore, TransactionalHandler, handle_error,
};
use futures::StreamExt;

const STREAMS: usize = 1_000;
const BATCH: usize = 1_000;

/// Adds each batch's events to a counter per stream.
struct Counters {
    upsert: String,
}

impl TransactionalHandler for Counters {
    async fn handle(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        batch: &[RecordedEvent],
    ) -> Result<(), SinkError> {
        let (streams, counts) = tally(batch.iter().map(|e| e.stream.as_str()));
        transaction
            .execute(&self.upsert, &[&streams, &counts])
            .await
            .map_err(handle_error)?;
        Ok(())
    }
}

fn tally<'a>(streams: impl Iterator<Item = &'a str>) -> (Vec<String>, Vec<i64>) {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for stream in streams {
        *counts.entry(stream).or_default() += 1;
    }
    counts.into_iter().map(|(s, n)| (s.to_owned(), n)).unzip()
}

fn upsert(table: &str) -> String {
    format!(
        "INSERT INTO {table} (stream_id, n) SELECT * FROM unnest($1::text[], $2::bigint[]) \
         ON CONFLICT (stream_id) DO UPDATE SET n = {table}.n + excluded.n"
    )
}

fn options() -> RunnerOptions {
    RunnerOptions {
        buffer: 4_096,
        max_batch: BATCH,
        max_linger: Duration::from_millis(5),
        ..RunnerOptions::default()
    }
}

/// A partitioned counter projection of `count` partitions into `counters_p<count>`, this
/// process running at most `limit` of them, until the table counts `events`.
async fn run_partitioned(store: &PostgresStore, count: u32, limit: usize, events: i64) {
    let schema = store.schema().to_owned();
    let table = format!("\"{schema}\".counters_p{count}");
    let runner = PartitionedRunner::new(
        store.clone(),
        Projection::new(format!("counters-p{count}")),
        count,
        PgTransactionalSink::new(
            store.clone(),
            Counters {
                upsert: upsert(&table),
            },
        ),
    )
    .unwrap()
    .with_options(options())
    .with_lease(store.leases().unwrap())
    .with_claims(ClaimOptions {
        limit,
        claim_interval: Duration::from_millis(50),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let statuses = runner.status_handles();
    let watch = async {
        if std::env::var("W5_TRACE").is_ok() {
            let started = Instant::now();
            let report = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let line: Vec<String> = statuses
                        .iter()
                        .map(|s| {
                            let s = s.get();
                            format!("{}:{:?}:{}", s.projection, s.state, s.handled)
                        })
                        .collect();
                    println!(
                        "# {:.1}s {}",
                        started.elapsed().as_secs_f64(),
                        line.join(" ")
                    );
                }
            };
            tokio::select! { () = wait_for_count(store, &table, events) => {}, () = report => {} }
        } else {
            wait_for_count(store, &table, events).await;
        }
        stop.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(
        runner.run(async {
            stopped.await.ok();
        }),
        watch
    );
    result.unwrap();
}

async fn wait_for_count(store: &PostgresStore, table: &str, events: i64) {
    let client = store.pool().get().await.unwrap();
    let sum = format!("SELECT coalesce(sum(n), 0)::bigint FROM {table}");
    while client.query_one(&sum, &[]).await.unwrap().get::<_, i64>(0) < events {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `--child <schema> <count> <limit> <events>`: one of the two processes of a run.
async fn child(url: &str, args: &[String]) {
    let store = PostgresStore::connect_with(
        url,
        PostgresOptions {
            schema: args[0].clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (count, limit, events) = (
        args[1].parse().unwrap(),
        args[2].parse().unwrap(),
        args[3].parse().unwrap(),
    );
    run_partitioned(&store, count, limit, events).await;
}

/// Runs `count` partitions in this process or in two children; returns the seconds until the
/// counter table has counted every event.
async fn partitioned(
    store: &PostgresStore,
    url: &str,
    count: u32,
    processes: u32,
    events: i64,
) -> f64 {
    let schema = store.schema().to_owned();
    let table = format!("\"{schema}\".counters_p{count}");
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (stream_id text PRIMARY KEY, n bigint NOT NULL); \
             DELETE FROM \"{schema}\".checkpoints WHERE projection LIKE 'counters-p%'"
        ))
        .await
        .unwrap();
    drop(client);
    // Build the partition index before timing (the first partitioned read would start it).
    if count > 1 {
        store.ensure_partition_index(count).await.unwrap();
    }
    // How much less a partition reads: its events alone, through the index.
    if count > 1 && processes == 1 {
        let started = Instant::now();
        let filter = EventFilter::all().with_partition(Partition::new(0, count).unwrap());
        let read = store.read_all(None, None, &filter).count().await;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "# read of partition 0/{count} alone: {read} events in {secs:.2}s ({:.0} events/s)",
            read as f64 / secs
        );
    }
    let started = Instant::now();
    if processes == 1 {
        run_partitioned(store, count, count as usize, events).await;
    } else {
        let limit = (count as usize).div_ceil(processes as usize);
        let children: Vec<_> = (0..processes)
            .map(|_| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--child",
                        &schema,
                        &count.to_string(),
                        &limit.to_string(),
                        &events.to_string(),
                    ])
                    .env("DATABASE_URL", url)
                    .spawn()
                    .unwrap()
            })
            .collect();
        wait_for_count(store, &table, events).await;
        for mut child in children {
            assert!(child.wait().unwrap().success(), "a child failed");
        }
    }
    started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".to_owned());
    if args.first().map(String::as_str) == Some("--child") {
        return child(&url, &args[1..]).await;
    }
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let total = ((1_000_000.0 * scale) as usize).max(BATCH);
    // Plaintext by default, like the raw baseline (which connects without TLS).
    let schema = format!("decider_w5_{}", uuid::Uuid::new_v4().simple());
    let store = PostgresStore::connect_with(
        &url,
        PostgresOptions {
            schema: schema.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!("cannot reach PostgreSQL at {url}: {e}; start it or set DATABASE_URL")
    });
    store.migrate().await.unwrap();
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{schema}\".counters (stream_id text PRIMARY KEY, n bigint NOT NULL);
             CREATE TABLE \"{schema}\".raw_counters (stream_id text PRIMARY KEY, n bigint NOT NULL);"
        ))
        .await
        .unwrap();

    // Fill: 1,000-event appends spread over 1,000 streams, four writers.
    let started = Instant::now();
    let appends = total / BATCH;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for a in (w..appends).step_by(4) {
                    let stream = StreamId::new(format!("account-{}", a % STREAMS)).unwrap();
                    let events = (0..BATCH)
                        .map(|n| EventData::json("Deposited", format!(r#"{{"amount":{n}}}"#)))
                        .collect();
                    store
                        .append(&stream, ExpectedVersion::Any, events)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let events = appends * BATCH;
    println!(
        "# filled {events} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // The projection.
    let counters = Counters {
        upsert: upsert(&format!("\"{schema}\".counters")),
    };
    let options = options();
    let runner = Arc::new(
        ProjectionRunner::new(
            store.clone(),
            Projection::new("counters"),
            PgTransactionalSink::new(store.clone(), counters),
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
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let projection_secs = started.elapsed().as_secs_f64();
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();

    // The raw database: the same pages, the same upsert, one transaction per page.
    let raw_upsert = upsert(&format!("\"{schema}\".raw_counters"));
    let page = format!(
        "SELECT transaction_id::text::bigint AS transaction_number, global_position, stream_id \
         FROM \"{schema}\".events \
         WHERE (transaction_id, global_position) > ($1::bigint::text::xid8, $2) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY transaction_id, global_position LIMIT {BATCH}"
    );
    let mut client = store.pool().get().await.unwrap();
    let (mut after_transaction, mut after_global, mut read) = (0i64, 0i64, 0usize);
    let started = Instant::now();
    loop {
        let rows = client
            .query(&page, &[&after_transaction, &after_global])
            .await
            .unwrap();
        let Some(last) = rows.last() else { break };
        (after_transaction, after_global) = (last.get(0), last.get(1));
        read += rows.len();
        let (streams, counts) = tally(rows.iter().map(|row| row.get::<_, &str>(2)));
        let transaction = client.transaction().await.unwrap();
        transaction
            .execute(&raw_upsert, &[&streams, &counts])
            .await
            .unwrap();
        transaction.commit().await.unwrap();
    }
    let raw_secs = started.elapsed().as_secs_f64();
    assert_eq!(read, events);

    let check = format!(
        "SELECT count(*) FROM \"{schema}\".counters c JOIN \"{schema}\".raw_counters r USING (stream_id) WHERE c.n = r.n"
    );
    let agreeing: i64 = client.query_one(&check, &[]).await.unwrap().get(0);
    assert_eq!(
        agreeing as usize,
        STREAMS.min(appends),
        "the projection and the raw run disagree"
    );
    drop(client);

    let rate = events as f64 / projection_secs;
    let raw = events as f64 / raw_secs;
    println!(
        "W5 postgres events={events} batch={BATCH} secs={projection_secs:.2} events/s={rate:.0} \
         raw_upsert/s={raw:.0} ratio={:.2}",
        rate / raw
    );
    for processes in [1, 2] {
        for count in [1, 2, 4] {
            let secs = partitioned(&store, &url, count, processes, events as i64).await;
            let rate = events as f64 / secs;
            println!(
                "W5 postgres partitions={count} processes={processes} events={events} secs={secs:.2} \
                 events/s={rate:.0} raw_upsert/s={raw:.0} ratio={:.2}",
                rate / raw
            );
        }
    }
    store.drop_schema().await.unwrap();
}
