//! Appends: every [`ExpectedVersion`] case on new and existing streams, atomic batches, and
//! idempotent retries.
//!
//! A refusal must be [`StoreError::WrongExpectedVersion`](decider_core::StoreError) naming the
//! stream, the expectation and the stream's actual last revision (`None` when it does not exist),
//! and must write nothing; every check reads the stream back to see that.

use decider_core::{AppendResult, EventStore, ExpectedVersion, StoreError};

use super::support::{
    append, assert_invalid_input, assert_positions_increase, assert_stream_holds,
    assert_wrong_expected_version, event, events, ids, new_stream, read_category, read_forward,
    recorded_ids, stream_in, try_append, unique_category,
};

/// `Any` on a stream that does not exist creates it at revision 0.
pub async fn append_with_any_creates_a_new_stream<S: EventStore + Clone>(store: S) {
    let stream = new_stream();
    let batch = events(2);
    let result = append(&store, &stream, ExpectedVersion::Any, &batch).await;
    assert_eq!(result.next_revision, 2, "next_revision after 2 events");
    assert_stream_holds(&store, &stream, &batch).await;
}

/// `Any` on an existing stream appends after its last event.
pub async fn append_with_any_extends_an_existing_stream<S: EventStore + Clone>(store: S) {
    let stream = new_stream();
    let first = events(2);
    let second = events(3);
    append(&store, &stream, ExpectedVersion::NoStream, &first).await;
    let result = append(&store, &stream, ExpectedVersion::Any, &second).await;
    assert_eq!(result.next_revision, 5, "next_revision after 2 + 3 events");
    assert_stream_holds(&store, &stream, &[first, second].concat()).await;
}

/// `NoStream` on a stream that does not exist creates it.
pub async fn append_with_no_stream_creates_a_new_stream<S: EventStore + Clone>(store: S) {
    let stream = new_stream();
    let batch = events(1);
    let result = append(&store, &stream, ExpectedVersion::NoStream, &batch).await;
    assert_eq!(result.next_revision, 1, "next_revision after 1 event");
    assert_stream_holds(&store, &stream, &batch).await;
}

/// `NoStream` on an existing stream is refused with the stream's last revision, and writes
/// nothing.
pub async fn append_with_no_stream_refuses_an_existing_stream<S: EventStore + Clone>(store: S) {
    let stream = new_stream();
    let existing = events(3);
    append(&store, &stream, ExpectedVersion::NoStream, &existing).await;
    for count in [1, 2] {
        let refused = try_append(&store, &stream, ExpectedVersion::NoStream, &events(count)).await;
        assert_wrong_expected_version(refused, &stream, ExpectedVersion::NoStream, Some(2));
    }
    assert_stream_holds(&store, &stream, &existing).await;
}

/// `StreamExists` on a stream that does not exist is refused with `actual: None`, and creates
/// nothing.
pub async fn append_with_stream_exists_refuses_a_new_stream<S: EventStore + Clone>(store: S) {
    let category = unique_category();
    let stream = stream_in(&category);
    let refused = try_append(&store, &stream, ExpectedVersion::StreamExists, &events(2)).await;
    assert_wrong_expected_version(refused, &stream, ExpectedVersion::StreamExists, None);
    assert_stream_holds(&store, &stream, &[]).await;
    assert!(
        read_category(&store, &category).await.is_empty(),
        "a refused append to {stream} left events in the global log"
    );
}

/// `StreamExists` on an existing stream appends after its last event.
pub async fn append_with_stream_exists_extends_an_existing_stream<S: EventStore + Clone>(store: S) {
    let stream = new_stream();
    let first = events(1);
    let second = events(2);
    append(&store, &stream, ExpectedVersion::NoStream, &first).await;
    let result = append(&store, &stream, ExpectedVersion::StreamExists, &second).await;
    assert_eq!(result.next_revision, 3, "next_revision after 1 + 2 events");
    assert_stream_holds(&store, &stream, &[first, second].concat()).await;
}

