//! Reads: [`read_stream`](EventStore::read_stream) from every starting point in both directions
//! with and without a limit, the exact round trip of every field, and
//! [`read_all`](EventStore::read_all)'s global order, exclusive start, limit and filters; the
//! named reads return what they name.

use bytes::Bytes;
use decider_core::{
    ContentType, Direction, EventData, EventFilter, EventStore, ExpectedVersion, Metadata,
    RecordedEvent, StreamFrom, StreamId,
};
use futures::TryStreamExt;
use uuid::Uuid;

use super::support::{
    append, assert_positions_increase, assert_recorded_as, assert_stream_holds, categories, event,
    events, ids, new_stream, read_all, read_category, read_forward, read_stream, recorded_ids,
    revisions, stream_id, stream_in, unique_category, unique_event_type, within,
};

/// A stream of five events (revisions 0–4, appended as 3 + 2) beside streams whose ids it is a
/// prefix of, so that a read which leaks other streams' events fails.
async fn five_events<S: EventStore>(store: &S) -> (StreamId, Vec<EventData>) {
    let stream = stream_in(&unique_category());
    let written: Vec<_> = (0..5).map(|n| event(&format!("Type{n}"), n)).collect();
    append(store, &stream, ExpectedVersion::NoStream, &written[..3]).await;
    append(store, &stream, ExpectedVersion::Exact(2), &written[3..]).await;
    for suffix in ["0", "-1", "_"] {
        let sibling = stream_id(format!("{stream}{suffix}"));
        append(store, &sibling, ExpectedVersion::NoStream, &events(2)).await;
    }
    (stream, written)
}

/// Fails unless `read` holds the events of `written` at `expected_revisions`, in that order.
fn assert_read(
    read: &[RecordedEvent],
    written: &[EventData],
    expected_revisions: &[u64],
    what: &str,
) {
    assert_eq!(
        revisions(read),
        expected_revisions,
        "{what}: wrong revisions"
    );
    for (recorded, revision) in read.iter().zip(expected_revisions) {
        let index = usize::try_from(*revision).unwrap();
        assert_recorded_as(recorded, &written[index]);
    }
}

/// Forward from `Start` returns the whole stream, oldest first, and only that stream.
pub async fn read_stream_forward_from_start_returns_every_event_in_order<S: EventStore + Clone>(
    store: S,
) {
    let (stream, written) = five_events(&store).await;
    let read = read_stream(&store, &stream, StreamFrom::Start, Direction::Forward, None).await;
    assert_read(&read, &written, &[0, 1, 2, 3, 4], "forward from Start");
    assert!(
        read.iter().all(|event| event.stream == stream),
        "read_stream({stream}) returned events of other streams"
    );
    assert_stream_holds(&store, &stream, &written).await;
}

/// Forward from `Revision(r)` starts at `r`, inclusive; past the end it returns nothing.
pub async fn read_stream_forward_from_a_revision_includes_that_revision<S: EventStore + Clone>(
    store: S,
) {
    let (stream, written) = five_events(&store).await;
    for from in 0..5 {
        let read = read_stream(
            &store,
            &stream,
            StreamFrom::Revision(from),
            Direction::Forward,
            None,
        )
        .await;
        let expected: Vec<u64> = (from..5).collect();
        assert_read(
            &read,
            &written,
            &expected,
            &format!("forward from Revision({from})"),
        );
    }
    for from in [5, 6, u64::MAX] {
        let read = read_stream(
            &store,
            &stream,
            StreamFrom::Revision(from),
            Direction::Forward,
            None,
        )
        .await;
        assert_read(
            &read,
            &written,
            &[],
            &format!("forward from Revision({from}), past the end"),
        );
    }
}

/// A forward read returns at most `limit` events, from wherever it starts.
pub async fn read_stream_forward_with_a_limit_returns_at_most_limit_events<
    S: EventStore + Clone,
