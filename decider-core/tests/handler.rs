//! The command handler against the memory store: retries, terminal streams, idempotency,
//! metadata propagation.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use decider_core::{
    CommandError, CommandHandler, EventData, EventStore, ExpectedVersion, Metadata, RetryPolicy,
    SequentialIds, StoreError,
};
use decider_store_memory::MemoryStore;
use support::{Account, Command, Error, Event, RacingStore, State, recorded, stream};
use uuid::Uuid;

#[tokio::test]
async fn a_lost_race_is_decided_again_on_the_fresh_state() {
    let store = RacingStore::new(0);
    let accounts = CommandHandler::new(Account, store.clone());
    let s = stream();
    accounts.handle(&s, Command::OpenWith(100)).await.unwrap();
    store.interleave.store(1, Ordering::SeqCst);

    // Decided first on a balance of 100; the other writer's withdrawal of 60 wins the race, so
    // the retry must see 40 and refuse.
    let error = accounts
        .handle(&s, Command::Withdraw(50))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CommandError::Rejected(Error::InsufficientFunds { balance: 40 })
        ),
        "{error:?}"
    );
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(40));

    // Decided first on 100, then again on 40: still allowed, so it succeeds on the retry.
    accounts.handle(&s, Command::Deposit(60)).await.unwrap();
    store.interleave.store(1, Ordering::SeqCst);
    let outcome = accounts.handle(&s, Command::Withdraw(30)).await.unwrap();
    assert_eq!(outcome.events, vec![Event::Withdrawn { amount: 30 }]);
    assert_eq!(outcome.last_revision, Some(5));
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(10));
}

