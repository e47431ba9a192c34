//! W2 (BENCHMARKS.md) on SQLite, and W3 over 200k events: appends to distinct streams through `SqliteStore`, beside raw
//! rusqlite doing the same INSERTs in the same file settings (WAL, the same `synchronous`), one
//! transaction per append on one connection shared by the raw clients (SQLite has one writer
//! anyway). Each measurement runs twice, alternating with its baseline, and keeps the better.
//!
//! `cargo run --release -p decider-store-sqlite --example bench [-- normal] [secs=3] [clients=N]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use decider_core::{EventData, EventStore, ExpectedVersion, StreamId};
use decider_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};

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

/// Appends of `events` events by `clients` clients, each to streams of its own, for `secs`.
async fn store_run(sync: Synchronous, clients: usize, events: usize, secs: Duration) -> f64 {
    let path = temp("store");
    let options = SqliteOptions {
        synchronous: sync,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let stream = StreamId::new(format!("bench-{client}-{n}")).unwrap();
                    let batch = (0..events)
                        .map(|_| EventData::json("Deposited", r#"{"amount":10}"#))
                        .collect();
                    store
                        .append(&stream, ExpectedVersion::NoStream, batch)
                        .await
                        .unwrap();
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    drop(store);
    remove(&path);
    rate
}

/// The same rows through raw rusqlite: the store's table (created by opening a store), one
/// `BEGIN IMMEDIATE … COMMIT` per append, `clients` threads taking turns on one connection.
fn raw_run(sync: Synchronous, clients: usize, events: usize, secs: Duration) -> f64 {
    let path = temp("raw");
    drop(SqliteStore::open(&path).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let connection = rusqlite::Connection::open(&path).unwrap();
    let mode = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {mode};"
        ))
        .unwrap();
    let connection = Arc::new(Mutex::new(connection));
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
                while !stop.load(Ordering::Relaxed) {
                    let stream = format!("bench-{client}-{n}");
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
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    drop(connection);
    remove(&path);
    rate
}

/// Every column the store reads, as the raw baseline decodes it.
type RawRow = (i64, String, i64, Vec<u8>, String, i64, Vec<u8>, String, i64);

/// W3 at a smaller scale: `subscribe_all` from the start over `events` events until `CaughtUp`,
/// beside raw paged SELECTs of the same rows in global order, 1,000 a page.
async fn catch_up(sync: Synchronous, events: usize) -> (f64, f64) {
    let path = temp("catch-up");
    let options = SqliteOptions {
        synchronous: sync,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let label = match sync {
        Synchronous::Full => "full",
        Synchronous::Normal => "normal",
    };
    let only: Option<usize> = args
        .iter()
        .find_map(|a| a.strip_prefix("clients="))
        .map(|c| c.parse().unwrap());
    for (clients, events) in [(1, 1), (4, 1), (16, 1), (4, 100)] {
        if only.is_some_and(|only| only != clients) {
            continue;
        }
        // Two rounds, alternating, the better of each kept: on a shared machine a neighbour's
        // burst should not decide the ratio.
        let (mut store, mut raw) = (0f64, 0f64);
        for _ in 0..2 {
            store = store.max(runtime.block_on(store_run(sync, clients, events, secs)));
            raw = raw.max(raw_run(sync, clients, events, secs));
        }
        println!(
            "W2 sqlite synchronous={label} clients={clients} events_per_append={events} \
             secs={:.1} appends/s={store:.0} raw_insert/s={raw:.0} ratio={:.2}",
            secs.as_secs_f64(),
            store / raw
        );
    }
    if only.is_none() {
        let events = 200_000;
        let (store, raw) = runtime.block_on(catch_up(sync, events));
        println!(
            "W3 sqlite synchronous={label} events={events} events/s={store:.0} \
             raw_select/s={raw:.0} ratio={:.2}",
            store / raw
        );
    }
}
