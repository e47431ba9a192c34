//! Model-based property test: any sequence of appends — right, wrong and repeated expectations,
//! repeated batches — leaves the memory store exactly where a trivially correct model says.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use decider_core::{
    AppendResult, Direction, EventData, EventFilter, EventStore, ExpectedVersion, Position,
    StoreError, StreamFrom, StreamId,
};
use decider_store_memory::MemoryStore;
use futures::TryStreamExt;
use proptest::prelude::*;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    /// Append `size` new events to stream `stream`.
    Append {
        stream: usize,
        expected: ExpectedVersion,
        size: usize,
    },
    /// Append again the `nth` earlier batch (modulo the number of batches so far).
    Repeat {
        nth: usize,
        expected: ExpectedVersion,
    },
}

fn expected_version() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        Just(ExpectedVersion::StreamExists),
        (0u64..6).prop_map(ExpectedVersion::Exact),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3, expected_version(), 1usize..4)
            .prop_map(|(stream, expected, size)| Op::Append { stream, expected, size }),
        1 => (any::<usize>(), expected_version())
            .prop_map(|(nth, expected)| Op::Repeat { nth, expected }),
    ]
}

/// The model: each stream's event ids, the global order, and each successful batch's result.
#[derive(Default)]
struct Model {
    streams: [Vec<Uuid>; 3],
    global: Vec<(usize, Uuid)>,
    batches: Vec<(usize, Vec<Uuid>, AppendResult)>,
}

impl Model {
    fn last(&self, stream: usize) -> Option<u64> {
        (self.streams[stream].len() as u64).checked_sub(1)
    }

    fn append(
        &mut self,
        stream: usize,
        expected: ExpectedVersion,
        ids: Vec<Uuid>,
    ) -> Option<AppendResult> {
        if !expected.is_met_by(self.last(stream)) {
            return None;
        }
        for id in &ids {
            self.streams[stream].push(*id);
            self.global.push((stream, *id));
        }
        let n = self.global.len() as u64;
        let result = AppendResult {
            next_revision: self.streams[stream].len() as u64,
            position: Position::new(n, n),
            repeated: false,
        };
        self.batches.push((stream, ids, result));
        Some(result)
    }
}

fn name(stream: usize) -> StreamId {
    StreamId::new(format!("s-{stream}")).unwrap()
}

fn batch(ids: &[Uuid]) -> Vec<EventData> {
    ids.iter()
        .map(|id| EventData::json("E", "{}").with_id(*id))
        .collect()
}

async fn run(ops: Vec<Op>) {
    let store = MemoryStore::new();
    let mut model = Model::default();
    let mut next_id = 0u128;
    for op in ops {
        match op {
            Op::Append {
                stream,
                expected,
                size,
            } => {
                let ids: Vec<Uuid> = (0..size)
                    .map(|_| {
                        next_id += 1;
                        Uuid::from_u128(next_id)
                    })
                    .collect();
                let actual = store.append(&name(stream), expected, batch(&ids)).await;
                let last = model.last(stream);
                match (model.append(stream, expected, ids), actual) {
                    (Some(want), Ok(got)) => assert_eq!(want, got),
                    (
                        None,
                        Err(StoreError::WrongExpectedVersion {
                            stream: s,
                            expected: e,
                            actual,
                        }),
                    ) => {
                        assert_eq!((s, e, actual), (name(stream), expected, last));
                    }
                    (want, got) => panic!("model says {want:?}, store says {got:?}"),
                }
            }
            Op::Repeat { nth, expected } => {
                if model.batches.is_empty() {
                    continue;
                }
                let (stream, ids, original) = model.batches[nth % model.batches.len()].clone();
                let got = store.append(&name(stream), expected, batch(&ids)).await;
                assert_eq!(
                    got,
                    Ok(AppendResult {
                        repeated: true,
                        ..original
                    }),
                    "a repeated batch returns its original result, marked repeated"
                );
            }
        }
    }
    for stream in 0..3 {
        let read: Vec<_> = store
            .read_whole_stream(&name(stream))
            .try_collect()
            .await
            .unwrap();
        let ids: Vec<Uuid> = read.iter().map(|e| e.id).collect();
        assert_eq!(ids, model.streams[stream]);
        assert!(read.iter().enumerate().all(|(i, e)| e.revision == i as u64));
        let backward: Vec<_> = store
            .read_stream(&name(stream), StreamFrom::End, Direction::Backward, None)
            .try_collect()
            .await
            .unwrap();
        assert!(backward.iter().rev().map(|e| e.id).eq(ids.iter().copied()));
    }
    let all: Vec<_> = store
        .read_whole_log(&EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    let global: Vec<(StreamId, Uuid)> = all.iter().map(|e| (e.stream.clone(), e.id)).collect();
    let want: Vec<(StreamId, Uuid)> = model.global.iter().map(|(s, id)| (name(*s), *id)).collect();
    assert_eq!(global, want);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn the_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 0..40)) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(run(ops));
    }
}
