//! The adapter against the **protocol double** when the double goes away mid-call, and the
//! round trip of payloads and metadata of both content types.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use decider_core::{
    ContentType, EventData, EventStore, ExpectedVersion, Metadata, StoreError, StreamId,
    SubscriptionMessage,
};
use decider_eventstoredb_double::{Fault, ProtocolDouble};
use decider_store_eventstoredb::EventStoreDbStore;
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

/// A fresh double and a store connected to it.
async fn started() -> (ProtocolDouble, EventStoreDbStore) {
    let double = ProtocolDouble::start();
    let store = EventStoreDbStore::connect(&double.url()).await.unwrap();
    (double, store)
}

fn stream() -> StreamId {
    StreamId::new(format!("fault-{}", Uuid::new_v4().simple())).unwrap()
}

async fn read(store: &EventStoreDbStore, stream: &StreamId) -> Vec<decider_core::RecordedEvent> {
    store.read_whole_stream(stream).try_collect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_stopped_mid_subscription_ends_it_with_unavailable_and_the_next_call_works() {
    let (double, store) = started().await;
    let stream = stream();
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("A", "{}")],
        )
        .await
        .unwrap();
    let mut subscription = Box::pin(store.subscribe_stream(&stream, None));
    assert!(matches!(
        subscription.next().await,
        Some(Ok(SubscriptionMessage::Event(_)))
    ));
    assert_eq!(
        subscription.next().await,
        Some(Ok(SubscriptionMessage::CaughtUp))
    );

    double.stop().await;
    match subscription.next().await {
        Some(Err(StoreError::Unavailable { .. })) => {}
        other => panic!("a subscription whose server went away gave {other:?}"),
    }
    double.restart().await;
    let result = store
        .append(
            &stream,
            ExpectedVersion::Exact(0),
            vec![EventData::json("B", "{}")],
        )
        .await
        .unwrap();
    assert_eq!(result.next_revision, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_stopped_mid_append_gives_unavailable_and_writes_nothing() {
    let (double, store) = started().await;
    let stream = stream();
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("A", "{}")],
        )
        .await
        .unwrap();
    let before = double.event_count();

    double.hold_appends(Some(Fault::BeforeCommit));
    let batch = vec![EventData::json("B", "{}"), EventData::json("C", "{}")];
    let append = tokio::spawn({
        let (store, stream, batch) = (store.clone(), stream.clone(), batch.clone());
        async move {
            store
                .append(&stream, ExpectedVersion::Exact(0), batch)
                .await
        }
    });
    double.append_held().await;
    double.stop().await;
    assert!(matches!(
        append.await.unwrap(),
        Err(StoreError::Unavailable { .. })
    ));
    assert_eq!(
        double.event_count(),
        before,
        "a lost append left events behind"
    );

    double.hold_appends(None);
    double.restart().await;
    assert_eq!(read(&store, &stream).await.len(), 1);
    let result = store
        .append(&stream, ExpectedVersion::Exact(0), batch)
        .await
        .unwrap();
    assert_eq!(result.next_revision, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_reply_was_lost_is_retried_idempotently_after_a_restart() {
    let (double, store) = started().await;
    let stream = stream();
    let batch = vec![EventData::json("A", "{}"), EventData::json("B", "{}")];

    double.hold_appends(Some(Fault::AfterCommit));
    let append = tokio::spawn({
        let (store, stream, batch) = (store.clone(), stream.clone(), batch.clone());
        async move {
            store
                .append(&stream, ExpectedVersion::NoStream, batch)
                .await
        }
    });
    double.append_held().await;
    double.stop().await;
    assert!(matches!(
        append.await.unwrap(),
        Err(StoreError::Unavailable { .. })
    ));

    double.hold_appends(None);
    double.restart().await;
    let retried = store
        .append(&stream, ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    let events = read(&store, &stream).await;
    assert_eq!(events.len(), 2, "the retry wrote the batch twice");
    assert_eq!(retried.next_revision, 2);
    assert_eq!(retried.position, events[1].position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_while_the_double_is_down_works_once_it_is_up() {
    let double = ProtocolDouble::start();
    double.stop().await;
    let store = EventStoreDbStore::connect(&double.url()).await.unwrap();
    let stream = stream();
    let refused = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("A", "{}")],
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable { .. })),
        "{refused:?}"
    );
    double.restart().await;
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("A", "{}")],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_binary_payloads_and_metadata_round_trip() {
    let (_double, store) = started().await;
    let stream = stream();
    let metadata = Metadata::default()
        .with_correlation_id(Uuid::new_v4())
        .with_idempotency_key("k-1")
        .with_header("tenant", "ünï");
    let written = vec![
        EventData::json("Json", r#"{ "spaced" :  [1, 2.5, "x"] }"#).with_metadata(metadata.clone()),
        EventData {
            content_type: ContentType::Binary,
            ..EventData::json("Binary", Bytes::from_static(&[0, 159, 146, 150, 255]))
        }
        .with_metadata(metadata),
    ];
    store
        .append(&stream, ExpectedVersion::NoStream, written.clone())
        .await
        .unwrap();
    let read = read(&store, &stream).await;
    for (recorded, expected) in read.iter().zip(&written) {
        assert_eq!(recorded.payload, expected.payload, "payload bytes");
        assert_eq!(recorded.content_type, expected.content_type);
        assert_eq!(recorded.metadata, expected.metadata);
        assert_eq!(recorded.event_type, expected.event_type);
        assert_eq!(recorded.id, expected.id);
    }
    let not_json = EventData::json("Broken", "{not json");
    let refused = store
        .append(&stream, ExpectedVersion::Any, vec![not_json])
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput(_))),
        "{refused:?}"
    );
}

/// `kurrentdb` links rustls with two crypto providers (aws-lc-rs through hyper-rustls, ring
/// through reqwest), where rustls refuses to choose one by itself; the `eventstore` crate was
/// known to panic in that situation. A TLS connection string, here against a server without
/// TLS, must end in a typed error and never a panic, with no provider installed by the
/// application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_string_works_without_the_application_installing_a_crypto_provider() {
    let double = ProtocolDouble::start();
    let url = double
        .url()
        .replace("tls=false", "tls=true&tlsVerifyCert=false");
    let store = EventStoreDbStore::connect(&url).await.unwrap();
    let appended = store
        .append(
            &stream(),
            ExpectedVersion::Any,
            vec![EventData::json("A", "{}")],
        )
        .await;
    assert!(
        matches!(appended, Err(StoreError::Unavailable { .. })),
        "{appended:?}"
    );
    assert_eq!(double.event_count(), 0);
}

/// The server's own `$` streams are in `$all` but never returned from it: a limited read
/// counts only what it returns, so it is not cut short by events it hides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_read_of_all_is_not_cut_short_by_hidden_system_events() {
    let (_double, store) = started().await;
    let system = StreamId::new("$stats-127.0.0.1:2113").unwrap();
    let ours = stream();
    store
        .append(
            &system,
            ExpectedVersion::Any,
            (0..3)
                .map(|_| EventData::json("$statsCollected", "{}"))
                .collect(),
        )
        .await
        .unwrap();
    store
        .append(
            &ours,
            ExpectedVersion::NoStream,
            (0..2).map(|_| EventData::json("A", "{}")).collect(),
        )
        .await
        .unwrap();
    let read: Vec<_> = store
        .read_all(None, Some(2), &decider_core::EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(read.len(), 2, "{read:#?}");
    assert!(read.iter().all(|event| event.stream == ours));
}
