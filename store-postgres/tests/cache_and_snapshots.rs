//! The command handler's state cache and snapshots on PostgreSQL: the `snapshots` table keeps
//! the newest snapshot, deleting it changes no result, an old state version is ignored, a cached
//! handler beside a plain one loses no update, and a repeated idempotency key on a warm stream
//! is answered from the store's recognition of its event ids.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use decider_core::{
    CommandError, CommandHandler, Decider, EventStore, Metadata, RetryPolicy, Snapshot,
    SnapshotPolicy, SnapshotStore, StreamId,
};
use decider_store_postgres::PostgresStore;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use support::{drop_store, fresh_store, raw_client};

/// A tally whose events record the total they were decided on: an event decided on a stale
/// total breaks the chain `total = previous total ± n`.
struct Tally;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    Added { n: u64, total: u64 },
    Taken { n: u64, total: u64 },
}

#[derive(Debug, Clone)]
enum Command {
    Add(u64),
    /// Two additions in one command: two events.
    AddTwice(u64),
    Take(u64),
}

#[derive(Debug, Clone, PartialEq)]
struct Insufficient {
    total: u64,
}

impl Decider for Tally {
    type Command = Command;
    type Event = Event;
    type State = u64;
    type Error = Insufficient;

    fn initial_state(&self) -> u64 {
        0
    }

    fn decide(&self, command: &Command, &total: &u64) -> Result<Vec<Event>, Insufficient> {
        Ok(match *command {
            Command::Add(n) => vec![Event::Added {
                n,
                total: total + n,
            }],
            Command::AddTwice(n) => vec![
                Event::Added {
                    n,
                    total: total + n,
                },
                Event::Added {
                    n,
                    total: total + 2 * n,
                },
            ],
            Command::Take(n) if n > total => return Err(Insufficient { total }),
            Command::Take(n) => vec![Event::Taken {
                n,
                total: total - n,
            }],
        })
    }

    fn evolve(&self, _: u64, event: &Event) -> u64 {
        match event {
            Event::Added { total, .. } | Event::Taken { total, .. } => *total,
        }
    }
}

fn stream() -> StreamId {
    StreamId::new(format!("tally-{}", uuid::Uuid::new_v4().simple())).unwrap()
}

async fn events(store: &PostgresStore, stream: &StreamId) -> Vec<Event> {
    let handler = CommandHandler::new(Tally, store.clone());
    let recorded: Vec<_> = store.read_whole_stream(stream).try_collect().await.unwrap();
    recorded
        .iter()
        .map(|e| decider_core::Codec::decode(handler.codec(), e).unwrap())
        .collect()
}

/// Checks that every event was decided on the total of the events before it; returns the total.
fn assert_chain(events: &[Event]) -> u64 {
    let mut running = 0;
    for (revision, event) in events.iter().enumerate() {
        let expected = match event {
            Event::Added { n, .. } => running + n,
            Event::Taken { n, .. } => running - n,
        };
        running = Tally.evolve(running, event);
        assert_eq!(
            running, expected,
            "revision {revision} was decided on a stale total"
        );
    }
    running
}

fn snapshot(stream: &StreamId, revision: u64, state_version: u32, state: &str) -> Snapshot {
    Snapshot {
        stream: stream.clone(),
        revision,
        state_version,
        payload: state.to_owned().into(),
    }
}

