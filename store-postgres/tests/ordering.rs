//! The global order survives transactions that commit out of order: an append that took the
//! earlier transaction id but commits last is delivered first, and never skipped.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::pin::Pin;
use std::time::Duration;

use decider_core::{
    EventData, EventFilter, EventStore, ExpectedVersion, RecordedEvent, StreamId, Subscription,
    SubscriptionMessage,
};
use decider_store_postgres::PostgresStore;
use futures::{StreamExt, TryStreamExt};
use support::{drop_store, fresh_store, raw_client};
use uuid::Uuid;

/// How long "not delivered" is watched for: far longer than a live poll interval.
const QUIET: Duration = Duration::from_millis(700);

type Sub = Pin<Box<dyn Subscription<Item = Result<SubscriptionMessage, decider_core::StoreError>>>>;

async fn next_event(subscription: &mut Sub) -> RecordedEvent {
    match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
        Ok(Some(Ok(SubscriptionMessage::Event(event)))) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn caught_up(store: &PostgresStore, filter: &EventFilter) -> Sub {
    let mut subscription: Sub = Box::pin(store.subscribe_all(None, filter));
    loop {
        match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
            Ok(Some(Ok(SubscriptionMessage::CaughtUp))) => return subscription,
            Ok(Some(Ok(SubscriptionMessage::Event(_)))) => {}
            other => panic!("expected catch-up, got {other:?}"),
        }
    }
}

