//! The writer: group commit keeps each append's own outcome, one append's failure is never
//! another's, and several stores (as several processes would) share one file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use decider_core::{
    EventData, EventFilter, EventStore, ExpectedVersion, StoreError, StreamId, SubscriptionMessage,
};
use decider_store_sqlite::{SqliteOptions, SqliteStore};
use futures::{StreamExt, TryStreamExt};
use support::{TempDatabase, remove_database};

/// Holds the writer thread busy for `pause`, so that appends sent meanwhile queue up and are
/// taken as one group.
async fn hold_writer(store: &SqliteStore, pause: Duration) -> tokio::task::JoinHandle<()> {
    let (started, running) = tokio::sync::oneshot::channel();
    let store = store.clone();
    let held = tokio::spawn(async move {
        store
            .write(move |_| {
                let _ = started.send(());
                std::thread::sleep(pause);
            })
            .await
            .unwrap();
    });
    running.await.unwrap();
    held
}

async fn count(store: &SqliteStore, stream: &StreamId) -> usize {
    store
        .read_whole_stream(stream)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_with_one_expectation_inside_one_group_admit_exactly_one_winner() {
    let database = TempDatabase::new("store");
    let store = database.open();
    let stream = StreamId::new("race-1").unwrap();
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("A", "{}")],
        )
        .await
        .unwrap();
    let held = hold_writer(&store, Duration::from_millis(300)).await;
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let (store, stream) = (store.clone(), stream.clone());
            tokio::spawn(async move {
                store
                    .append(
                        &stream,
                        ExpectedVersion::Exact(0),
                        vec![EventData::json("B", "{}")],
                    )
                    .await
            })
        })
        .collect();
    held.await.unwrap();
    let mut winners = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(result) => {
                winners += 1;
                assert_eq!(result.next_revision, 2);
            }
            Err(StoreError::WrongExpectedVersion {
                expected, actual, ..
            }) => {
                assert_eq!(expected, ExpectedVersion::Exact(0));
                assert_eq!(actual, Some(1));
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(count(&store, &stream).await, 2);
    remove_database(store.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_inside_a_group_leaves_the_others_written() {
    let database = TempDatabase::new("store");
    let store = database.open();
    let taken = EventData::json("Taken", "{}");
    let first = StreamId::new("first-1").unwrap();
    store
        .append(&first, ExpectedVersion::NoStream, vec![taken.clone()])
        .await
        .unwrap();
    let held = hold_writer(&store, Duration::from_millis(300)).await;
    let mut appends = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        // Append 3 reuses the taken id beside a new one: refused, alone.
        let events = if n == 3 {
            vec![EventData::json("New", "{}"), taken.clone()]
        } else {
            vec![EventData::json("New", "{}"), EventData::json("New", "{}")]
        };
        appends.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("group-{n}")).unwrap();
            store
                .append(&stream, ExpectedVersion::NoStream, events)
                .await
        }));
    }
    held.await.unwrap();
    for (n, append) in appends.into_iter().enumerate() {
        let outcome = append.await.unwrap();
        let stream = StreamId::new(format!("group-{n}")).unwrap();
        if n == 3 {
            assert!(
                matches!(outcome, Err(StoreError::InvalidInput(_))),
                "{outcome:?}"
            );
            assert_eq!(count(&store, &stream).await, 0, "a refused append wrote");
        } else {
            assert_eq!(outcome.unwrap().next_revision, 2);
            assert_eq!(count(&store, &stream).await, 2);
        }
    }
    // Positions stay gap-free across the refused append's rolled-back savepoint.
    let all: Vec<_> = store
        .read_whole_log(&EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.commit()).collect();
    assert_eq!(positions, (1..=15).collect::<Vec<_>>());
    remove_database(store.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_only_the_append_that_does_not_fit_and_writes_none_of_it() {
    let database = TempDatabase::new("full");
    let path = database.path().to_owned();
    let options = SqliteOptions {
        max_page_count: Some(40),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    let small = StreamId::new("small-1").unwrap();
    let big = StreamId::new("big-1").unwrap();
    let held = hold_writer(&store, Duration::from_millis(300)).await;
    let mut smalls = Vec::new();
    for _ in 0..4 {
        let (store, small) = (store.clone(), small.clone());
        smalls.push(tokio::spawn(async move {
            store
                .append(
                    &small,
                    ExpectedVersion::Any,
                    vec![EventData::json("Small", "{}")],
                )
                .await
        }));
    }
    let too_big: Vec<EventData> = (0..4)
        .map(|_| EventData::json("Big", format!("\"{}\"", "x".repeat(100_000))))
        .collect();
    let failed = {
        let (store, big) = (store.clone(), big.clone());
        tokio::spawn(async move { store.append(&big, ExpectedVersion::Any, too_big).await })
    };
    held.await.unwrap();
    for small in smalls {
        small.await.unwrap().unwrap();
    }
    match failed.await.unwrap() {
        Err(StoreError::Backend { message, .. }) => assert!(message.contains("full"), "{message}"),
        other => panic!("expected a Backend error for a full disk, got {other:?}"),
    }
    assert_eq!(
        count(&store, &big).await,
        0,
        "part of the failed append was written"
    );
    assert_eq!(count(&store, &small).await, 4);
    // The store goes on: what fits is written.
    store
        .append(
            &small,
            ExpectedVersion::Exact(3),
            vec![EventData::json("Small", "{}")],
        )
        .await
        .unwrap();
    drop(store);
    remove_database(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_serialise_their_writers_and_see_each_other_live() {
    let database = TempDatabase::new("shared");
    let path = database.path().to_owned();
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    let stream = StreamId::new("shared-1").unwrap();
    let mut subscription = Box::pin(b.subscribe_stream(&stream, None));
    assert_eq!(
        subscription.next().await.unwrap().unwrap(),
        SubscriptionMessage::CaughtUp
    );
    // The subscriber waits, idle, before the other store appends.
    let follower = tokio::spawn(async move {
        let next = subscription.next().await;
        (next, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = Instant::now();
    a.append(
        &stream,
        ExpectedVersion::NoStream,
        vec![EventData::json("A", "{}")],
    )
    .await
    .unwrap();
    let (next, delivered) = follower.await.unwrap();
    let Some(Ok(SubscriptionMessage::Event(event))) = next else {
        panic!("no event");
    };
    assert_eq!(event.revision, 0);
    // Woken by the other store's commit through PRAGMA data_version, not the 1 s safety poll.
    let lag = delivered.duration_since(written);
    assert!(lag < Duration::from_millis(300), "seen after {lag:?}");
    // Both write; the expectations hold across the two writers.
    let racers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .cycle()
        .take(10)
        .map(|store| {
            let stream = stream.clone();
            tokio::spawn(async move {
                store
                    .append(
                        &stream,
                        ExpectedVersion::Exact(0),
                        vec![EventData::json("B", "{}")],
                    )
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => winners += 1,
            Err(error) => assert!(error.is_wrong_expected_version(), "{error}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(count(&a, &stream).await, 2);
    drop((a, b));
    remove_database(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_elsewhere_past_the_busy_timeout_is_unavailable_and_writes_nothing() {
    let database = TempDatabase::new("busy");
    let path = database.path().to_owned();
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(200),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    // Another process's writer, in the middle of a long transaction.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let stream = StreamId::new("busy-1").unwrap();
    let appends: Vec<_> = (0..4)
        .map(|_| {
            let (store, stream) = (store.clone(), stream.clone());
            tokio::spawn(async move {
                store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        vec![EventData::json("E", "{}")],
                    )
                    .await
            })
        })
        .collect();
    let started = Instant::now();
    for append in appends {
        let error = append.await.unwrap().unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the appends waited {:?}: once per append?",
        started.elapsed()
    );
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(count(&store, &stream).await, 0);
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("E", "{}")],
        )
        .await
        .unwrap();
    drop((store, other));
    remove_database(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_wakes_an_idle_subscriber_of_the_same_store_at_once() {
    let database = TempDatabase::new("wake");
    let store = database.open();
    let stream = StreamId::new("wake-1").unwrap();
    let mut subscription = Box::pin(store.subscribe_stream(&stream, None));
    assert_eq!(
        subscription.next().await.unwrap().unwrap(),
        SubscriptionMessage::CaughtUp
    );
    let mut lags = Vec::new();
    for revision in 0..10u64 {
        let follower = tokio::spawn(async move {
            let next = subscription.next().await;
            (next, Instant::now(), subscription)
        });
        // Idle before the append: only a wake-up brings the event.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let written = Instant::now();
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![EventData::json("E", "{}")],
            )
            .await
            .unwrap();
        let (next, delivered, back) = follower.await.unwrap();
        subscription = back;
        let Some(Ok(SubscriptionMessage::Event(event))) = next else {
            panic!("no event");
        };
        assert_eq!(event.revision, revision);
        lags.push(delivered.saturating_duration_since(written));
    }
    lags.sort();
    // The writer's own wake-up takes a millisecond or so; the 50 ms watcher alone would put the
    // median near 25 ms.
    assert!(lags[5] < Duration::from_millis(10), "lags {lags:?}");
}
