//! The command handler's state cache: a warm stream costs one append, a stale entry costs a
//! retry and never a wrong decision, idempotency keys still answer with the original outcome.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use decider_core::{
    CommandError, CommandHandler, EventData, EventStore, ExpectedVersion, Metadata, RetryPolicy,
    StreamFrom,
};
use decider_store_memory::MemoryStore;
use support::{
    Account, Command, Error, RacingStore, State, Tally, TallyEvent, assert_tally_chain, recorded,
    stream,
};

#[tokio::test]
async fn a_command_on_a_warm_stream_appends_without_reading() {
    let store = RacingStore::default();
    let accounts = CommandHandler::new(Account, store.clone()).with_cache(100);
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    assert_eq!(
        store.take_reads(),
        [StreamFrom::Start],
        "a cold stream is read"
    );
    for _ in 0..3 {
        accounts.handle(&s, Command::Deposit(10)).await.unwrap();
    }
    assert_eq!(store.take_reads(), [], "a warm stream is not");
    assert_eq!(store.take_appends(), 4);
    let cached = accounts.cache().unwrap().get(&s).unwrap();
    assert_eq!(cached.state, State::Open(30));
    assert_eq!(cached.last_revision, Some(3));
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(30));
}

#[tokio::test]
async fn a_stale_entry_costs_a_retry_on_the_missed_events_never_a_wrong_decision() {
    let store = RacingStore::default();
    let accounts = CommandHandler::new(Account, store.clone()).with_cache(100);
    let s = stream();
    accounts.handle(&s, Command::OpenWith(100)).await.unwrap();
    // Another process withdraws 60 behind the cache's back.
    let other = CommandHandler::new(Account, store.clone());
    other.handle(&s, Command::Withdraw(60)).await.unwrap();
    store.take_reads();

    // The cache says 100, so 50 looks affordable; the append must fail, and the retry must
    // decide on 40 after reading only the event it missed.
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
    assert_eq!(store.take_reads(), [StreamFrom::Revision(2)]);
    assert_eq!(recorded(&store.inner, &s).await.len(), 3);
    // The refusal left the caught-up state in the cache.
    let cached = accounts.cache().unwrap().get(&s).unwrap();
    assert_eq!(
        (cached.state, cached.last_revision),
        (State::Open(40), Some(2))
    );
    accounts.handle(&s, Command::Withdraw(40)).await.unwrap();
    assert_eq!(store.take_reads(), []);
}

#[tokio::test]
async fn a_stale_entry_still_counts_against_the_retry_budget() {
    let store = RacingStore::default();
    let accounts = CommandHandler::new(Account, store.clone())
        .with_cache(100)
        .with_retry_policy(RetryPolicy {
            max_retries: 1,
            base_delay: Duration::ZERO,
            ..RetryPolicy::default()
        });
    let s = stream();
    accounts.handle(&s, Command::OpenWith(1_000)).await.unwrap();
    store.take_appends();
    store.interleave.store(u32::MAX, Ordering::SeqCst);
    let error = accounts.handle(&s, Command::Deposit(1)).await.unwrap_err();
    assert!(error.is_conflict(), "{error:?}");
    assert_eq!(store.take_appends(), 2, "one attempt and one retry");
    assert!(
        accounts.cache().unwrap().get(&s).is_none(),
        "the stale entry was dropped"
    );
}

#[tokio::test]
async fn a_repeated_key_on_a_warm_stream_returns_the_original_without_writing_twice() {
    let accounts = CommandHandler::new(Account, MemoryStore::new()).with_cache(100);
    let s = stream();
    accounts.handle(&s, Command::Open).await.unwrap();
    let key = Metadata::default().with_idempotency_key("deposit-1");
    let first = accounts
        .handle_with(&s, Command::Deposit(10), key.clone())
        .await
        .unwrap();

    // At once, with the cache right after the original: the store recognises the event ids.
    let again = accounts
        .handle_with(&s, Command::Deposit(10), key.clone())
        .await
        .unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(
        (again.events, again.last_revision, again.position),
        (first.events.clone(), first.last_revision, first.position)
    );

    // Later, with other events after it, and with a command that now decides two events: its
    // ids include the original's, which the store refuses as reused; the handler searches.
    accounts.handle(&s, Command::Deposit(5)).await.unwrap();
    let later = accounts
        .handle_with(&s, Command::DepositTwice(10), key.clone())
        .await
        .unwrap();
    assert!(later.replayed);
    assert_eq!(later.events, first.events);
    assert_eq!(later.last_revision, Some(1));

    // A command the cached state refuses, or a terminal stream: nothing reaches the store,
    // so the handler searches the stream for the key before answering.
    accounts.handle(&s, Command::Close).await.unwrap();
    let closed = accounts
        .handle_with(&s, Command::Deposit(10), key)
        .await
        .unwrap();
    assert!(closed.replayed);
    assert_eq!(closed.events, first.events);

    let events = recorded(accounts.store(), &s).await;
    assert_eq!(events.len(), 4, "open, the keyed deposit once, 5, close");
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Closed);
}

