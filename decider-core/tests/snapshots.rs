//! Snapshots in the command handler: a cold load reads the latest snapshot and the events after
//! it; a snapshot that cannot be used — deleted, of an old state version, undecodable, ahead of
//! its stream, unreachable — changes no result.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use decider_core::{
    CommandError, CommandHandler, Metadata, Snapshot, SnapshotPolicy, SnapshotStore, StoreError,
    StreamFrom, StreamId,
};
use decider_store_memory::MemorySnapshotStore;
use support::{Account, Command, Error, Event, RacingStore, State, recorded, stream};

fn snapshot(stream: &StreamId, revision: u64, state_version: u32, state: &str) -> Snapshot {
    Snapshot {
        stream: stream.clone(),
        revision,
        state_version,
        payload: state.to_owned().into(),
    }
}

/// An account opened with 24 deposits of 1 (revisions 0 to 24), by a handler taking a snapshot
/// every 10 events.
async fn long_account(
    store: &RacingStore,
    snapshots: &MemorySnapshotStore,
) -> (CommandHandler<Account, RacingStore>, StreamId) {
    let accounts = CommandHandler::new(Account, store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::every(10));
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    for _ in 0..24 {
        accounts.handle(&s, Command::Deposit(1)).await.unwrap();
    }
    store.take_reads();
    (accounts, s)
}

#[tokio::test]
async fn a_cold_load_reads_the_latest_snapshot_and_only_the_events_after_it() {
    let (store, snapshots) = (RacingStore::default(), MemorySnapshotStore::new());
    let (accounts, s) = long_account(&store, &snapshots).await;
    // Taken when the stream reached 10 and 20 events.
    let latest = snapshots.load(&s).await.unwrap().unwrap();
    assert_eq!((latest.revision, latest.state_version), (19, 1));
    assert_eq!(
        serde_json::from_slice::<State>(&latest.payload).unwrap(),
        State::Open(19)
    );

    let loaded = accounts.load(&s).await.unwrap();
    assert_eq!(
        (loaded.state, loaded.last_revision),
        (State::Open(24), Some(24))
    );
    accounts.handle(&s, Command::Withdraw(24)).await.unwrap();
    assert_eq!(
        store.take_reads(),
        [StreamFrom::Revision(20), StreamFrom::Revision(20)]
    );
}

#[tokio::test]
async fn deleting_every_snapshot_changes_no_result() {
    let (store, snapshots) = (RacingStore::default(), MemorySnapshotStore::new());
    let (accounts, s) = long_account(&store, &snapshots).await;
    let before = accounts.load(&s).await.unwrap();
    snapshots.clear();
    assert_eq!(accounts.load(&s).await.unwrap(), before);
    assert_eq!(
        store.take_reads(),
        [StreamFrom::Revision(20), StreamFrom::Start]
    );
    // The command read 25 events: the snapshot is missing, so it takes one.
    let outcome = accounts.handle(&s, Command::Withdraw(5)).await.unwrap();
    assert_eq!(outcome.last_revision, Some(25));
    assert_eq!(
        snapshots.load(&s).await.unwrap().map(|s| s.revision),
        Some(25)
    );
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(19));
}

