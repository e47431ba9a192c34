//! When the database goes away, refuses, or is handed bad input: typed errors, nothing half
//! written, and the next call works.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use decider_core::{
    EventData, EventStore, ExpectedVersion, MAX_PAYLOAD_BYTES, StoreError, StreamId,
};
use decider_store_postgres::{PostgresOptions, PostgresStore};
use futures::TryStreamExt;
use support::{drop_store, fresh_store, fresh_store_with, raw_client, unmigrated_store};
use uuid::Uuid;

async fn stream_len(store: &PostgresStore, stream: &StreamId) -> usize {
    store
        .read_whole_stream(stream)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len()
}

fn stream() -> StreamId {
    StreamId::new(format!("fail-{}", Uuid::new_v4())).unwrap()
}

#[tokio::test]
async fn a_database_that_does_not_answer_is_unavailable() {
    let refused = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test").await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable { .. })),
        "{refused:?}"
    );
    let malformed = PostgresStore::connect("not a url").await;
    assert!(
        matches!(malformed, Err(StoreError::InvalidInput(_))),
        "{malformed:?}"
    );
}

/// Holds an event with `id` in an open transaction of another client, so that an append of an
/// event with the same id blocks inside its INSERT, on the unique index, mid-way through.
async fn hold_event_id(store: &PostgresStore, id: Uuid) -> tokio_postgres::Client {
    let other = raw_client().await;
    other
        .batch_execute(&format!(
            "BEGIN; INSERT INTO \"{}\".events (stream_id, revision, event_id, event_type, data, metadata) \
             VALUES ('elsewhere', 0, '{id}', 'X', '{{}}', '{{}}')",
            store.schema()
        ))
        .await
        .unwrap();
    other
}