#[tokio::test]
async fn a_new_key_on_a_warm_stream_refused_by_the_state_is_refused_after_the_search() {
    let accounts = CommandHandler::new(Account, MemoryStore::new()).with_cache(100);
    let s = stream();
    accounts.handle(&s, Command::OpenWith(5)).await.unwrap();
    let key = Metadata::default().with_idempotency_key("too-much");
    let error = accounts
        .handle_with(&s, Command::Withdraw(50), key)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CommandError::Rejected(Error::InsufficientFunds { balance: 5 })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_lost_reply_on_a_warm_stream_is_recovered_by_the_same_key() {
    let store = MemoryStore::new();
    let accounts = CommandHandler::new(Account, store.clone())
        .with_cache(100)
        .with_retry_policy(RetryPolicy {
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
    // The entry the lost append was decided on is gone: the stream may have moved.
    assert!(accounts.cache().unwrap().get(&s).is_none());

    let retried = accounts
        .handle_with(&s, Command::Deposit(10), key)
        .await
        .unwrap();
    assert!(retried.replayed);
    assert_eq!(retried.last_revision, Some(1));
    assert_eq!(accounts.load(&s).await.unwrap().state, State::Open(10));
    assert_eq!(recorded(&store, &s).await.len(), 2);
}

#[tokio::test]
async fn a_refused_command_on_a_cold_stream_warms_the_cache() {
    let store = RacingStore::default();
    let accounts = CommandHandler::new(Account, store.clone()).with_cache(100);
    let s = stream();
    let error = accounts.handle(&s, Command::Deposit(1)).await.unwrap_err();
    assert!(matches!(error, CommandError::Rejected(Error::NotOpen)));
    assert_eq!(store.take_reads().len(), 1);
    // The empty stream's state is cached too; opening it needs no read.
    accounts.handle(&s, Command::Open).await.unwrap();
    assert_eq!(store.take_reads(), []);
    assert_eq!(recorded(&store.inner, &s).await.len(), 1);
}

#[tokio::test]
async fn a_small_cache_evicts_and_every_result_stays_right() {
    let store = RacingStore::default();
    let accounts = CommandHandler::new(Account, store.clone()).with_cache(2);
    let streams: Vec<_> = (0..5).map(|_| stream()).collect();
    for s in &streams {
        accounts.handle(s, Command::Open).await.unwrap();
    }
    for round in 1..=3 {
        for s in &streams {
            let outcome = accounts.handle(s, Command::Deposit(round)).await.unwrap();
            assert_eq!(outcome.last_revision, Some(round));
        }
    }
    assert!(accounts.cache().unwrap().len() <= 2);
    for s in &streams {
        assert_eq!(accounts.load(s).await.unwrap().state, State::Open(6));
    }
}

/// Two handlers in one process, one with a cache, on one stream: every command is decided on
/// the total of all events before it (the tally's events record it), none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_from_a_cached_and_a_plain_handler_lose_no_update() {
    let store = MemoryStore::new();
    let policy = RetryPolicy {
        max_retries: 10_000,
        base_delay: Duration::from_micros(50),
        max_delay: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let cached = Arc::new(
        CommandHandler::new(Tally, store.clone())
            .with_cache(100)
            .with_retry_policy(policy),
    );
    let plain = Arc::new(CommandHandler::new(Tally, store.clone()).with_retry_policy(policy));
    let s = stream();
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (cached, plain, s) = (cached.clone(), plain.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..50 {
                if (task + n) % 2 == 0 {
                    cached.handle(&s, 1).await.unwrap();
                } else {
                    plain.handle(&s, 1).await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(assert_tally_chain(&store, &s).await, 400);
    assert_eq!(recorded(&store, &s).await.len(), 400);
    assert_eq!(cached.load(&s).await.unwrap().state, 400);
}

#[tokio::test]
async fn an_append_behind_the_cache_by_another_writer_is_caught_up() {
    let store = MemoryStore::new();
    let tallies = CommandHandler::new(Tally, store.clone()).with_cache(10);
    let s = stream();
    tallies.handle(&s, 1).await.unwrap();
    store
        .append(
            &s,
            ExpectedVersion::Exact(0),
            vec![EventData::json("Added", r#"{"n":5,"total":6}"#)],
        )
        .await
        .unwrap();
    let outcome = tallies.handle(&s, 1).await.unwrap();
    assert_eq!(outcome.events, vec![TallyEvent::Added { n: 1, total: 7 }]);
    assert_eq!(assert_tally_chain(&store, &s).await, 7);
}