#[tokio::test]
async fn the_snapshots_table_keeps_the_newest_snapshot_of_each_stream() {
    let store = fresh_store().await;
    let (a, b) = (stream(), stream());
    assert_eq!(store.load(&a).await.unwrap(), None);
    store
        .save(snapshot(&a, 5, 1, r#"{"total":5}"#))
        .await
        .unwrap();
    store
        .save(snapshot(&a, 3, 2, r#"{"total":3}"#))
        .await
        .unwrap();
    store
        .save(snapshot(&a, 5, 2, r#"{"total":6}"#))
        .await
        .unwrap();
    store.save(snapshot(&b, 1, 7, "[1, 2]")).await.unwrap();

    let kept = store.load(&a).await.unwrap().unwrap();
    assert_eq!((kept.revision, kept.state_version), (5, 1));
    let state: serde_json::Value = serde_json::from_slice(&kept.payload).unwrap();
    assert_eq!(state, serde_json::json!({ "total": 5 }));

    store
        .save(snapshot(&a, 9, 2, r#"{"total":9}"#))
        .await
        .unwrap();
    assert_eq!(store.load(&a).await.unwrap().unwrap().revision, 9);
    assert_eq!(store.load(&b).await.unwrap().unwrap().state_version, 7);

    let error = store
        .save(snapshot(&b, 2, 1, "{not json"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, decider_core::StoreError::InvalidInput(_)),
        "{error:?}"
    );
    drop_store(store).await;
}

#[tokio::test]
async fn deleting_every_snapshot_changes_no_result() {
    let store = fresh_store().await;
    let tallies = CommandHandler::new(Tally, store.clone())
        .with_snapshots(store.clone(), SnapshotPolicy::every(5));
    let s = stream();
    for n in 1..=23 {
        tallies.handle(&s, Command::Add(n)).await.unwrap();
    }
    // Taken when the stream reached 5, 10, 15 and 20 events.
    assert_eq!(store.load(&s).await.unwrap().unwrap().revision, 19);
    let with_snapshot = tallies.load(&s).await.unwrap();
    assert_eq!(with_snapshot.state, (1..=23).sum::<u64>());

    raw_client()
        .await
        .batch_execute(&format!("DELETE FROM \"{}\".snapshots", store.schema()))
        .await
        .unwrap();
    assert_eq!(store.load(&s).await.unwrap(), None);
    assert_eq!(tallies.load(&s).await.unwrap(), with_snapshot);
    tallies.handle(&s, Command::Take(6)).await.unwrap();
    // The command read all 23 events: it put a snapshot back.
    assert_eq!(store.load(&s).await.unwrap().unwrap().revision, 23);
    assert_eq!(
        assert_chain(&events(&store, &s).await),
        (1..=23).sum::<u64>() - 6
    );
    drop_store(store).await;
}

#[tokio::test]
async fn a_snapshot_of_an_old_state_version_is_ignored() {
    let store = fresh_store().await;
    let s = stream();
    CommandHandler::new(Tally, store.clone())
        .handle(&s, Command::AddTwice(10))
        .await
        .unwrap();
    // Written by an older build whose state meant something else: it decodes, wrongly.
    store.save(snapshot(&s, 1, 1, "999")).await.unwrap();
    let v1 = CommandHandler::new(Tally, store.clone())
        .with_snapshots(store.clone(), SnapshotPolicy::every(100));
    assert_eq!(v1.load(&s).await.unwrap().state, 999);

    let v2 = CommandHandler::new(Tally, store.clone()).with_snapshots(
        store.clone(),
        SnapshotPolicy::every(100).with_state_version(2),
    );
    assert_eq!(v2.load(&s).await.unwrap().state, 20);
    let error = v2.handle(&s, Command::Take(500)).await.unwrap_err();
    assert!(
        matches!(error, CommandError::Rejected(Insufficient { total: 20 })),
        "{error:?}"
    );
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_and_a_plain_handler_on_one_stream_lose_no_update() {
    let store = fresh_store().await;
    let policy = RetryPolicy {
        max_retries: 10_000,
        base_delay: Duration::from_micros(200),
        max_delay: Duration::from_millis(5),
        ..RetryPolicy::default()
    };
    let cached = Arc::new(
        CommandHandler::new(Tally, store.clone())
            .with_cache(100)
            .with_retry_policy(policy),
    );
    let plain = Arc::new(CommandHandler::new(Tally, store.clone()).with_retry_policy(policy));
    let s = stream();
    let tasks: Vec<_> = (0..6)
        .map(|task| {
            let (cached, plain, s) = (cached.clone(), plain.clone(), s.clone());
            tokio::spawn(async move {
                for n in 0..25 {
                    if (task + n) % 2 == 0 {
                        cached.handle(&s, Command::Add(1)).await.unwrap();
                    } else {
                        plain.handle(&s, Command::Add(1)).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let events = events(&store, &s).await;
    assert_eq!(events.len(), 150);
    assert_eq!(assert_chain(&events), 150);
    assert_eq!(cached.load(&s).await.unwrap().state, 150);
    drop_store(store).await;
}

#[tokio::test]
async fn a_repeated_key_on_a_warm_stream_returns_the_original_without_writing_twice() {
    let store = fresh_store().await;
    let tallies = CommandHandler::new(Tally, store.clone()).with_cache(100);
    let s = stream();
    tallies.handle(&s, Command::Add(1)).await.unwrap();
    let key = Metadata::default().with_idempotency_key("request-1");
    let first = tallies
        .handle_with(&s, Command::Add(10), key.clone())
        .await
        .unwrap();
    // The same batch of ids: the append function answers 'repeat' with the original result.
    let again = tallies
        .handle_with(&s, Command::Add(10), key.clone())
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        (&again.events, again.last_revision, again.position),
        (&first.events, first.last_revision, first.position)
    );
    // Two ids where the original had one: 'reused_ids'; the handler searches the stream.
    tallies.handle(&s, Command::Add(5)).await.unwrap();
    let later = tallies
        .handle_with(&s, Command::AddTwice(10), key.clone())
        .await
        .unwrap();
    assert!(later.replayed);
    assert_eq!(later.events, first.events);
    // Refused by the cached state: nothing reaches the store, the handler searches.
    let refused = tallies
        .handle_with(&s, Command::Take(1_000), key)
        .await
        .unwrap();
    assert!(refused.replayed);
    assert_eq!(refused.events, first.events);
    assert_eq!(assert_chain(&events(&store, &s).await), 16);
    drop_store(store).await;
}