/// `Exact(n)` where `n` is the stream's last revision appends, again and again.
pub async fn append_with_exact_version_extends_at_the_last_revision<S: EventStore + Clone>(
    store: S,
) {
    let stream = new_stream();
    let mut written = events(3);
    let mut result = append(&store, &stream, ExpectedVersion::NoStream, &written).await;
    for (last, count) in [(2, 1), (3, 4), (7, 1)] {
        assert_eq!(result.next_expected_version(), ExpectedVersion::Exact(last));
        let batch = events(count);
        result = append(&store, &stream, ExpectedVersion::Exact(last), &batch).await;
        written.extend(batch);
        assert_eq!(
            result.next_revision,
            written.len() as u64,
            "next_revision after an append expecting revision {last}"
        );
    }
    assert_stream_holds(&store, &stream, &written).await;
}

/// `Exact(n)` below the stream's last revision is refused with the actual last revision, and
/// writes nothing.
pub async fn append_with_exact_version_refuses_a_stale_revision<S: EventStore + Clone>(store: S) {
    let stream = new_stream();
    let first = events(2);
    let second = events(1);
    append(&store, &stream, ExpectedVersion::NoStream, &first).await;
    append(&store, &stream, ExpectedVersion::Exact(1), &second).await;
    for stale in [0, 1] {
        let expected = ExpectedVersion::Exact(stale);
        let refused = try_append(&store, &stream, expected, &events(2)).await;
        assert_wrong_expected_version(refused, &stream, expected, Some(2));
    }
    assert_stream_holds(&store, &stream, &[first, second].concat()).await;
}

/// `Exact(n)` beyond the stream's last revision is refused — including `n` = the number of events
/// (the classic off-by-one between "last revision" and "next revision") and `u64::MAX` (which a
/// careless cast to a signed integer turns into -1).
pub async fn append_with_exact_version_refuses_a_revision_ahead<S: EventStore + Clone>(store: S) {
    let stream = new_stream();
    let existing = events(3);
    append(&store, &stream, ExpectedVersion::NoStream, &existing).await;
    for ahead in [3, 4, 100, i64::MAX as u64, u64::MAX] {
        let expected = ExpectedVersion::Exact(ahead);
        let refused = try_append(&store, &stream, expected, &events(1)).await;
        assert_wrong_expected_version(refused, &stream, expected, Some(2));
    }
    assert_stream_holds(&store, &stream, &existing).await;
}

/// `Exact(n)` on a stream that does not exist is refused with `actual: None` — `Exact(0)` above
/// all, which expects one event to exist already.
pub async fn append_with_exact_version_refuses_a_new_stream<S: EventStore + Clone>(store: S) {
    let category = unique_category();
    let stream = stream_in(&category);
    for revision in [0, 1, u64::MAX] {
        let expected = ExpectedVersion::Exact(revision);
        let refused = try_append(&store, &stream, expected, &events(1)).await;
        assert_wrong_expected_version(refused, &stream, expected, None);
    }
    assert_stream_holds(&store, &stream, &[]).await;
    assert!(
        read_category(&store, &category).await.is_empty(),
        "a refused append to {stream} left events in the global log"
    );
}

/// A batch gets contiguous revisions after the stream's last one and strictly increasing
/// positions after every earlier event, and the [`AppendResult`]
/// matches what is read back.
pub async fn append_writes_a_batch_at_contiguous_revisions_and_increasing_positions<
    S: EventStore + Clone,
