//! A read model kept up to date by a projection runner, on the in-memory store.
//!
//! `cargo run --example projections`
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decider_core::projection::{
    CheckpointedSink, EventHandler, MemoryCheckpoints, MemoryDeadLetters, Projection,
    ProjectionRunner, SinkError,
};
use decider_core::{EventData, EventFilter, EventStore, ExpectedVersion, RecordedEvent, StreamId};
use decider_store_memory::MemoryStore;
use serde::Deserialize;

/// The read model: the balance of each account, with the last revision applied to it. Delivery
/// is at least once, so an event at or below that revision is one seen before and is skipped:
/// a batch delivered twice changes nothing.
#[derive(Default)]
struct Balances {
    by_account: Mutex<BTreeMap<String, (u64, i64)>>, // account → (last revision, balance)
}

#[derive(Deserialize)]
struct Amount {
    amount: i64,
}

impl EventHandler for Balances {
    async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
        let mut accounts = self.by_account.lock().unwrap_or_else(|p| p.into_inner());
        for (index, event) in batch.iter().enumerate() {
            let Amount { amount } =
                serde_json::from_slice(&event.payload).map_err(|e| SinkError::Poison {
                    index,
                    reason: e.to_string(),
                })?;
            let applied = accounts.get(event.stream.as_str()).copied();
            if applied.is_some_and(|(last, _)| event.revision <= last) {
                continue;
            }
            let balance = applied.map_or(0, |(_, balance)| balance);
            let signed = if event.event_type == "Withdrawn" {
                -amount
            } else {
                amount
            };
            accounts.insert(event.stream.to_string(), (event.revision, balance + signed));
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let balances = Arc::new(Balances::default());
    let projection =
        Projection::new("balances").with_filter(EventFilter::all().with_categories(["account"]));
    let sink = CheckpointedSink::new(
        balances.clone(),
        MemoryCheckpoints::default(),
        MemoryDeadLetters::default(),
    );
    let runner = Arc::new(ProjectionRunner::new(store.clone(), projection, sink));
    let status = runner.status_handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let runner = runner.clone();
        async move {
            runner
                .run(async {
                    stopped.await.ok();
                })
                .await
        }
    });

    for (account, events) in [
        ("account-ada", vec![("Deposited", 100), ("Withdrawn", 30)]),
        ("account-bob", vec![("Deposited", 50)]),
    ] {
        let stream = StreamId::new(account)?;
        let events = events
            .into_iter()
            .map(|(kind, amount)| EventData::json(kind, format!(r#"{{"amount":{amount}}}"#)))
            .collect();
        store.append(&stream, ExpectedVersion::Any, events).await?;
    }

    while status.get().handled < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let now = status.get();
    println!(
        "{}: {:?}, {} events handled, checkpoint {:?}, lag {:?}",
        now.projection, now.state, now.handled, now.checkpoint, now.lag
    );
    for (account, (_, balance)) in balances
        .by_account
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        println!("{account}: {balance}");
    }
    stop.send(()).ok();
    running.await??;
    Ok(())
}