>(
    store: S,
) {
    let (stream, written) = five_events(&store).await;
    let cases: [(StreamFrom, u64, &[u64]); 10] = [
        (StreamFrom::Start, 0, &[]),
        (StreamFrom::Start, 1, &[0]),
        (StreamFrom::Start, 2, &[0, 1]),
        (StreamFrom::Start, 5, &[0, 1, 2, 3, 4]),
        (StreamFrom::Start, 6, &[0, 1, 2, 3, 4]),
        (StreamFrom::Start, u64::MAX, &[0, 1, 2, 3, 4]),
        (StreamFrom::Revision(1), 3, &[1, 2, 3]),
        (StreamFrom::Revision(3), 10, &[3, 4]),
        (StreamFrom::Revision(4), 1, &[4]),
        (StreamFrom::Revision(5), 2, &[]),
    ];
    for (from, limit, expected) in cases {
        let read = read_stream(&store, &stream, from, Direction::Forward, Some(limit)).await;
        assert_read(
            &read,
            &written,
            expected,
            &format!("forward from {from:?} with limit {limit}"),
        );
    }
}

/// Backward from `End` returns the whole stream, newest first.
pub async fn read_stream_backward_from_end_returns_every_event_newest_first<
    S: EventStore + Clone,
>(
    store: S,
) {
    let (stream, written) = five_events(&store).await;
    let read = read_stream(&store, &stream, StreamFrom::End, Direction::Backward, None).await;
    assert_read(&read, &written, &[4, 3, 2, 1, 0], "backward from End");
    assert!(
        read.iter().all(|event| event.stream == stream),
        "read_stream({stream}) returned events of other streams"
    );
}

/// Backward from `Revision(r)` starts at `r`, inclusive, and goes down to revision 0; from past
/// the end it returns the whole stream (every event at or below `r`).
pub async fn read_stream_backward_from_a_revision_includes_that_revision<S: EventStore + Clone>(
    store: S,
) {
    let (stream, written) = five_events(&store).await;
    for from in 0..5 {
        let read = read_stream(
            &store,
            &stream,
            StreamFrom::Revision(from),
            Direction::Backward,
            None,
        )
        .await;
        let expected: Vec<u64> = (0..=from).rev().collect();
        assert_read(
            &read,
            &written,
            &expected,
            &format!("backward from Revision({from})"),
        );
    }
    for from in [5, 6, u64::MAX] {
        let read = read_stream(
            &store,
            &stream,
            StreamFrom::Revision(from),
            Direction::Backward,
            None,
        )
        .await;
        assert_read(
            &read,
            &written,
            &[4, 3, 2, 1, 0],
            &format!("backward from Revision({from}), past the end"),
        );
    }
}

/// A backward read returns at most `limit` events, from wherever it starts.
pub async fn read_stream_backward_with_a_limit_returns_at_most_limit_events<
    S: EventStore + Clone,
>(
    store: S,
) {
    let (stream, written) = five_events(&store).await;
    let cases: [(StreamFrom, u64, &[u64]); 9] = [
        (StreamFrom::End, 0, &[]),
        (StreamFrom::End, 1, &[4]),
        (StreamFrom::End, 2, &[4, 3]),
        (StreamFrom::End, 6, &[4, 3, 2, 1, 0]),
        (StreamFrom::End, u64::MAX, &[4, 3, 2, 1, 0]),
        (StreamFrom::Revision(3), 2, &[3, 2]),
        (StreamFrom::Revision(1), 5, &[1, 0]),
        (StreamFrom::Revision(0), 1, &[0]),
        (StreamFrom::Revision(0), 0, &[]),
    ];
    for (from, limit, expected) in cases {
        let read = read_stream(&store, &stream, from, Direction::Backward, Some(limit)).await;
        assert_read(
            &read,
            &written,
            expected,
            &format!("backward from {from:?} with limit {limit}"),
        );
    }
}

/// `End` lies after the last event and `Start` before the first: forward from `End` and backward
/// from `Start` return nothing.
pub async fn read_stream_forward_from_end_and_backward_from_start_return_nothing<
    S: EventStore + Clone,
>(
    store: S,
) {
    let (stream, _) = five_events(&store).await;
    for limit in [None, Some(1), Some(10)] {
        let forward =
            read_stream(&store, &stream, StreamFrom::End, Direction::Forward, limit).await;
        assert_eq!(
            revisions(&forward),
            Vec::<u64>::new(),
            "forward from End with limit {limit:?} returned events"
        );
        let backward = read_stream(
            &store,
            &stream,
            StreamFrom::Start,
            Direction::Backward,
            limit,
        )
        .await;
        assert_eq!(
            revisions(&backward),
            Vec::<u64>::new(),
            "backward from Start with limit {limit:?} returned events"
        );
    }
}