/// Opens a transaction on a second connection and appends one event to `stream` in it, through
/// the store's own append function, leaving the transaction open.
async fn append_and_hold<'c>(
    store: &PostgresStore,
    client: &'c mut tokio_postgres::Client,
    stream: &str,
    id: Uuid,
) -> tokio_postgres::Transaction<'c> {
    let transaction = client.transaction().await.unwrap();
    let sql = format!(
        "SELECT outcome FROM \"{}\".append_events($1, 0::smallint, NULL, ARRAY[$2::uuid], \
         ARRAY['Held'], ARRAY['{{}}'::jsonb], ARRAY[NULL::bytea], ARRAY['{{}}'::jsonb])",
        store.schema()
    );
    let row = transaction.query_one(&sql, &[&stream, &id]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "ok");
    transaction
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_late_is_delivered_in_order_and_never_skipped() {
    let store = fresh_store().await;
    let category = format!("ooo{}", Uuid::new_v4().simple());
    let filter = EventFilter::all().with_categories([category.clone()]);
    let (early, late) = (format!("{category}-early"), format!("{category}-late"));
    let mut running = caught_up(&store, &filter).await;

    // The early append takes its transaction id first but stays open...
    let mut client = raw_client().await;
    let held_id = Uuid::new_v4();
    let held = append_and_hold(&store, &mut client, &early, held_id).await;
    // ...while a later transaction appends and commits.
    let late_stream = StreamId::new(&late).unwrap();
    store
        .append(
            &late_stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("Late", "{}")],
        )
        .await
        .unwrap();

    // The committed later event is held back: delivering it now would let the subscription
    // move past the earlier transaction's position and skip its event.
    assert!(
        tokio::time::timeout(QUIET, running.next()).await.is_err(),
        "the later event was delivered while an earlier transaction was still open"
    );
    // A subscription started between the two commits, and a finite read, wait likewise.
    let mut started_between: Sub = Box::pin(store.subscribe_all(None, &filter));
    let read = tokio::spawn({
        let (store, filter) = (store.clone(), filter.clone());
        async move { store.read_whole_log(&filter).try_collect::<Vec<_>>().await }
    });
    tokio::time::sleep(QUIET).await;
    assert!(
        !read.is_finished(),
        "read_all ended before the earlier transaction finished"
    );

    held.commit().await.unwrap();

    for subscription in [&mut running, &mut started_between] {
        let first = next_event(subscription).await;
        let second = next_event(subscription).await;
        assert_eq!((first.id, first.stream.as_str()), (held_id, early.as_str()));
        assert_eq!(second.stream.as_str(), late);
        assert!(first.position < second.position);
    }
    match tokio::time::timeout(Duration::from_secs(10), started_between.next()).await {
        Ok(Some(Ok(SubscriptionMessage::CaughtUp))) => {}
        other => panic!("expected CaughtUp after both events, got {other:?}"),
    }
    let read = read.await.unwrap().unwrap();
    let streams: Vec<&str> = read.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(streams, [early.as_str(), late.as_str()]);
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_rolls_back_leaves_no_gap_and_no_event() {
    let store = fresh_store().await;
    let category = format!("rb{}", Uuid::new_v4().simple());
    let filter = EventFilter::all().with_categories([category.clone()]);
    let mut running = caught_up(&store, &filter).await;

    let mut client = raw_client().await;
    let held = append_and_hold(
        &store,
        &mut client,
        &format!("{category}-a"),
        Uuid::new_v4(),
    )
    .await;
    let after = StreamId::new(format!("{category}-b")).unwrap();
    store
        .append(
            &after,
            ExpectedVersion::NoStream,
            vec![EventData::json("After", "{}")],
        )
        .await
        .unwrap();
    held.rollback().await.unwrap();

    let delivered = next_event(&mut running).await;
    assert_eq!(delivered.stream, after);
    assert!(tokio::time::timeout(QUIET, running.next()).await.is_err());
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_in_another_process_is_woken_by_notify_not_by_polling() {
    let writer = fresh_store().await;
    // A second store on the same schema stands for another process: it sees no in-process
    // wake-ups, and polls so rarely that only a notification can deliver in time.
    let url = support::database_url();
    let reader = PostgresStore::connect_with(
        &url,
        decider_store_postgres::PostgresOptions {
            schema: writer.schema().to_owned(),
            max_poll_interval: Duration::from_secs(3_600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let category = format!("notify{}", Uuid::new_v4().simple());
    let filter = EventFilter::all().with_categories([category.clone()]);
    let stream = StreamId::new(format!("{category}-1")).unwrap();
    let mut subscription = caught_up(&reader, &filter).await;
    // A stream subscription too: it waits on notifications from elsewhere, not on every append.
    let mut of_stream = Box::pin(reader.subscribe_stream(&stream, None));
    assert!(matches!(
        of_stream.next().await,
        Some(Ok(SubscriptionMessage::CaughtUp))
    ));
    // The subscribers wait while their poll backoff grows: 9 s in, the wait running then lasts
    // about 7 s more.
    let waiting = tokio::spawn(async move { subscription.next().await });
    let waiting_on_stream = tokio::spawn(async move { of_stream.next().await });
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(!waiting.is_finished() && !waiting_on_stream.is_finished());

    writer
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("Pinged", "{}")],
        )
        .await
        .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(3), waiting).await;
    assert!(
        matches!(delivered, Ok(Ok(Some(Ok(SubscriptionMessage::Event(ref e))))) if e.stream == stream),
        "not woken by the notification: {delivered:?}"
    );
    let delivered = tokio::time::timeout(Duration::from_secs(3), waiting_on_stream).await;
    assert!(
        matches!(delivered, Ok(Ok(Some(Ok(SubscriptionMessage::Event(ref e))))) if e.stream == stream),
        "the stream subscription was not woken by the notification: {delivered:?}"
    );
    drop_store(writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_ends_while_writers_keep_committing() {
    let store = fresh_store().await;
    let category = format!("busy{}", Uuid::new_v4().simple());
    let filter = EventFilter::all().with_categories([category.clone()]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Eight writers keep committing, so some committed event is nearly always held back behind
    // one still in flight: waiting for "none held back" would never end.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            let stream = StreamId::new(format!("{category}-{w}")).unwrap();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                while !stop.load(std::sync::atomic::Ordering::SeqCst)
                    && started.elapsed() < Duration::from_secs(30)
                {
                    let event = EventData::json("Busy", "{}");
                    store
                        .append(&stream, ExpectedVersion::Any, vec![event])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut subscription: Sub = Box::pin(store.subscribe_all(None, &filter));
    let mut last = None;
    let caught_up = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match subscription.next().await {
                Some(Ok(SubscriptionMessage::Event(event))) => {
                    assert!(last < Some(event.position), "out of order");
                    last = Some(event.position);
                }
                Some(Ok(SubscriptionMessage::CaughtUp)) => return,
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    let still_writing = !stop.swap(true, std::sync::atomic::Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(caught_up.is_ok(), "no CaughtUp while the writers were busy");
    assert!(still_writing, "CaughtUp only came once the writers stopped");
    drop_store(store).await;
}
