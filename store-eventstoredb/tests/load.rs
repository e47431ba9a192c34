//! One store under many concurrent calls, against the **protocol double**, which admits 100
//! streams per HTTP/2 connection as a KurrentDB server does (ADR 7).
//!
//! The second test fails without the adapter's stream budgets (checked on the commit that adds
//! them): with none, or one shared with calls, 100 subscriptions hold every stream of the
//! connection and the append waits behind them. The first passes in a process of its own with or
//! without the adapter's reads running to their end: the client closes the connection
//! (`ENHANCE_YOUR_CALM`, every call in flight failing with `ResourceExhausted`) only when it
//! handles a cancelled read's end after it has forgotten the stream, which takes a loaded machine
//! (as `cargo test` running the whole conformance kit against one double is; ADR 7).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use decider_core::{
    EventData, EventFilter, EventStore, ExpectedVersion, StreamId, SubscriptionMessage,
};
use decider_eventstoredb_double::{MAX_STREAMS_PER_CONNECTION, ProtocolDouble};
use decider_store_eventstoredb::EventStoreDbStore;
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

const TASKS: usize = 500;
const ROUNDS: u64 = 4;

/// What one task of the load does, `ROUNDS` times: reads the last revision of its stream (a
/// limited read, dropped after its one event), appends expecting it, and reads a page of `$all`
/// and the head position.
async fn one_task(store: EventStoreDbStore, task: usize) {
    let stream = StreamId::new(format!("load-{}", Uuid::new_v4().simple())).unwrap();
    for round in 0..ROUNDS {
        let last = store
            .last_event(&stream)
            .await
            .unwrap_or_else(|error| panic!("task {task}: a read failed: {error}"))
            .map(|event| event.revision);
        assert_eq!(last, round.checked_sub(1), "task {task} lost an event");
        let expected = ExpectedVersion::from_last_revision(last);
        store
            .append(&stream, expected, vec![EventData::json("Loaded", "{}")])
            .await
            .unwrap_or_else(|error| panic!("task {task}: an append failed: {error}"));
        let page: Vec<_> = store
            .read_all(None, Some(2), &EventFilter::all())
            .try_collect()
            .await
            .unwrap_or_else(|error| panic!("task {task}: a read of $all failed: {error}"));
        assert!(
            page.len() <= 2,
            "task {task}: a read of $all limited to 2 gave {}",
            page.len()
        );
        store
            .head_position()
            .await
            .unwrap_or_else(|error| panic!("task {task}: head_position failed: {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_tasks_of_appends_and_limited_reads_on_one_store_all_succeed() {
    let double = ProtocolDouble::start();
    let store = EventStoreDbStore::connect(&double.url()).await.unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| tokio::spawn(one_task(store.clone(), task)))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(double.event_count(), TASKS * ROUNDS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_subscriptions_than_the_server_admits_streams_do_not_hold_up_appends() {
    let double = ProtocolDouble::start();
    let store = EventStoreDbStore::connect(&double.url()).await.unwrap();
    let stream = StreamId::new(format!("watched-{}", Uuid::new_v4().simple())).unwrap();
    let mut subscriptions: Vec<_> = (0..MAX_STREAMS_PER_CONNECTION + 20)
        .map(|_| Box::pin(store.subscribe_stream(&stream, None)))
        .collect();
    // Start them all: each one polled subscribes, or waits for a stream of its budget.
    for subscription in &mut subscriptions {
        let _ = tokio::time::timeout(Duration::from_millis(20), subscription.next()).await;
    }

    let appended = tokio::time::timeout(
        Duration::from_secs(10),
        store.append(
            &stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("Seen", "{}")],
        ),
    )
    .await
    .expect("an append waited behind the subscriptions");
    appended.unwrap();
    let read: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        store.read_whole_stream(&stream).try_collect::<Vec<_>>(),
    )
    .await
    .expect("a read waited behind the subscriptions")
    .unwrap();
    assert_eq!(read.len(), 1);

    // The last subscription waits for a stream; once the first ones end, it starts.
    let mut last = subscriptions.pop().unwrap();
    subscriptions.truncate(0);
    let first = tokio::time::timeout(Duration::from_secs(10), last.next())
        .await
        .expect("a waiting subscription did not start when others ended");
    assert!(
        matches!(
            first,
            Some(Ok(
                SubscriptionMessage::Event(_) | SubscriptionMessage::CaughtUp
            ))
        ),
        "the waiting subscription gave {first:?}"
    );
}