/// Waits for a backend of `store` other than `previous` to block on a lock.
async fn blocked_backend(
    monitor: &tokio_postgres::Client,
    store: &PostgresStore,
    previous: Option<i32>,
) -> i32 {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let rows = monitor
                .query(
                    "SELECT pid FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' \
                     AND pid IS DISTINCT FROM $2",
                    &[&store.schema(), &previous],
                )
                .await
                .unwrap();
            if let Some(row) = rows.first() {
                return row.get(0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no append blocked on the held event id")
}

/// Waits for a backend of `store` other than `previous` to block on a lock, and terminates it.
async fn terminate_blocked_backend(
    monitor: &tokio_postgres::Client,
    store: &PostgresStore,
    previous: Option<i32>,
) -> i32 {
    let pid = blocked_backend(monitor, store, previous).await;
    monitor
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    pid
}

fn blocked_append(
    store: &PostgresStore,
    s: &StreamId,
    blocking_id: Uuid,
) -> tokio::task::JoinHandle<Result<decider_core::AppendResult, StoreError>> {
    let (store, s) = (store.clone(), s.clone());
    tokio::spawn(async move {
        let events = vec![
            EventData::json("First", "{}"),
            EventData::json("Second", "{}").with_id(blocking_id),
        ];
        store.append(&s, ExpectedVersion::NoStream, events).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_mid_append_is_retried_on_another_connection_and_writes_once() {
    let store = fresh_store().await;
    let s = stream();
    let blocking_id = Uuid::new_v4();
    let other = hold_event_id(&store, blocking_id).await;
    let append = blocked_append(&store, &s, blocking_id);
    let monitor = raw_client().await;
    let first = terminate_blocked_backend(&monitor, &store, None).await;
    // The store sent the append again, on another connection, which blocks in turn.
    blocked_backend(&monitor, &store, Some(first)).await;
    assert!(!append.is_finished());
    // The other client gives its id up: the append goes through, once.
    other.batch_execute("ROLLBACK").await.unwrap();
    let written = tokio::time::timeout(Duration::from_secs(10), append)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(written.next_revision, 2);
    assert!(!written.repeated);
    assert_eq!(stream_len(&store, &s).await, 2);
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_mid_append_on_every_attempt_writes_nothing_and_the_pool_recovers() {
    let store = fresh_store().await;
    let s = stream();
    let blocking_id = Uuid::new_v4();
    let other = hold_event_id(&store, blocking_id).await;
    let append = blocked_append(&store, &s, blocking_id);
    let monitor = raw_client().await;
    let mut previous = None;
    // The store sends a statement on three connections at most.
    for _ in 0..3 {
        previous = Some(terminate_blocked_backend(&monitor, &store, previous).await);
    }
    let result = tokio::time::timeout(Duration::from_secs(10), append)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );
    other.batch_execute("ROLLBACK").await.unwrap();

    // Nothing of the batch was written, the stream does not exist, and the pool works.
    assert_eq!(stream_len(&store, &s).await, 0);
    let again = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![EventData::json("First", "{}")],
        )
        .await
        .unwrap();
    assert_eq!(again.next_revision, 1);
    drop_store(store).await;
}

#[tokio::test]
async fn a_pool_with_no_free_connection_times_out_as_unavailable() {
    let store = fresh_store_with(PostgresOptions {
        pool_size: 1,
        pool_timeout: Duration::from_millis(200),
        ..PostgresOptions::default()
    })
    .await;
    let busy = store.pool().get().await.unwrap();
    let result = store
        .append(
            &stream(),
            ExpectedVersion::Any,
            vec![EventData::json("E", "{}")],
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );
    drop(busy);
    drop_store(store).await;
}

#[tokio::test]
async fn payloads_that_are_not_json_are_refused_naming_the_event_and_nothing_is_written() {
    let store = fresh_store().await;
    let s = stream();
    let cases = [
        EventData::json("Truncated", r#"{"amount": 1"#),
        EventData::json("Text", "hello"),
        EventData::json("Empty", ""),
        EventData::json("Latin1", vec![0xff, 0xfe]),
    ];
    for bad in cases {
        let event_type = bad.event_type.clone();
        let batch = vec![EventData::json("Good", "{}"), bad];
        match store.append(&s, ExpectedVersion::Any, batch).await {
            Err(StoreError::InvalidInput(message)) => {
                assert!(
                    message.contains(&format!("event 1 ({event_type:?}")),
                    "{message}"
                );
            }
            other => panic!("{event_type}: {other:?}"),
        }
    }
    assert_eq!(stream_len(&store, &s).await, 0);
    drop_store(store).await;
}

#[tokio::test]
async fn json_postgres_cannot_hold_and_bad_event_types_are_invalid_input() {
    let store = fresh_store().await;
    let s = stream();
    // Valid JSON, but jsonb has no NUL character.
    let nul_in_string = EventData::json("Nul", r#"{"name":"a\u0000b"}"#);
    let nul_in_type = EventData::json("Bad\0Type", "{}");
    let empty_type = EventData::json("", "{}");
    let nul_in_header = EventData::json("Header", "{}")
        .with_metadata(decider_core::Metadata::default().with_header("x", "a\0b"));
    for bad in [nul_in_string, nul_in_type, empty_type, nul_in_header] {
        let result = store
            .append(&s, ExpectedVersion::Any, vec![bad.clone()])
            .await;
        assert!(
            matches!(result, Err(StoreError::InvalidInput(_))),
            "{bad:?}: {result:?}"
        );
    }
    assert_eq!(stream_len(&store, &s).await, 0);
    drop_store(store).await;
}

#[tokio::test]
async fn a_ten_megabyte_event_round_trips_and_one_over_the_limit_is_refused() {
    let store = fresh_store().await;
    let s = stream();
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(10 * 1024 * 1024));
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![EventData::json("Big", big.clone())],
        )
        .await
        .unwrap();
    let read: Vec<_> = store.read_whole_stream(&s).try_collect().await.unwrap();
    // jsonb keeps the value, not the spelling (it writes `{"blob": "…"}`).
    let value: serde_json::Value = serde_json::from_slice(&read[0].payload).unwrap();
    assert_eq!(
        value,
        serde_json::from_str::<serde_json::Value>(&big).unwrap()
    );

    let too_big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    let refused = store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![EventData::json("TooBig", too_big)],
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput(_))),
        "{refused:?}"
    );
    assert_eq!(stream_len(&store, &s).await, 1);
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_at_once_by_several_processes_apply_once() {
    let store = unmigrated_store(PostgresOptions::default()).await;
    // Separate pools stand for separate processes.
    let mut racers = Vec::new();
    for _ in 0..4 {
        let url = support::database_url();
        let options = PostgresOptions {
            schema: store.schema().to_owned(),
            ..PostgresOptions::default()
        };
        racers.push(tokio::spawn(async move {
            PostgresStore::connect_with(&url, options)
                .await?
                .migrate()
                .await
        }));
    }
    for racer in racers {
        racer.await.unwrap().unwrap();
    }
    store.migrate().await.unwrap();
    let client = store.pool().get().await.unwrap();
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT version), min(version), max(version) \
                 FROM \"{}\".schema_migrations",
                store.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    let (applied, distinct): (i64, i64) = (row.get(0), row.get(1));
    let (first, last): (i32, i32) = (row.get(2), row.get(3));
    assert_eq!(applied, distinct, "a migration was applied twice");
    assert_eq!(
        (first, i64::from(last)),
        (1, applied),
        "migrations are 1..n, each once"
    );
    drop(client);
    drop_store(store).await;
}

#[tokio::test]
async fn a_store_whose_schema_was_never_migrated_says_so() {
    let store = unmigrated_store(PostgresOptions::default()).await;
    let result = store
        .append(
            &stream(),
            ExpectedVersion::Any,
            vec![EventData::json("E", "{}")],
        )
        .await;
    match result {
        Err(StoreError::Backend { message, .. }) => {
            assert!(message.contains("migrate"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_error_keeps_the_drivers_error_with_its_sqlstate_as_source() {
    let store = unmigrated_store(PostgresOptions::default()).await;
    let error = store
        .append(
            &stream(),
            ExpectedVersion::Any,
            vec![EventData::json("E", "{}")],
        )
        .await
        .unwrap_err();
    let source =
        std::error::Error::source(&error).unwrap_or_else(|| panic!("no source: {error:?}"));
    let driver = source
        .downcast_ref::<tokio_postgres::Error>()
        .unwrap_or_else(|| panic!("the source is not the driver's error: {source:?}"));
    let code = driver.code().map(|code| code.code().to_owned());
    // 3F000 invalid schema name or 42P01/42883 undefined table or function: what is missing
    // depends on how far the statement got.
    assert!(
        matches!(code.as_deref(), Some("3F000" | "42P01" | "42883")),
        "{code:?}: {driver}"
    );
}

#[tokio::test]
async fn a_refused_connection_keeps_the_io_error_in_its_source_chain() {
    let error = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    let mut chain = std::error::Error::source(&error);
    let mut kinds = Vec::new();
    while let Some(cause) = chain {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            kinds.push(io.kind());
        }
        chain = cause.source();
    }
    assert!(
        kinds.contains(&std::io::ErrorKind::ConnectionRefused),
        "no refused connection in the chain of {error:?}"
    );
}