>(
    store: S,
) {
    let stream = new_stream();
    let first = events(2);
    let second = events(5);
    let first_result = append(&store, &stream, ExpectedVersion::NoStream, &first).await;
    let second_result = append(&store, &stream, ExpectedVersion::Exact(1), &second).await;
    let written = [first, second].concat();
    assert_stream_holds(&store, &stream, &written).await;

    let recorded = read_forward(&store, &stream).await;
    assert_eq!(
        first_result.next_revision, 2,
        "next_revision of the first append"
    );
    assert_eq!(
        first_result.position, recorded[1].position,
        "the first AppendResult's position is not that of its last event"
    );
    assert_eq!(
        second_result.next_revision, 7,
        "next_revision of the second append"
    );
    assert_eq!(
        second_result.position, recorded[6].position,
        "the second AppendResult's position is not that of its last event"
    );

    let global = read_category(&store, stream.category()).await;
    assert_eq!(
        recorded_ids(&global),
        ids(&written),
        "read_all does not hold the batch in order"
    );
    assert_eq!(
        global, recorded,
        "read_all and read_stream disagree about the events"
    );
    assert_positions_increase(&global, "read_all");
}

/// A batch refused for a conflict writes none of its events, and leaves no trace of its ids: the
/// same batch appended afterwards with the right expectation is a new append, not a "retry".
pub async fn append_refused_for_a_conflict_writes_none_of_its_events<S: EventStore + Clone>(
    store: S,
) {
    let stream = new_stream();
    let existing = events(2);
    append(&store, &stream, ExpectedVersion::NoStream, &existing).await;
    let batch = events(3);
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(2),
    ] {
        let refused = try_append(&store, &stream, expected, &batch).await;
        assert_wrong_expected_version(refused, &stream, expected, Some(1));
        assert_stream_holds(&store, &stream, &existing).await;
    }
    assert_eq!(
        read_category(&store, stream.category()).await.len(),
        2,
        "refused appends to {stream} left events in the global log"
    );

    let result = append(&store, &stream, ExpectedVersion::Exact(1), &batch).await;
    assert_eq!(
        result.next_revision, 5,
        "the batch was refused before, so appending it now writes it"
    );
    assert_stream_holds(&store, &stream, &[existing, batch].concat()).await;
}

/// Appending the same batch (the same ids) again with the expectation it was first appended with
/// returns the first append's result and writes nothing, for every kind of expectation, right
/// after the append and after later ones.
pub async fn append_retried_with_the_same_expectation_returns_the_original_result<
    S: EventStore + Clone,
>(
    store: S,
) {
    let stream = new_stream();
    let appends = [
        (ExpectedVersion::NoStream, events(2)),
        (ExpectedVersion::Any, events(1)),
        (ExpectedVersion::StreamExists, events(3)),
        (ExpectedVersion::Exact(5), events(2)),
    ];
    let mut written = Vec::new();
    let mut results = Vec::new();
    for (expected, batch) in &appends {
        let result = append(&store, &stream, *expected, batch).await;
        assert!(
            !result.repeated,
            "a first append is marked repeated: {result:?}"
        );
        written.extend(batch.iter().cloned());
        let retried = try_append(&store, &stream, *expected, batch).await;
        assert_eq!(
            retried,
            Ok(repeat_of(result)),
            "a retry of the append expecting {expected} did not return the original result, \
             marked repeated"
        );
        assert_stream_holds(&store, &stream, &written).await;
        results.push(result);
    }
    for ((expected, batch), result) in appends.iter().zip(results) {
        let retried = try_append(&store, &stream, *expected, batch).await;
        assert_eq!(
            retried,
            Ok(repeat_of(result)),
            "a late retry of the append expecting {expected} did not return the original result"
        );
    }
    assert_stream_holds(&store, &stream, &written).await;
}

/// Appending the same batch again with an expectation that no longer holds (a stale `Exact`, a
/// `NoStream` on what is now an existing stream) — or that happens to hold now (the current
/// `Exact`, `Any`) — still returns the first append's result and writes nothing: a retry after a
/// lost reply must not become a second copy of the events.
pub async fn append_retried_with_a_stale_or_current_exact_version_returns_the_original_result<
    S: EventStore + Clone,