/// Reading a stream that does not exist returns no events and no error, from every starting point
/// in both directions — also when streams whose ids extend its id exist.
pub async fn read_stream_of_a_missing_stream_returns_nothing<S: EventStore + Clone>(store: S) {
    let category = unique_category();
    for existing in [format!("{category}-10"), format!("{category}-1-a")] {
        append(
            &store,
            &stream_id(existing),
            ExpectedVersion::NoStream,
            &events(2),
        )
        .await;
    }
    let missing = [
        format!("{category}-1"),
        category.clone(),
        format!("{category}-"),
        format!("{category}-%"),
        format!("{category}-1_"),
    ];
    for stream in missing.iter().map(stream_id) {
        for direction in [Direction::Forward, Direction::Backward] {
            for from in [
                StreamFrom::Start,
                StreamFrom::End,
                StreamFrom::Revision(0),
                StreamFrom::Revision(1),
            ] {
                for limit in [None, Some(1)] {
                    let read = read_stream(&store, &stream, from, direction, limit).await;
                    assert!(
                        read.is_empty(),
                        "reading the missing stream {stream} {direction:?} from {from:?} returned \
                         events of {:?}",
                        read.iter().map(|e| e.stream.as_str()).collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}

/// A stream longer than any sensible page size comes back whole and in order in both directions,
/// also when a read starts in the middle or stops at a limit.
pub async fn read_stream_returns_long_streams_whole_in_both_directions<S: EventStore + Clone>(
    store: S,
) {
    let stream = stream_in(&unique_category());
    let written = events(2_500);
    let mut expected = ExpectedVersion::NoStream;
    for batch in written.chunks(250) {
        expected = append(&store, &stream, expected, batch)
            .await
            .next_expected_version();
    }
    let all: Vec<u64> = (0..2_500).collect();
    let cases: [(StreamFrom, Direction, Option<u64>, Vec<u64>); 5] = [
        (StreamFrom::Start, Direction::Forward, None, all.clone()),
        (
            StreamFrom::End,
            Direction::Backward,
            None,
            all.iter().rev().copied().collect(),
        ),
        (
            StreamFrom::Revision(1_234),
            Direction::Forward,
            Some(1_000),
            (1_234..2_234).collect(),
        ),
        (
            StreamFrom::Revision(1_500),
            Direction::Backward,
            Some(1_200),
            (301..=1_500).rev().collect(),
        ),
        (
            StreamFrom::End,
            Direction::Backward,
            Some(1_001),
            (1_499..2_500).rev().collect(),
        ),
    ];
    for (from, direction, limit, expected) in cases {
        let read = read_stream(&store, &stream, from, direction, limit).await;
        assert_eq!(
            revisions(&read),
            expected,
            "reading 2,500 events {direction:?} from {from:?} with limit {limit:?}"
        );
        let expected_ids: Vec<Uuid> = expected
            .iter()
            .map(|&revision| written[usize::try_from(revision).unwrap()].id)
            .collect();
        assert_eq!(recorded_ids(&read), expected_ids, "wrong events");
    }
}

/// Every field of an event comes back as appended — id, type, payload (JSON with unicode, escapes
/// and nesting; JSON scalars; binary bytes that are not UTF-8), content type, and all metadata —
/// through both `read_stream` and `read_all`.
pub async fn read_stream_round_trips_every_field<S: EventStore + Clone>(store: S) {
    let stream = stream_in(&unique_category());
    let nested = concat!(
        r#"{"name":"Zoë 🎉 日本語 — ünïcödé","#,
        r#""nested":{"list":[1,2.5,-3,true,null,"\"quoted\" \\ back\/slash"],"#,
        r#""empty":{},"emptyList":[],"deeper":{"a":{"b":{"c":"d"}}}},"#,
        r#""big":12345678901234567890,"#,
        r#""escaped":"line\nbreak\ttab \u00e9 \ud83d\ude00","zero":0}"#,
    );
    let full_metadata = Metadata::default()
        .with_correlation_id(Uuid::new_v4())
        .with_causation_id(Uuid::new_v4())
        .with_idempotency_key("clé-🔑 \"quoted\" 'single' \\ ; -- %_")
        .with_header("tenant", "acme")
        .with_header("user name", "Zoë")
        .with_header("quote\"key", "back\\slash")
        .with_header("empty", "")
        .with_header("日本", "語");
    let full_metadata = Metadata {
        schema_version: Some(7),
        trace_state: Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".into()),
        ..full_metadata.with_trace_parent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("a valid traceparent"),
        )
    };
    let binary: Vec<u8> = (0..=255_u8).chain([0xff, 0xfe, 0xc3, 0x28, 0x00]).collect();
    let written = vec![
        EventData::json("Zahlung→Überweisung ✓", nested).with_metadata(full_metadata),
        EventData {
            content_type: ContentType::Binary,
            ..EventData::json("Blob", Bytes::from(binary))
        }
        .with_metadata(Metadata::default().with_header("format", "raw")),
        EventData::json("Closed", "null"),
        EventData::json("Named", r#""just a string""#).with_metadata(Metadata {
            schema_version: Some(1),
            ..Metadata::default()
        }),
        EventData::json("Counted", "42")
            .with_metadata(Metadata::default().with_causation_id(Uuid::nil())),
        EventData::json("Listed", "[1,[2,[3]],{}]"),
    ];
    append(&store, &stream, ExpectedVersion::NoStream, &written[..2]).await;
    append(&store, &stream, ExpectedVersion::Exact(1), &written[2..]).await;

    assert_stream_holds(&store, &stream, &written).await;
    let backward = read_stream(&store, &stream, StreamFrom::End, Direction::Backward, None).await;
    for (recorded, expected) in backward.iter().zip(written.iter().rev()) {
        assert_recorded_as(recorded, expected);
    }
    let global = read_category(&store, stream.category()).await;
    assert_eq!(global.len(), written.len(), "read_all lost events");
    for (recorded, expected) in global.iter().zip(&written) {
        assert_recorded_as(recorded, expected);
    }
    assert_eq!(
        global,
        read_forward(&store, &stream).await,
        "read_all and read_stream disagree about the events"
    );
}

/// `read_all` returns events in one global order: positions strictly increase, and the events of
/// several streams come in the order they were appended, each exactly as `read_stream` returns it.
pub async fn read_all_returns_events_in_global_order_across_streams<S: EventStore + Clone>(
    store: S,
) {
    let category = unique_category();
    let streams = [
        stream_in(&category),
        stream_in(&category),
        stream_in(&category),
    ];
    let plan: [(usize, u64); 6] = [(0, 2), (1, 1), (0, 1), (2, 3), (1, 2), (0, 1)];
    let mut appended: Vec<Uuid> = Vec::new();
    for (index, count) in plan {
        let batch = events(count);
        append(&store, &streams[index], ExpectedVersion::Any, &batch).await;
        appended.extend(ids(&batch));
    }

    let global = read_category(&store, &category).await;
    assert_eq!(
        recorded_ids(&global),
        appended,
        "read_all does not return the events in the order they were appended"
    );
    assert_positions_increase(&global, "read_all");
    for stream in &streams {
        let own: Vec<_> = global
            .iter()
            .filter(|event| &event.stream == stream)
            .cloned()
            .collect();
        assert_eq!(
            own,
            read_forward(&store, stream).await,
            "read_all and read_stream({stream}) disagree"
        );
    }

    // Unfiltered, on a store that may hold others' events: ours in order, positions increasing.
    let everything = read_all(&store, None, None, &EventFilter::all()).await;
    assert_positions_increase(&everything, "read_all without a filter");
    let ours: Vec<_> = everything
        .into_iter()
        .filter(|event| event.stream.category() == category)
        .collect();
    assert_eq!(
        ours, global,
        "read_all without a filter lost or reordered events"
    );
}

/// Appends interleaved events of two fresh categories and returns them in append order (as the
/// store recorded them) with the categories.
async fn interleaved<S: EventStore>(store: &S) -> (String, String, Vec<RecordedEvent>) {
    let (c, d) = (unique_category(), unique_category());
    let (c1, c2, d1) = (stream_in(&c), stream_in(&c), stream_in(&d));
    let mut appended = Vec::new();
    for (stream, count) in [(&c1, 2), (&d1, 1), (&c2, 1), (&d1, 2), (&c1, 1), (&c2, 2)] {
        let batch = events(count);
        append(store, stream, ExpectedVersion::Any, &batch).await;
        appended.extend(ids(&batch));
    }
    let both = read_all(store, None, None, &categories([&c, &d])).await;
    assert_eq!(
        recorded_ids(&both),
        appended,
        "read_all does not return the events in the order they were appended"
    );
    (c, d, both)
}

/// `after: Some(p)` returns exactly the matching events with positions after `p`, never the event
/// at `p`; `None` starts at the beginning.
pub async fn read_all_after_a_position_excludes_that_position<S: EventStore + Clone>(store: S) {
    let (c, d, both) = interleaved(&store).await;
    let starts = std::iter::once(None).chain(both.iter().map(|event| Some(event.position)));
    for after in starts {
        let following = |category: Option<&str>| -> Vec<Uuid> {
            both.iter()
                .filter(|event| after.is_none_or(|p| event.position > p))
                .filter(|event| category.is_none_or(|c| event.stream.category() == c))
                .map(|event| event.id)
                .collect()
        };
        let read = read_all(&store, after, None, &categories([&c, &d])).await;
        assert_eq!(
            recorded_ids(&read),
            following(None),
            "read_all after {after:?} is not exactly the events after it"
        );
        let read = read_all(&store, after, None, &categories([&c])).await;
        assert_eq!(
            recorded_ids(&read),
            following(Some(&c)),
            "read_all of one category after {after:?} is not exactly its events after it"
        );
    }
}

/// A limit counts the events that pass the filter: `read_all` returns the first `limit` of them
/// after the start, however many other events lie between.
pub async fn read_all_with_a_limit_returns_at_most_limit_matching_events<S: EventStore + Clone>(
    store: S,
) {
    let (c, d, both) = interleaved(&store).await;
    let in_c: Vec<&RecordedEvent> = both
        .iter()
        .filter(|event| event.stream.category() == c)
        .collect();
    let only_c = categories([&c]);
    let after_first_c = Some(in_c[0].position);
    let cases = [
        (None, 0, &only_c, Vec::new()),
        (None, 1, &only_c, vec![in_c[0].id]),
        (None, 2, &only_c, vec![in_c[0].id, in_c[1].id]),
        (after_first_c, 2, &only_c, vec![in_c[1].id, in_c[2].id]),
        (
            after_first_c,
            100,
            &only_c,
            in_c[1..].iter().map(|e| e.id).collect(),
        ),
        (None, u64::MAX, &only_c, in_c.iter().map(|e| e.id).collect()),
    ];
    for (after, limit, filter, expected) in cases {
        let read = read_all(&store, after, Some(limit), filter).await;
        assert_eq!(
            recorded_ids(&read),
            expected,
            "read_all after {after:?} with limit {limit} and {filter:?}"
        );
    }
    let both_categories = categories([&c, &d]);
    let read = read_all(&store, None, Some(3), &both_categories).await;
    assert_eq!(read, both[..3], "read_all with limit 3 over two categories");
}

/// A filtered global read over several thousand events, a few pages' worth whatever the store's
/// page size, returns every match in order — a store that filters a page after fetching it must
/// keep fetching until the read is complete.
pub async fn read_all_returns_long_filtered_results_whole<S: EventStore + Clone>(store: S) {
    let (c, d) = (unique_category(), unique_category());
    let (type_c, type_d) = (unique_event_type("InC"), unique_event_type("InD"));
    let (stream_c, stream_d) = (stream_in(&c), stream_in(&d));
    let mut in_c = Vec::new();
    for round in 0..30 {
        let (stream, event_type) = if round % 2 == 0 {
            (&stream_c, &type_c)
        } else {
            (&stream_d, &type_d)
        };
        let batch: Vec<_> = (0..100).map(|n| event(event_type, n)).collect();
        append(&store, stream, ExpectedVersion::Any, &batch).await;
        if round % 2 == 0 {
            in_c.extend(ids(&batch));
        }
    }
    let by_category = read_all(&store, None, None, &categories([&c])).await;
    assert_eq!(recorded_ids(&by_category), in_c, "read_all of one category");
    assert_positions_increase(&by_category, "read_all of one category");
    let by_type = read_all(
        &store,
        None,
        None,
        &EventFilter::all().with_event_types([type_c.as_str()]),
    )
    .await;
    assert_eq!(recorded_ids(&by_type), in_c, "read_all of one event type");
    let limited = read_all(&store, None, Some(1_200), &categories([&c])).await;
    assert_eq!(
        recorded_ids(&limited),
        in_c[..1_200],
        "read_all with limit 1,200"
    );
    let rest = read_all(
        &store,
        Some(by_category[699].position),
        None,
        &categories([&c]),
    )
    .await;
    assert_eq!(
        recorded_ids(&rest),
        in_c[700..],
        "read_all after the 700th match"
    );
}

/// A filter on event types passes exactly the events of those types, in global order, from every
/// category.
pub async fn read_all_filters_by_event_type<S: EventStore + Clone>(store: S) {
    let (a, b, never) = (
        unique_event_type("A"),
        unique_event_type("B"),
        unique_event_type("Never"),
    );
    let (c, d) = (stream_in(&unique_category()), stream_in(&unique_category()));
    let plan = [(&c, &a), (&c, &b), (&d, &b), (&c, &a), (&d, &a)];
    let mut appended = Vec::new();
    for (n, (stream, event_type)) in (0..).zip(plan) {
        let written = event(event_type, n);
        append(
            &store,
            stream,
            ExpectedVersion::Any,
            std::slice::from_ref(&written),
        )
        .await;
        appended.push((written.id, event_type.clone()));
    }
    let of_types = |types: &[&String]| -> Vec<Uuid> {
        appended
            .iter()
            .filter(|(_, event_type)| types.contains(&event_type))
            .map(|(id, _)| *id)
            .collect()
    };
    let cases: [&[&String]; 5] = [&[&a], &[&b], &[&a, &b], &[&never], &[&never, &b]];
    for types in cases {
        let filter = EventFilter::all().with_event_types(types.iter().map(|t| t.as_str()));
        let read = read_all(&store, None, None, &filter).await;
        assert_eq!(
            recorded_ids(&read),
            of_types(types),
            "read_all with {filter:?}"
        );
        assert_positions_increase(&read, "read_all filtered by type");
    }
}

/// A filter on categories passes exactly the events of streams in those categories: a stream's
/// category is the part of its id before the first `-`, or the whole id — not a prefix of it.
pub async fn read_all_filters_by_category<S: EventStore + Clone>(store: S) {
    let c = unique_category();
    let d = unique_category();
    let in_c = [
        stream_id(format!("{c}-1")),
        stream_id(format!("{c}-x-y")),
        stream_id(&c),
    ];
    let elsewhere = [
        stream_id(format!("{c}x-1")),
        stream_id(format!("{c}x")),
        stream_id(format!("{d}-1")),
    ];
    let mut appended: Vec<(Uuid, StreamId)> = Vec::new();
    for round in 0..2 {
        for stream in in_c.iter().chain(&elsewhere) {
            let written = event("Happened", round);
            append(
                &store,
                stream,
                ExpectedVersion::Any,
                std::slice::from_ref(&written),
            )
            .await;
            appended.push((written.id, stream.clone()));
        }
    }
    let of_categories = |wanted: &[&str]| -> Vec<Uuid> {
        appended
            .iter()
            .filter(|(_, stream)| wanted.contains(&stream.category()))
            .map(|(id, _)| *id)
            .collect()
    };
    let cx = format!("{c}x");
    let c_dash_1 = format!("{c}-1");
    let cases: [&[&str]; 5] = [&[&c], &[&cx], &[&c, &d], &[&d], &[&c_dash_1]];
    for wanted in cases {
        let filter = EventFilter::all().with_categories(wanted.iter().copied());
        let read = read_all(&store, None, None, &filter).await;
        assert_eq!(
            read.len(),
            of_categories(wanted).len(),
            "read_all with {filter:?}: wrong number of events"
        );
        assert_eq!(
            recorded_ids(&read),
            of_categories(wanted),
            "read_all with {filter:?}"
        );
    }
    assert_eq!(of_categories(&[&c]).len(), 6);
    assert!(of_categories(&[&c_dash_1]).is_empty());
}

/// A filter on event types and categories passes only events that match both lists.
pub async fn read_all_filters_by_event_type_and_category_together<S: EventStore + Clone>(store: S) {
    let (t, u) = (unique_event_type("T"), unique_event_type("U"));
    let (c, d) = (unique_category(), unique_category());
    let (in_c, in_d) = (stream_in(&c), stream_in(&d));
    let mut appended: Vec<(Uuid, &String, &String)> = Vec::new();
    for n in 0..2 {
        for (stream, category) in [(&in_c, &c), (&in_d, &d)] {
            for event_type in [&t, &u] {
                let written = event(event_type, n);
                append(
                    &store,
                    stream,
                    ExpectedVersion::Any,
                    std::slice::from_ref(&written),
                )
                .await;
                appended.push((written.id, event_type, category));
            }
        }
    }
    let cases: [(&[&String], &[&String]); 5] = [
        (&[&t], &[&c]),
        (&[&t, &u], &[&c]),
        (&[&t], &[&c, &d]),
        (&[&u], &[&d]),
        (&[&u], &[&c, &d]),
    ];
    for (types, wanted) in cases {
        let filter = EventFilter::all()
            .with_event_types(types.iter().map(|t| t.as_str()))
            .with_categories(wanted.iter().map(|c| c.as_str()));
        let expected: Vec<Uuid> = appended
            .iter()
            .filter(|(_, event_type, category)| {
                types.contains(event_type) && wanted.contains(category)
            })
            .map(|(id, _, _)| *id)
            .collect();
        let read = read_all(&store, None, None, &filter).await;
        assert_eq!(recorded_ids(&read), expected, "read_all with {filter:?}");
    }
}

/// `head_position` is at least the position of the last event appended, and no event a global
/// read returns lies beyond it.
pub async fn head_position_is_the_newest_position_a_read_returns<S: EventStore + Clone>(store: S) {
    let stream = stream_in(&unique_category());
    let written = append(&store, &stream, ExpectedVersion::NoStream, &events(3)).await;
    let head = store
        .head_position()
        .await
        .expect("head_position")
        .expect("a store holding events has a head");
    assert!(
        head >= written.position,
        "head {head} lies before the last append's position {}",
        written.position
    );
    let beyond = read_all(
        &store,
        Some(head),
        None,
        &EventFilter::all().with_categories([stream.category()]),
    )
    .await;
    assert!(
        beyond.is_empty(),
        "read_all after the head returned {} events",
        beyond.len()
    );
}

/// The named reads ([`read_whole_stream`](EventStore::read_whole_stream),
/// [`last_event`](EventStore::last_event), [`read_whole_log`](EventStore::read_whole_log)) return
/// what the reads they name return, also when a store overrides them.
pub async fn named_reads_return_what_the_reads_they_name_return<S: EventStore + Clone>(store: S) {
    let (stream, written) = five_events(&store).await;
    let whole = within(
        "read_whole_stream",
        store.read_whole_stream(&stream).try_collect::<Vec<_>>(),
    )
    .await
    .unwrap_or_else(|error| panic!("read_whole_stream failed: {error}"));
    assert_read(&whole, &written, &[0, 1, 2, 3, 4], "read_whole_stream");

    let last = within("last_event", store.last_event(&stream))
        .await
        .unwrap_or_else(|error| panic!("last_event failed: {error}"));
    assert_eq!(
        last.as_ref(),
        whole.last(),
        "last_event is not the newest event"
    );
    let missing = within(
        "last_event of a missing stream",
        store.last_event(&new_stream()),
    )
    .await
    .unwrap_or_else(|error| panic!("last_event failed: {error}"));
    assert_eq!(missing, None, "a missing stream has a last event");

    let filter = categories([stream.category()]);
    let log = within(
        "read_whole_log",
        store.read_whole_log(&filter).try_collect::<Vec<_>>(),
    )
    .await
    .unwrap_or_else(|error| panic!("read_whole_log failed: {error}"));
    assert_eq!(
        log,
        read_all(&store, None, None, &filter).await,
        "read_whole_log"
    );
    assert!(
        log.len() > whole.len(),
        "the category's sibling streams are missing"
    );
}
