//! For any sequence of commands — with idempotency keys repeated across commands, another writer
//! appending behind the caches' backs, snapshots deleted and caches cleared midway — a handler
//! with a cache, with snapshots, or with both, answers every command as the plain handler does
//! and leaves the same streams and states.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use decider_core::{
    CommandHandler, EventData, EventStore, ExpectedVersion, Metadata, RetryPolicy, SnapshotPolicy,
    StreamId,
};
use decider_store_memory::{MemorySnapshotStore, MemoryStore};
use proptest::prelude::*;
use support::{Account, Command, recorded};
use uuid::Uuid;

const STREAMS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Command {
        stream: usize,
        command: Command,
        key: Option<u8>,
    },
    /// Another writer deposits straight into the store, behind every cache's back.
    External {
        stream: usize,
        amount: u64,
    },
    DeleteSnapshots,
    ClearCaches,
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        2 => Just(Command::Open),
        4 => (1..50u64).prop_map(Command::Deposit),
        3 => (1..80u64).prop_map(Command::Withdraw),
        1 => Just(Command::Close),
        2 => (1..50u64).prop_map(Command::OpenWith),
        2 => (1..20u64).prop_map(Command::DepositTwice),
        1 => Just(Command::Touch),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..STREAMS, command(), proptest::option::of(0..4u8))
            .prop_map(|(stream, command, key)| Op::Command { stream, command, key }),
        3 => (0..STREAMS, 1..30u64).prop_map(|(stream, amount)| Op::External { stream, amount }),
        1 => Just(Op::DeleteSnapshots),
        1 => Just(Op::ClearCaches),
    ]
}

struct Variant {
    name: &'static str,
    handler: CommandHandler<Account, MemoryStore>,
    snapshots: MemorySnapshotStore,
}

fn variants() -> Vec<Variant> {
    let build = |name, cache: bool, snapshot: bool, assume_new: bool| {
        let snapshots = MemorySnapshotStore::new();
        let mut handler =
            CommandHandler::new(Account, MemoryStore::new()).with_retry_policy(RetryPolicy {
                base_delay: Duration::ZERO,
                ..RetryPolicy::default()
            });
        if cache {
            // Smaller than the number of streams, so that entries are evicted too.
            handler = handler.with_cache(2);
        }
        if snapshot {
            handler = handler.with_snapshots(snapshots.clone(), SnapshotPolicy::every(3));
        }
        if assume_new {
            handler = handler.assume_new_streams();
        }
        Variant {
            name,
            handler,
            snapshots,
        }
    };
    vec![
        build("plain", false, false, false),
        build("cache", true, false, false),
        build("snapshots", false, true, false),
        build("cache and snapshots", true, true, false),
        build("new streams assumed", false, false, true),
        build("cache, new streams assumed", true, false, true),
        build("everything", true, true, true),
    ]
}

fn name(stream: usize) -> StreamId {
    StreamId::new(format!("account-{stream}")).unwrap()
}

async fn run(ops: Vec<Op>) {
    let variants = variants();
    for (index, op) in ops.iter().enumerate() {
        let mut answers = Vec::new();
        for variant in &variants {
            let answer = match op {
                Op::Command {
                    stream,
                    command,
                    key,
                } => {
                    let mut metadata =
                        Metadata::default().with_correlation_id(Uuid::from_u128(index as u128));
                    if let Some(key) = key {
                        metadata = metadata.with_idempotency_key(format!("key-{key}"));
                    }
                    let result = variant
                        .handler
                        .handle_with(&name(*stream), command.clone(), metadata)
                        .await;
                    format!("{result:?}")
                }
                Op::External { stream, amount } => {
                    let event = EventData::json("Deposited", format!(r#"{{"amount":{amount}}}"#));
                    variant
                        .handler
                        .store()
                        .append(&name(*stream), ExpectedVersion::Any, vec![event])
                        .await
                        .unwrap();
                    String::new()
                }
                Op::DeleteSnapshots => {
                    variant.snapshots.clear();
                    String::new()
                }
                Op::ClearCaches => {
                    if let Some(cache) = variant.handler.cache() {
                        cache.clear();
                    }
                    String::new()
                }
            };
            answers.push(answer);
        }
        for (variant, answer) in variants.iter().zip(&answers).skip(1) {
            assert_eq!(
                answer, &answers[0],
                "op {index} ({op:?}): {} answered otherwise than plain",
                variant.name
            );
        }
    }
    for stream in (0..STREAMS).map(name) {
        let mut streams = Vec::new();
        for variant in &variants {
            let events: Vec<_> = recorded(variant.handler.store(), &stream)
                .await
                .into_iter()
                .map(|e| {
                    // Ids of keyed commands are derived from the key; the others are random.
                    let id = e.metadata.idempotency_key.is_some().then_some(e.id);
                    (
                        e.revision,
                        e.position,
                        id,
                        e.event_type,
                        e.payload,
                        e.metadata,
                    )
                })
                .collect();
            let state = variant.handler.load(&stream).await.unwrap();
            streams.push((events, state));
        }
        for (variant, stream_and_state) in variants.iter().zip(&streams).skip(1) {
            assert!(
                stream_and_state == &streams[0],
                "{stream}: {} left another stream or state than plain",
                variant.name
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn cache_and_snapshots_change_no_answer_stream_or_state(
        ops in proptest::collection::vec(op(), 0..60)
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}