#[tokio::test]
async fn conflicts_beyond_the_retry_budget_are_returned_typed() {
    let store = RacingStore::new(0);
    let accounts = CommandHandler::new(Account, store.clone()).with_retry_policy(RetryPolicy {
        max_retries: 2,
        ..RetryPolicy::default()
    });
    let s = stream();
    accounts.handle(&s, Command::OpenWith(1_000)).await.unwrap();
    store.appends.store(0, Ordering::SeqCst);
    store.interleave.store(u32::MAX, Ordering::SeqCst);

    let error = accounts.handle(&s, Command::Deposit(1)).await.unwrap_err();
    assert!(error.is_conflict() && error.is_retryable(), "{error:?}");
    match error {
        CommandError::Store(StoreError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, s);
            // Revisions 0-1 were the opening; each attempt lost to one interleaved event.
            assert_eq!(expected, ExpectedVersion::Exact(3));
            assert_eq!(actual, Some(4));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.appends.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
    assert!(
        !recorded(&store, &s)
            .await
            .iter()
            .any(|e| e.event_type == "Deposited" && e.revision > 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_stream_lose_no_update() {
    let store = MemoryStore::new();
    let policy = RetryPolicy {
        max_retries: 1_000,
        ..RetryPolicy::default()
    };
    let accounts = Arc::new(CommandHandler::new(Account, store.clone()).with_retry_policy(policy));
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (accounts, s) = (accounts.clone(), s.clone());
            tokio::spawn(async move {
                for _ in 0..50 {
                    accounts.handle(&s, Command::Deposit(1)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(400));
    assert_eq!(recorded(&store, &s).await.len(), 401);
}

#[tokio::test]
async fn a_terminal_stream_refuses_commands_and_writes_nothing() {
    let accounts = CommandHandler::new(Account, MemoryStore::new());
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    accounts.handle(&s, Command::Close).await.unwrap();
    let error = accounts.handle(&s, Command::Deposit(5)).await.unwrap_err();
    assert!(
        matches!(&error, CommandError::Terminal { stream } if *stream == s),
        "{error:?}"
    );
    assert_eq!(recorded(accounts.store(), &s).await.len(), 2);
}

#[tokio::test]
async fn a_rejected_command_writes_nothing() {
    let accounts = CommandHandler::new(Account, MemoryStore::new());
    let s = stream();
    let error = accounts.handle(&s, Command::Deposit(5)).await.unwrap_err();
    assert!(matches!(error, CommandError::Rejected(Error::NotOpen)));
    assert!(accounts.store().is_empty());
}

#[tokio::test]
async fn an_accepted_command_without_events_appends_nothing() {
    let accounts = CommandHandler::new(Account, MemoryStore::new());
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    let outcome = accounts.handle(&s, Command::Touch).await.unwrap();
    assert!(outcome.events.is_empty() && outcome.position.is_none());
    assert_eq!(outcome.last_revision, Some(0));
    assert_eq!(accounts.store().len(), 1);
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_original_outcome_without_deciding_again() {
    let accounts = CommandHandler::new(Account, MemoryStore::new());
    let s = stream();
    let key = Metadata::default().with_idempotency_key("open-and-fund");
    let first = accounts
        .handle_with(&s, Command::OpenWith(70), key.clone())
        .await
        .unwrap();
    accounts.handle(&s, Command::Withdraw(70)).await.unwrap();
    accounts.handle(&s, Command::Close).await.unwrap();

    // Deciding again would be refused twice over (already open, and closed); the replay is not.
    let again = accounts
        .handle_with(&s, Command::OpenWith(70), key)
        .await
        .unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(again.events, first.events);
    assert_eq!(again.last_revision, Some(1));
    assert_eq!(again.position, first.position);
    assert_eq!(recorded(accounts.store(), &s).await.len(), 4);
}

#[tokio::test]
async fn a_reply_lost_after_commit_is_recovered_by_retrying_with_the_same_key() {
    let store = MemoryStore::new();
    let accounts = CommandHandler::new(Account, store.clone()).with_retry_policy(RetryPolicy {
        unavailable_retries: 0,
        ..RetryPolicy::default()
    });
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    store.commit_then_fail_append(1);
    let key = Metadata::default().with_idempotency_key("deposit-1");

    let lost = accounts
        .handle_with(&s, Command::Deposit(10), key.clone())
        .await
        .unwrap_err();
    assert!(lost.is_retryable(), "{lost:?}");
    let retried = accounts
        .handle_with(&s, Command::Deposit(10), key)
        .await
        .unwrap();
    assert!(retried.replayed);
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(10));
}

#[tokio::test]
async fn a_keyed_command_is_retried_by_the_handler_while_the_store_is_unavailable() {
    let store = MemoryStore::new();
    let accounts = CommandHandler::new(Account, store.clone());
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    // A reply lost after the commit, then two refusals: the key keeps it to one deposit.
    store.commit_then_fail_append(1);
    store.fail_append(2, StoreError::unavailable("down"));
    store.fail_append(3, StoreError::unavailable("down"));
    let key = Metadata::default().with_idempotency_key("deposit-1");

    let outcome = accounts
        .handle_with(&s, Command::Deposit(10), key)
        .await
        .unwrap();
    assert_eq!(outcome.events, vec![Event::Deposited { amount: 10 }]);
    assert_eq!(outcome.last_revision, Some(1));
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(10));
    assert_eq!(recorded(&store, &s).await.len(), 2, "written once");
}

#[tokio::test]
async fn a_keyed_command_gives_up_on_an_unavailable_store_after_its_budget() {
    let store = MemoryStore::new();
    let accounts = CommandHandler::new(Account, store.clone()).with_retry_policy(RetryPolicy {
        unavailable_retries: 2,
        unavailable_delay: std::time::Duration::from_millis(1),
        ..RetryPolicy::default()
    });
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    for nth in 1..=3 {
        store.fail_append(nth, StoreError::unavailable("down"));
    }
    let key = Metadata::default().with_idempotency_key("deposit-1");
    let error = accounts
        .handle_with(&s, Command::Deposit(10), key.clone())
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    // The budget was three attempts: the fourth append goes through.
    let outcome = accounts
        .handle_with(&s, Command::Deposit(10), key)
        .await
        .unwrap();
    assert!(!outcome.replayed);
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(10));
}

#[tokio::test]
async fn a_command_without_a_key_is_not_retried_when_the_store_is_unavailable() {
    let store = MemoryStore::new();
    let accounts = CommandHandler::new(Account, store.clone());
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    // A retry could not tell this lost reply from a refusal, and would deposit twice.
    store.commit_then_fail_append(1);
    let error = accounts.handle(&s, Command::Deposit(10)).await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(
        recorded(&store, &s).await.len(),
        2,
        "written once, not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_commands_racing_write_exactly_one_set_of_events() {
    for _ in 0..20 {
        let accounts = Arc::new(CommandHandler::new(Account, MemoryStore::new()));
        let s = stream();
        let key = Metadata::default().with_idempotency_key("same-request");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (accounts, s, key) = (accounts.clone(), s.clone(), key.clone());
                tokio::spawn(
                    async move { accounts.handle_with(&s, Command::OpenWith(5), key).await },
                )
            })
            .collect();
        let mut written = 0;
        for task in tasks {
            let outcome = task.await.unwrap().unwrap();
            assert_eq!(
                outcome.events,
                vec![Event::Opened, Event::Deposited { amount: 5 }]
            );
            written += usize::from(!outcome.replayed);
        }
        assert!(written >= 1, "at least one caller wrote");
        let events = recorded(accounts.store(), &s).await;
        assert_eq!(events.len(), 2, "exactly one set of events");
        assert!(
            events
                .iter()
                .all(|e| e.metadata.idempotency_key.as_deref() == Some("same-request"))
        );
    }
}

#[tokio::test]
async fn correlation_causation_and_headers_flow_onto_every_event() {
    let accounts =
        CommandHandler::new(Account, MemoryStore::new()).with_ids(SequentialIds::default());
    let s = stream();
    let metadata = Metadata::default()
        .with_correlation_id(Uuid::from_u128(7))
        .with_causation_id(Uuid::from_u128(8))
        .with_header("user", "ada");
    accounts
        .handle_with(&s, Command::OpenWith(5), metadata.clone())
        .await
        .unwrap();
    accounts.handle(&s, Command::Deposit(1)).await.unwrap();

    let events = recorded(accounts.store(), &s).await;
    assert_eq!(events[0].metadata, metadata);
    assert_eq!(events[1].metadata, metadata);
    // Without a correlation id the handler draws one per command, shared by its events; ids
    // come from the injected generator.
    assert_eq!(events[0].id, Uuid::from_u128(1));
    assert_eq!(events[1].id, Uuid::from_u128(2));
    assert_eq!(events[2].metadata.correlation_id, Some(Uuid::from_u128(3)));
    assert_eq!(events[2].id, Uuid::from_u128(4));
}

#[tokio::test]
async fn an_undecodable_event_in_the_stream_is_a_typed_error_not_a_panic() {
    let store = MemoryStore::new();
    let accounts = CommandHandler::new(Account, store.clone());
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![EventData::json("Frozen", "{}")],
        )
        .await
        .unwrap();
    let error = accounts.handle(&s, Command::Deposit(1)).await.unwrap_err();
    match error {
        CommandError::Codec(codec) => assert_eq!(
            codec.to_string(),
            format!("stream {s} revision 1: unknown event type \"Frozen\"")
        ),
        other => panic!("{other:?}"),
    }
}
