//! 16 writers × 1,000 appends over 50 streams, with a live subscriber and a checkpointed reader
//! that is restarted midway: every event exactly once, in strictly increasing positions, with
//! contiguous revisions per stream.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::time::Duration;

use decider_core::{
    EventData, EventFilter, EventStore, ExpectedVersion, Position, RecordedEvent, StreamId,
    SubscriptionMessage,
};
use decider_store_postgres::{PostgresOptions, PostgresStore};
use futures::StreamExt;
use support::{drop_store, fresh_store_with};
use uuid::Uuid;

const WRITERS: usize = 16;
const APPENDS: usize = 1_000;
const STREAMS: usize = 50;
const TOTAL: usize = WRITERS * APPENDS;

/// Reads `count` events of `filter` after `after`, skipping `CaughtUp`.
async fn take(
    store: &PostgresStore,
    after: Option<Position>,
    filter: &EventFilter,
    count: usize,
) -> Vec<RecordedEvent> {
    let mut subscription = pin!(store.subscribe_all(after, filter));
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        match tokio::time::timeout(Duration::from_secs(30), subscription.next()).await {
            Ok(Some(Ok(SubscriptionMessage::Event(event)))) => events.push(event),
            Ok(Some(Ok(SubscriptionMessage::CaughtUp))) => {}
            other => panic!("after {} events: {other:?}", events.len()),
        }
    }
    events
}

fn check(label: &str, events: &[RecordedEvent]) {
    assert_eq!(events.len(), TOTAL, "{label}: count");
    let ids: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), TOTAL, "{label}: an event was delivered twice");
    assert!(
        events.windows(2).all(|w| w[0].position < w[1].position),
        "{label}: positions not strictly increasing"
    );
    let mut next_revision: HashMap<&StreamId, u64> = HashMap::new();
    for event in events {
        let next = next_revision.entry(&event.stream).or_default();
        assert_eq!(
            event.revision, *next,
            "{label}: {} revisions not contiguous",
            event.stream
        );
        *next += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_a_live_subscriber_and_a_restarted_reader_see_every_event_once_in_order() {
    let store = fresh_store_with(PostgresOptions {
        pool_size: 20,
        ..PostgresOptions::default()
    })
    .await;
    let category = format!("stress{}", Uuid::new_v4().simple());
    let filter = EventFilter::all().with_categories([category.clone()]);
    let streams: Vec<StreamId> = (0..STREAMS)
        .map(|s| StreamId::new(format!("{category}-{s}")).unwrap())
        .collect();

    let live = tokio::spawn({
        let (store, filter) = (store.clone(), filter.clone());
        async move { take(&store, None, &filter, TOTAL).await }
    });
    // The checkpointed reader: reads a third, "crashes" (drops its subscription), and resumes
    // from its checkpoint while the writers are still going.
    let restarted = tokio::spawn({
        let (store, filter) = (store.clone(), filter.clone());
        async move {
            let mut events = take(&store, None, &filter, TOTAL / 3).await;
            let checkpoint = events.last().map(|e| e.position);
            events.extend(take(&store, checkpoint, &filter, TOTAL - TOTAL / 3).await);
            events
        }
    });

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, streams) = (store.clone(), streams.clone());
            tokio::spawn(async move {
                for a in 0..APPENDS {
                    let stream = &streams[(w * 7 + a) % STREAMS];
                    let event = EventData::json("Written", format!(r#"{{"writer":{w},"n":{a}}}"#));
                    store
                        .append(stream, ExpectedVersion::Any, vec![event])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    check("live subscriber", &live.await.unwrap());
    check("restarted reader", &restarted.await.unwrap());
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_and_locked_appends_racing_on_one_stream_keep_every_acknowledged_event() {
    let store = fresh_store_with(PostgresOptions::default()).await;
    let stream = StreamId::new(format!("mixed-{}", Uuid::new_v4().simple())).unwrap();
    // Exact appends take the one-statement fast path, Any appends the locked function; the
    // two must agree on every revision and never undo each other's writes.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (store, stream) = (store.clone(), stream.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                while acknowledged.len() < 150 {
                    let event = EventData::json("Mixed", format!(r#"{{"writer":{w}}}"#));
                    let id = event.id;
                    let expected = if w % 2 == 0 {
                        ExpectedVersion::Any
                    } else {
                        let newest = store.last_event(&stream).await.unwrap();
                        let last = newest.map(|event| event.revision);
                        ExpectedVersion::from_last_revision(last)
                    };
                    match store.append(&stream, expected, vec![event]).await {
                        Ok(_) => acknowledged.push(id),
                        Err(decider_core::StoreError::WrongExpectedVersion { .. }) => {}
                        Err(other) => panic!("{other}"),
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = HashSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let events: Vec<RecordedEvent> =
        futures::TryStreamExt::try_collect(store.read_whole_stream(&stream))
            .await
            .unwrap();
    assert_eq!(events.len(), 8 * 150);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.revision == i as u64)
    );
    let stored: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        stored, acknowledged,
        "an acknowledged event is missing, or an unacknowledged one is there"
    );
    drop_store(store).await;
}
