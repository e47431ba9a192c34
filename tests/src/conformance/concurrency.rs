//! Concurrency: many writers racing on one stream (exactly one wins each revision, every loser
//! learns the true state), many writers on distinct streams seen by a live subscriber (every
//! event once, in one global order), and racing retries of one batch (written once).

use std::collections::{HashMap, HashSet};

use decider_core::{
    AppendResult, Direction, EventData, EventStore, ExpectedVersion, Metadata, StoreError,
    StreamFrom, StreamId,
};
use futures::future::join_all;
use uuid::Uuid;

use super::support::{
    Follower, assert_positions_increase, categories, event, events, ids, join, read_category,
    read_forward, read_stream, recorded_ids, revisions, stream_in, try_append, unique_category,
};

/// A conflict one writer met: what it expected and what the store said the stream held.
struct Conflict {
    expected: ExpectedVersion,
    actual: Option<u64>,
}

/// What one writer of the one-stream race did.
struct Writer {
    /// Its events in the order it wrote them, with the revision the append result gave each.
    written: Vec<(Uuid, u64)>,
    conflicts: Vec<Conflict>,
}

/// Appends `count` events one at a time to `stream`, each expecting the revision it just read,
/// and on a conflict reads again and retries.
async fn race<S: EventStore>(
    store: S,
    stream: StreamId,
    writer: usize,
    count: usize,
    others: usize,
) -> Writer {
    let mut done = Writer {
        written: Vec::with_capacity(count),
        conflicts: Vec::new(),
    };
    while done.written.len() < count {
        // Let the other writers (and the runtime's timers) run even if every call of the store
        // completes without waiting.
        tokio::task::yield_now().await;
        let last = read_stream(
            &store,
            &stream,
            StreamFrom::End,
            Direction::Backward,
            Some(1),
        )
        .await
        .first()
        .map(|event| event.revision);
        let expected = ExpectedVersion::from_last_revision(last);
        let event = EventData::json(
            "Raced",
            format!(r#"{{"writer":{writer},"n":{}}}"#, done.written.len()),
        )
        .with_metadata(Metadata::default().with_header("writer", writer.to_string()));
        match try_append(&store, &stream, expected, std::slice::from_ref(&event)).await {
            Ok(AppendResult { next_revision, .. }) => {
                let revision = last.map_or(0, |last| last + 1);
                assert_eq!(
                    next_revision,
                    revision + 1,
                    "an append expecting {expected} returned next_revision {next_revision}"
                );
                done.written.push((event.id, revision));
            }
            Err(StoreError::WrongExpectedVersion {
                stream: refused,
                expected: refused_expected,
                actual,
            }) => {
                assert_eq!(refused, stream, "a conflict names the wrong stream");
                assert_eq!(
                    refused_expected, expected,
                    "a conflict reports the wrong expectation"
                );
                done.conflicts.push(Conflict { expected, actual });
                // Each conflict means another writer succeeded after this one read; the others
                // write `others` events in all, so far more conflicts than that mean the store
                // refuses appends it should accept, or reads do not show what was written.
                assert!(
                    done.conflicts.len() <= 10 * others.max(1),
                    "writer {writer} met {} conflicts while the other writers write only \
                     {others} events: the store refuses right expectations or read_stream lags \
                     behind appends (last: expected {expected}, actual {actual:?})",
                    done.conflicts.len()
                );
            }
            Err(other) => panic!("a racing append expecting {expected} failed: {other:?}"),
        }
    }
    done
}

/// Eight writers race to append 500 events each to one stream, each append expecting the
/// revision the writer just read: every revision has exactly one winner, so the stream ends with
/// exactly 4,000 events at revisions 0..3999, each written event present once, in each writer's
/// order; every loser's conflict reports a last revision beyond the one it expected.
pub async fn concurrent_exact_appends_to_one_stream_admit_exactly_one_winner_per_revision<
    S: EventStore + Clone,
>(
    store: S,
) {
    const WRITERS: usize = 8;
    const EACH: usize = 500;
    let stream = stream_in(&unique_category());
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            tokio::spawn(race(
                store.clone(),
                stream.clone(),
                writer,
                EACH,
                (WRITERS - 1) * EACH,
            ))
        })
        .collect();
    let mut writers = Vec::with_capacity(WRITERS);
    for task in tasks {
        writers.push(join(task).await);
    }

    let recorded = read_forward(&store, &stream).await;
    assert_eq!(
        revisions(&recorded),
        (0..(WRITERS * EACH) as u64).collect::<Vec<_>>(),
        "the stream does not hold exactly {} events at revisions 0..{}",
        WRITERS * EACH,
        WRITERS * EACH - 1
    );
    assert_positions_increase(&recorded, "the raced stream");
    let at_revision: HashMap<Uuid, u64> = recorded
        .iter()
        .map(|event| (event.id, event.revision))
        .collect();
    assert_eq!(
        at_revision.len(),
        recorded.len(),
        "an event id appears twice in the stream"
    );
    for (index, writer) in writers.iter().enumerate() {
        for (id, revision) in &writer.written {
            assert_eq!(
                at_revision.get(id),
                Some(revision),
                "writer {index}'s event {id} is not at the revision its append reported"
            );
        }
        let own = recorded
            .iter()
            .filter(|event| event.metadata.headers.get("writer") == Some(&index.to_string()));
        assert_eq!(
            own.map(|event| event.id).collect::<Vec<_>>(),
            writer.written.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            "writer {index}'s events are not all there in its order"
        );
        for conflict in &writer.conflicts {
            let read = match conflict.expected {
                ExpectedVersion::Exact(read) => Some(read),
                _ => None,
            };
            assert!(
                conflict.actual.is_some() && conflict.actual > read,
                "writer {index} expected {} but the conflict reported actual {:?}; the stream \
                 only grows, so its last revision must be beyond what the writer read",
                conflict.expected,
                conflict.actual
            );
        }
    }
}