>(
    store: S,
) {
    let stream = new_stream();
    let first = events(2);
    let second = events(2);
    let third = events(1);
    let first_result = append(&store, &stream, ExpectedVersion::NoStream, &first).await;
    let second_result = append(&store, &stream, ExpectedVersion::Exact(1), &second).await;
    let third_result = append(&store, &stream, ExpectedVersion::Exact(3), &third).await;
    let written = [first.clone(), second.clone(), third.clone()].concat();

    let retries = [
        (&second, ExpectedVersion::Exact(1), second_result, "stale"),
        (&first, ExpectedVersion::Exact(0), first_result, "stale"),
        (&first, ExpectedVersion::NoStream, first_result, "stale"),
        (&third, ExpectedVersion::Exact(3), third_result, "stale"),
        (&third, ExpectedVersion::Exact(4), third_result, "current"),
        (&second, ExpectedVersion::Exact(4), second_result, "current"),
        (&second, ExpectedVersion::Any, second_result, "always met"),
        (&first, ExpectedVersion::StreamExists, first_result, "met"),
        (&third, ExpectedVersion::Exact(9), third_result, "ahead"),
    ];
    for (batch, expected, original, kind) in retries {
        let retried = try_append(&store, &stream, expected, batch).await;
        assert_eq!(
            retried,
            Ok(repeat_of(original)),
            "a retry of a batch expecting the {kind} {expected} did not return the batch's \
             original result"
        );
        assert_stream_holds(&store, &stream, &written).await;
    }
}

/// A batch that reuses some ids of an earlier batch — a part of it, it reordered, it plus a new
/// event, or two earlier batches as one — is neither a retry nor a new append: it is
/// `InvalidInput` and writes nothing.
pub async fn append_reusing_only_some_ids_of_an_earlier_batch_is_invalid_input<
    S: EventStore + Clone,
>(
    store: S,
) {
    let stream = new_stream();
    let first = events(2);
    let second = events(1);
    append(&store, &stream, ExpectedVersion::NoStream, &first).await;
    append(&store, &stream, ExpectedVersion::Exact(1), &second).await;
    let written = [first.clone(), second.clone()].concat();
    let fresh = event("Happened", 99);

    let attempts = [
        ("the first event of a batch alone", vec![first[0].clone()]),
        ("the last event of a batch alone", vec![first[1].clone()]),
        (
            "the first event of a batch and a new event",
            vec![first[0].clone(), fresh.clone()],
        ),
        (
            "a new event and the first event of a batch",
            vec![fresh.clone(), first[0].clone()],
        ),
        (
            "a batch reordered",
            vec![first[1].clone(), first[0].clone()],
        ),
        (
            "a whole batch and a new event",
            vec![first[0].clone(), first[1].clone(), fresh.clone()],
        ),
        ("two batches as one", written.clone()),
    ];
    // Every case is tried before the check fails, so that its message lists all the wrong ones.
    let mut accepted = Vec::new();
    for (what, batch) in attempts {
        for expected in [ExpectedVersion::Any, ExpectedVersion::Exact(2)] {
            match try_append(&store, &stream, expected, &batch).await {
                Err(StoreError::InvalidInput(_)) => {}
                other => accepted.push(format!("{what} expecting {expected} gave {other:?}")),
            }
            assert_stream_holds(&store, &stream, &written).await;
        }
    }
    assert!(
        accepted.is_empty(),
        "appends to {stream} (holding a batch of 2 events, then a batch of 1) that reuse ids of \
         those batches without being one of them repeated must be InvalidInput, but:\n{}",
        accepted.join("\n")
    );
}

