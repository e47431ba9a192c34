//! The in-memory store under the workloads W2–W4 of docs/benchmarks.md, printed one line each.
//!
//! Run with `cargo bench -p decider-store-memory`. There is no database to compare with: W3 is
//! printed beside a plain `read_all` of the same run. W1 (commands through the handler, with and
//! without cache and snapshots, on every store) is `cargo run --release -p
//! decider-store-postgres --example w1 -- memory`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that fails should stop loudly

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use decider_core::{
    EventData, EventFilter, EventStore, ExpectedVersion, StreamId, SubscriptionMessage,
};
use decider_store_memory::MemoryStore;
use futures::{StreamExt, TryStreamExt};

fn runtime(clients: usize) -> tokio::runtime::Runtime {
    if clients == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    }
}

fn accounts(run: &str, count: usize) -> Arc<Vec<StreamId>> {
    Arc::new(
        (0..count)
            .map(|a| StreamId::new(format!("account-{run}{a}")).unwrap())
            .collect(),
    )
}

/// Runs `clients` tasks; client `c` takes accounts c, c + C, … and calls `work` once per
/// (account, deposit). Returns the elapsed seconds.
fn drive<F, Fut>(clients: usize, accounts: usize, deposits: usize, work: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let work = Arc::new(work);
    runtime(clients).block_on(async move {
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let work = work.clone();
                tokio::spawn(async move {
                    for d in 0..deposits {
                        for a in (c..accounts).step_by(clients) {
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
    })
}

fn w2(clients: usize, batch: usize, appends_per_client: usize) {
    let store = MemoryStore::new();
    let streams = accounts("w2-", clients * appends_per_client);
    let payload = bytes::Bytes::from_static(br#"{"amount":1}"#);
    let secs = drive(clients, clients * appends_per_client, 1, move |a, _| {
        let (store, streams, payload) = (store.clone(), streams.clone(), payload.clone());
        async move {
            let events = (0..batch)
                .map(|_| EventData::json("Deposited", payload.clone()))
                .collect();
            store
                .append(&streams[a], ExpectedVersion::NoStream, events)
                .await
                .unwrap();
        }
    });
    let events = clients * appends_per_client * batch;
    println!(
        "W2 memory clients={clients} batch={batch} events={events} secs={secs:.3} events/s={:.0}",
        events as f64 / secs
    );
}

fn w3(events: u64) {
    let rt = runtime(1);
    rt.block_on(async {
        let store = MemoryStore::new();
        let payload = bytes::Bytes::from_static(br#"{"amount":1}"#);
        for s in 0..events / 100 {
            let stream = StreamId::new(format!("account-w3-{s}")).unwrap();
            let batch = (0..100).map(|_| EventData::json("Deposited", payload.clone())).collect();
            store.append(&stream, ExpectedVersion::NoStream, batch).await.unwrap();
        }
        let start = Instant::now();
        let mut subscription = pin!(store.subscribe_all(None, &EventFilter::all()));
        let mut seen = 0u64;
        while let Some(message) = subscription.next().await {
            match message.unwrap() {
                SubscriptionMessage::Event(_) => seen += 1,
                SubscriptionMessage::CaughtUp => break,
            }
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(seen, events);

        let start = Instant::now();
        let read = store.read_whole_log(&EventFilter::all()).try_fold(0u64, |n, _| async move { Ok(n + 1) }).await.unwrap();
        let raw_secs = start.elapsed().as_secs_f64();
        assert_eq!(read, events);
        let rate = events as f64 / secs;
        let raw = events as f64 / raw_secs;
        println!(
            "W3 memory events={events} secs={secs:.3} events/s={rate:.0} raw_read_all/s={raw:.0} ratio={:.2}",
            rate / raw
        );
    });
}

fn w4(rate_per_sec: u64, duration: Duration) {
    let rt = runtime(2);
    rt.block_on(async {
        let store = MemoryStore::new();
        let stream = StreamId::new("account-w4").unwrap();
        let mut subscription = Box::pin(store.subscribe_all(None, &EventFilter::all()));
        assert_eq!(subscription.next().await.unwrap().unwrap(), SubscriptionMessage::CaughtUp);
        let total = rate_per_sec * duration.as_secs();
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate_per_sec));
                for _ in 0..total {
                    tick.tick().await;
                    let event = EventData::json("Deposited", &br#"{"amount":1}"#[..]);
                    // Timed from the call, not its return: on two threads the subscriber often
                    // has the event before the writer is back, which would read as 0.
                    let called = Instant::now();
                    store.append(&stream, ExpectedVersion::Any, vec![event]).await.unwrap();
                    sent_tx.send(called).unwrap();
                }
            }
        });
        let mut latencies = Vec::with_capacity(total as usize);
        for _ in 0..total {
            subscription.next().await.unwrap().unwrap();
            let delivered = Instant::now();
            let appended = sent_rx.recv().await.unwrap();
            latencies.push(delivered.saturating_duration_since(appended));
        }
        writer.await.unwrap();
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        println!(
            "W4 memory rate={rate_per_sec}/s events={total} latency_from_append_call p50={:?} p99={:?} max={:?}",
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
    });
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing of use. Either
    // way the whole run is bounded (well under a minute on two cores).
    for clients in [1, 4, 16] {
        w2(clients, 1, 20_000 / clients);
    }
    w2(4, 100, 500);
    w3(1_000_000);
    w4(500, Duration::from_secs(10));
}