/// Eight writers append 200 events each, one at a time, to eight streams of one category while a
/// live subscription (started before them) follows the category: it receives every event exactly
/// once, positions strictly increasing, each stream's revisions contiguous, in the same order as
/// `read_all`.
pub async fn concurrent_writers_on_many_streams_are_seen_once_in_order_by_a_live_subscriber<
    S: EventStore + Clone,
>(
    store: S,
) {
    const WRITERS: usize = 8;
    const EACH: u64 = 200;
    let category = unique_category();
    let mut follower = Follower::new(
        store.subscribe_all(None, &categories([&category])),
        "a subscription following eight writers",
    );
    follower.expect_caught_up().await;

    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = store.clone();
            let stream = stream_in(&category);
            tokio::spawn(async move {
                let mut expected = ExpectedVersion::NoStream;
                let mut written = Vec::new();
                for n in 0..EACH {
                    let one = event("Written", n);
                    let result = try_append(&store, &stream, expected, std::slice::from_ref(&one))
                        .await
                        .unwrap_or_else(|error| {
                            panic!("the only writer of {stream} was refused: {error}")
                        });
                    expected = result.next_expected_version();
                    written.push(one.id);
                }
                (stream, written)
            })
        })
        .collect();

    let total = WRITERS * EACH as usize;
    let received = follower.events(total).await;
    let mut written_by_stream = HashMap::new();
    for task in tasks {
        let (stream, written) = join(task).await;
        written_by_stream.insert(stream, written);
    }
    follower.assert_quiet(|_| false).await;

    assert_positions_increase(&received, "the live subscription");
    let unique: HashSet<Uuid> = recorded_ids(&received).into_iter().collect();
    assert_eq!(
        unique.len(),
        total,
        "the subscription delivered an event twice"
    );
    for (stream, written) in &written_by_stream {
        let seen: Vec<_> = received
            .iter()
            .filter(|event| &event.stream == stream)
            .collect();
        assert_eq!(
            seen.iter().map(|event| event.revision).collect::<Vec<_>>(),
            (0..EACH).collect::<Vec<_>>(),
            "{stream}: the subscription's revisions are not contiguous"
        );
        assert_eq!(
            &seen.iter().map(|event| event.id).collect::<Vec<_>>(),
            written,
            "{stream}: the subscription's events are not the ones written, in order"
        );
    }
    assert_eq!(
        received,
        read_category(&store, &category).await,
        "the subscription and read_all disagree about the global order"
    );
}

/// Several tasks retry the same batch at the same moment (as clients do after a lost reply): the
/// batch is written once, and every task gets the same result.
pub async fn concurrent_retries_of_one_batch_write_it_once<S: EventStore + Clone>(store: S) {
    const ROUNDS: usize = 25;
    const RETRIERS: usize = 4;
    let category = unique_category();
    for _ in 0..ROUNDS {
        let stream = stream_in(&category);
        let batch = events(3);
        let expectations = [
            ExpectedVersion::NoStream,
            ExpectedVersion::Any,
            ExpectedVersion::NoStream,
            ExpectedVersion::Any,
        ];
        let retries = expectations.into_iter().take(RETRIERS).map(|expected| {
            let (store, stream, batch) = (store.clone(), stream.clone(), batch.clone());
            tokio::spawn(async move { try_append(&store, &stream, expected, &batch).await })
        });
        let results: Vec<_> = join_all(retries.map(join)).await;
        let results: Vec<AppendResult> = results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|error| {
                    panic!("a retry of a batch to the new stream {stream} was refused: {error}")
                })
            })
            .collect();
        let first = results[0];
        assert_eq!(first.next_revision, 3, "next_revision of the batch");
        for result in &results {
            assert_eq!(
                (result.next_revision, result.position),
                (first.next_revision, first.position),
                "racing retries of one batch to {stream} got different answers"
            );
        }
        let written = results.iter().filter(|result| !result.repeated).count();
        assert_eq!(
            written, 1,
            "exactly one of the racing appends of one batch to {stream} is not marked repeated: \
             {results:?}"
        );
        assert_eq!(
            recorded_ids(&read_forward(&store, &stream).await),
            ids(&batch),
            "racing retries of one batch to {stream} did not write it exactly once"
        );
    }
    assert_eq!(
        read_category(&store, &category).await.len(),
        ROUNDS * 3,
        "racing retries wrote extra events"
    );
}