#[tokio::test]
async fn a_snapshot_of_an_old_state_version_is_ignored() {
    let (store, snapshots) = (RacingStore::default(), MemorySnapshotStore::new());
    let plain = CommandHandler::new(Account, store.clone());
    let s = stream();
    plain.handle(&s, Command::OpenWith(30)).await.unwrap();
    // Written by an older build whose state had another meaning: it decodes, wrongly.
    snapshots
        .save(snapshot(&s, 1, 1, r#"{"Open":999}"#))
        .await
        .unwrap();

    let v1 = CommandHandler::new(Account, store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::every(10));
    assert_eq!(v1.load(&s).await.unwrap().state, State::Open(999));

    let v2 = CommandHandler::new(Account, store.clone()).with_snapshots(
        snapshots.clone(),
        SnapshotPolicy::every(10).with_state_version(2),
    );
    assert_eq!(v2.load(&s).await.unwrap().state, State::Open(30));
    let error = v2.handle(&s, Command::Withdraw(100)).await.unwrap_err();
    assert!(
        matches!(
            error,
            CommandError::Rejected(Error::InsufficientFunds { balance: 30 })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_undecodable_snapshot_is_ignored() {
    let (store, snapshots) = (RacingStore::default(), MemorySnapshotStore::new());
    let s = stream();
    let accounts = CommandHandler::new(Account, store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::every(10));
    accounts.handle(&s, Command::OpenWith(30)).await.unwrap();
    snapshots
        .save(snapshot(&s, 1, 1, r#"{"Frozen":true}"#))
        .await
        .unwrap();
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(30));
    accounts.handle(&s, Command::Withdraw(30)).await.unwrap();
}

#[tokio::test]
async fn a_snapshot_ahead_of_its_stream_is_read_past_by_commands() {
    let (store, snapshots) = (RacingStore::default(), MemorySnapshotStore::new());
    let s = stream();
    let accounts = CommandHandler::new(Account, store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::every(100));
    accounts.handle(&s, Command::OpenWith(30)).await.unwrap();
    // A snapshot of events this store does not hold (say, restored from another database).
    snapshots
        .save(snapshot(&s, 50, 1, r#"{"Open":999}"#))
        .await
        .unwrap();
    // Decided on 999 and refused by the store (the stream is at revision 1), then decided again
    // on the events themselves.
    let error = accounts
        .handle(&s, Command::Withdraw(500))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CommandError::Rejected(Error::InsufficientFunds { balance: 30 })
        ),
        "{error:?}"
    );
    let outcome = accounts.handle(&s, Command::Withdraw(30)).await.unwrap();
    assert_eq!(outcome.last_revision, Some(2));
}

/// A snapshot store that is down.
struct Unreachable;

impl SnapshotStore for Unreachable {
    async fn save(&self, _: Snapshot) -> Result<(), StoreError> {
        Err(StoreError::unavailable("snapshots are down"))
    }
    async fn load(&self, _: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        Err(StoreError::unavailable("snapshots are down"))
    }
}

#[tokio::test]
async fn a_failing_snapshot_store_fails_no_command() {
    let accounts = CommandHandler::new(Account, RacingStore::default())
        .with_snapshots(Unreachable, SnapshotPolicy::every(1));
    let s = stream();
    accounts.handle(&s, Command::OpenWith(10)).await.unwrap();
    accounts.handle(&s, Command::Deposit(5)).await.unwrap();
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(15));
}

#[tokio::test]
async fn a_repeated_key_from_before_or_after_the_snapshot_returns_the_original() {
    let (store, snapshots) = (RacingStore::default(), MemorySnapshotStore::new());
    let first = CommandHandler::new(Account, store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::every(5));
    let s = stream();
    let open = Metadata::default().with_idempotency_key("open");
    let deposit = Metadata::default().with_idempotency_key("deposit");
    let late = Metadata::default().with_idempotency_key("late");
    first
        .handle_with(&s, Command::OpenWith(70), open.clone())
        .await
        .unwrap();
    first
        .handle_with(&s, Command::Deposit(3), deposit.clone())
        .await
        .unwrap();
    for _ in 0..10 {
        first.handle(&s, Command::Deposit(1)).await.unwrap();
    }
    first
        .handle_with(&s, Command::Deposit(4), late.clone())
        .await
        .unwrap();
    // Taken when the stream reached 5 and 10 events; "late" is at revision 13.
    assert_eq!(snapshots.load(&s).await.unwrap().unwrap().revision, 9);
    let written = recorded(&store.inner, &s).await.len();

    // Another process, cold, loading from the snapshot at revision 9.
    let second = CommandHandler::new(Account, store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::every(5));
    // Refused by the snapshot's state (already open): the handler searches the stream.
    let again = second
        .handle_with(&s, Command::OpenWith(70), open)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        again.events,
        vec![Event::Opened, Event::Deposited { amount: 70 }]
    );
    // Accepted by the snapshot's state: the store recognises the event ids.
    let again = second
        .handle_with(&s, Command::Deposit(3), deposit)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.last_revision, Some(2));
    // Found among the events after the snapshot.
    let again = second
        .handle_with(&s, Command::Deposit(4), late)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.last_revision, Some(13));
    assert_eq!(recorded(&store.inner, &s).await.len(), written);
}

#[tokio::test]
async fn a_repeated_key_split_by_a_snapshot_returns_all_its_events() {
    let (store, snapshots) = (RacingStore::default(), MemorySnapshotStore::new());
    let accounts = CommandHandler::new(Account, store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::every(100));
    let s = stream();
    let open = Metadata::default().with_idempotency_key("open");
    accounts
        .handle_with(&s, Command::OpenWith(70), open.clone())
        .await
        .unwrap();
    // The handler snapshots after whole appends only, but any writer may: this one took the
    // state between the two events of the keyed command.
    snapshots
        .save(snapshot(&s, 0, 1, r#"{"Open":0}"#))
        .await
        .unwrap();
    let again = accounts
        .handle_with(&s, Command::OpenWith(70), open)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        again.events,
        vec![Event::Opened, Event::Deposited { amount: 70 }]
    );
}