/// A batch that reuses ids already appended to another stream is `InvalidInput`, whether the
/// target stream exists or not, and writes nothing.
pub async fn append_reusing_ids_of_another_stream_is_invalid_input<S: EventStore + Clone>(
    store: S,
) {
    let category = unique_category();
    let original = stream_in(&category);
    let batch = events(2);
    append(&store, &original, ExpectedVersion::NoStream, &batch).await;

    let missing = stream_in(&category);
    let existing = stream_in(&category);
    let existing_events = events(1);
    append(
        &store,
        &existing,
        ExpectedVersion::NoStream,
        &existing_events,
    )
    .await;
    let fresh = event("Happened", 99);
    let attempts = [
        ("the same batch", batch.clone()),
        ("one of its events", vec![batch[1].clone()]),
        (
            "one of its events and a new one",
            vec![fresh.clone(), batch[0].clone()],
        ),
    ];
    for (what, reused) in &attempts {
        for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
            let refused = try_append(&store, &missing, expected, reused).await;
            assert_invalid_input(
                refused,
                &format!(
                    "an append to the new stream {missing} expecting {expected} of {what} of \
                     {original}"
                ),
            );
        }
        for expected in [ExpectedVersion::Any, ExpectedVersion::Exact(0)] {
            let refused = try_append(&store, &existing, expected, reused).await;
            assert_invalid_input(
                refused,
                &format!("an append to {existing} expecting {expected} of {what} of {original}"),
            );
        }
    }
    assert_stream_holds(&store, &original, &batch).await;
    assert_stream_holds(&store, &missing, &[]).await;
    assert_stream_holds(&store, &existing, &existing_events).await;
    assert_eq!(
        read_category(&store, &category).await.len(),
        3,
        "refused appends left events in the global log"
    );
}

/// An empty batch is `InvalidInput`, on a new stream (which it does not create) and on an
/// existing one.
pub async fn append_of_an_empty_batch_is_invalid_input<S: EventStore + Clone>(store: S) {
    let category = unique_category();
    let missing = stream_in(&category);
    for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
        let refused = try_append(&store, &missing, expected, &[]).await;
        assert_invalid_input(
            refused,
            &format!("an empty append to the new stream {missing} expecting {expected}"),
        );
    }
    assert_stream_holds(&store, &missing, &[]).await;

    let existing = stream_in(&category);
    let existing_events = events(2);
    append(
        &store,
        &existing,
        ExpectedVersion::NoStream,
        &existing_events,
    )
    .await;
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(1),
    ] {
        let refused = try_append(&store, &existing, expected, &[]).await;
        assert_invalid_input(
            refused,
            &format!("an empty append to {existing} expecting {expected}"),
        );
    }
    assert_stream_holds(&store, &existing, &existing_events).await;
    // The first append to `missing` must still see a stream that does not exist.
    let result = append(&store, &missing, ExpectedVersion::NoStream, &events(1)).await;
    assert_eq!(result.next_revision, 1);
}

/// A batch holding the same event id twice is `InvalidInput` and writes nothing — not even the
/// events before the duplicate — and its ids stay free for a later, valid append.
pub async fn append_with_duplicate_ids_in_one_batch_is_invalid_input<S: EventStore + Clone>(
    store: S,
) {
    let stream = new_stream();
    let a = event("Happened", 1);
    let b = event("Happened", 2);
    let twin = |event: &decider_core::EventData| event.clone().with_id(a.id);
    let attempts = [
        vec![a.clone(), a.clone()],
        vec![a.clone(), b.clone(), twin(&b)],
        vec![b.clone(), a.clone(), twin(&event("Other", 3))],
    ];
    for batch in &attempts {
        for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
            let refused = try_append(&store, &stream, expected, batch).await;
            assert_invalid_input(
                refused,
                &format!(
                    "an append to the new stream {stream} of ids {:?}",
                    ids(batch)
                ),
            );
            assert_stream_holds(&store, &stream, &[]).await;
        }
    }

    let written = vec![a.clone(), b.clone()];
    let result = append(&store, &stream, ExpectedVersion::NoStream, &written).await;
    assert_eq!(
        result.next_revision, 2,
        "the refused batches must not have claimed their ids"
    );
    let c = event("Happened", 3);
    let refused = try_append(&store, &stream, ExpectedVersion::Exact(1), &[c.clone(), c]).await;
    assert_invalid_input(
        refused,
        &format!("an append to {stream} of one new id twice"),
    );
    assert_stream_holds(&store, &stream, &written).await;
}

/// `original` as a repeat of its append returns it.
fn repeat_of(original: AppendResult) -> AppendResult {
    AppendResult {
        repeated: true,
        ..original
    }
}
