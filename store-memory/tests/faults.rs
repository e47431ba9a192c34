//! Fault injection does what it says: a refused append writes nothing; a lost reply has written.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use decider_core::{EventData, EventStore, ExpectedVersion, StoreError, StreamId};
use decider_store_memory::MemoryStore;

fn event() -> Vec<EventData> {
    vec![EventData::json("E", "{}")]
}

#[tokio::test]
async fn a_scheduled_refusal_hits_exactly_the_nth_append_and_writes_nothing() {
    let store = MemoryStore::new();
    let s = StreamId::new("s").unwrap();
    store.fail_append(2, StoreError::unavailable("down"));
    store
        .append(&s, ExpectedVersion::Any, event())
        .await
        .unwrap();
    let refused = store.append(&s, ExpectedVersion::Any, event()).await;
    assert_eq!(refused, Err(StoreError::unavailable("down")));
    assert_eq!(store.len(), 1);
    store
        .append(&s, ExpectedVersion::Exact(0), event())
        .await
        .unwrap();
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn a_lost_reply_has_written_and_its_retry_is_idempotent() {
    let store = MemoryStore::new();
    let s = StreamId::new("s").unwrap();
    store.commit_then_fail_append(1);
    let batch = event();
    let lost = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await;
    assert!(matches!(lost, Err(StoreError::Unavailable { .. })));
    assert_eq!(store.len(), 1);
    let retried = store
        .append(&s, ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    assert_eq!(retried.next_revision, 1);
    assert_eq!(store.len(), 1);
}
