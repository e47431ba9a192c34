//! Awkward input: stream ids at and past the limits, ids and event types full of SQL
//! metacharacters and unicode (which must work verbatim, and must not turn into patterns),
//! events of a type the codec does not know, and large payloads.

use bytes::Bytes;
use decider_core::{
    Codec, CodecError, ContentType, Direction, EventData, EventFilter, EventStore, ExpectedVersion,
    InvalidStreamId, JsonCodec, MAX_STREAM_ID_BYTES, Metadata, StreamFrom, StreamId,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::support::{
    Follower, append, assert_invalid_input, assert_recorded_as, assert_stream_holds,
    assert_wrong_expected_version, categories, event, ids, read_all, read_category, read_forward,
    read_stream, recorded_ids, stream_id, try_append, unique_category, unique_event_type,
};

/// Appends three events to `stream` (2 + 1), and checks that `read_stream` in both directions,
/// `subscribe_stream` and a conflict all name it correctly. Returns the events.
async fn use_end_to_end<S: EventStore>(store: &S, stream: &StreamId) -> Vec<EventData> {
    let written: Vec<_> = (0..3).map(|n| event("Used", n)).collect();
    append(store, stream, ExpectedVersion::NoStream, &written[..2]).await;
    append(store, stream, ExpectedVersion::Exact(1), &written[2..]).await;
    assert_stream_holds(store, stream, &written).await;
    let backward = read_stream(store, stream, StreamFrom::End, Direction::Backward, None).await;
    assert_eq!(
        recorded_ids(&backward),
        ids(&written).into_iter().rev().collect::<Vec<_>>(),
        "reading {stream:?} backward"
    );
    let refused = try_append(
        store,
        stream,
        ExpectedVersion::NoStream,
        &[event("Used", 9)],
    )
    .await;
    assert_wrong_expected_version(refused, stream, ExpectedVersion::NoStream, Some(2));
    let mut follower = Follower::new(
        store.subscribe_stream(stream, None),
        format!("subscribe_stream({stream:?})"),
    );
    let caught_up = follower.events_until_caught_up().await;
    assert_eq!(
        recorded_ids(&caught_up),
        ids(&written),
        "subscribe_stream({stream:?})"
    );
    assert!(
        caught_up.iter().all(|event| &event.stream == stream),
        "events of {stream:?} come back naming another stream"
    );
    written
}

/// Stream ids that are empty, longer than 255 bytes (counted in UTF-8 bytes, not characters) or
/// hold a control character are refused by [`StreamId::new`] with the typed reason, so no store
/// ever sees them. (The store is not used: this holds for every store.)
pub async fn stream_ids_that_are_empty_too_long_or_hold_control_characters_are_refused<
    S: EventStore + Clone,
>(
    store: S,
) {
    drop(store);
    assert_eq!(StreamId::new(""), Err(InvalidStreamId::Empty));
    assert_eq!(
        StreamId::new("a".repeat(MAX_STREAM_ID_BYTES + 1)),
        Err(InvalidStreamId::TooLong { len: 256 })
    );
    assert_eq!(
        StreamId::new("é".repeat(128)),
        Err(InvalidStreamId::TooLong { len: 256 }),
        "128 two-byte characters are 256 bytes"
    );
    assert!(StreamId::new("a".repeat(MAX_STREAM_ID_BYTES)).is_ok());
    for (bad, index) in [
        ("\0", 0),
        ("a\nb", 1),
        ("tab\there", 3),
        ("\u{1b}[31m", 0),
        ("x\u{7f}", 1),
        ("é\u{85}", 2),
        ("account-1\r", 9),
    ] {
        match StreamId::new(bad) {
            Err(InvalidStreamId::ControlCharacter { index: at, .. }) => {
                assert_eq!(at, index, "byte index of the control character in {bad:?}")
            }
            other => panic!("{bad:?} gave {other:?} instead of ControlCharacter"),
        }
    }
}

/// A stream id of exactly 255 bytes works for appends, reads, category filters and
/// subscriptions.
pub async fn stream_id_of_255_bytes_works_end_to_end<S: EventStore + Clone>(store: S) {
    let category = unique_category();
    let prefix = format!("{category}-");
    let long = stream_id(format!(
        "{prefix}{}",
        "x".repeat(MAX_STREAM_ID_BYTES - prefix.len())
    ));
    assert_eq!(long.as_str().len(), MAX_STREAM_ID_BYTES);
    // A stream whose id is the long one cut short must stay apart from it.
    let short = stream_id(&long.as_str()[..MAX_STREAM_ID_BYTES - 1]);
    append(
        &store,
        &short,
        ExpectedVersion::NoStream,
        &[event("Short", 0)],
    )
    .await;
    let written = use_end_to_end(&store, &long).await;
    let in_category = read_category(&store, &category).await;
    let long_events: Vec<_> = in_category
        .iter()
        .filter(|event| event.stream == long)
        .map(|event| event.id)
        .collect();
    assert_eq!(
        long_events,
        ids(&written),
        "read_all of the 255-byte stream's category"
    );
    assert_eq!(in_category.len(), 4, "read_all of the category");
}

/// Stream ids and event types full of SQL metacharacters — quotes, semicolons, comment markers,
/// `%`, `_`, backslashes, placeholders — are kept verbatim: each stream reads back only its own
/// events, and a category or event-type filter matches its text exactly, never as a pattern
/// (`%` and `_` are not wildcards, a category is not a prefix).
pub async fn stream_ids_and_event_types_with_sql_metacharacters_work_end_to_end<
    S: EventStore + Clone,
>(
    store: S,
) {
    let u = unique_category();
    let ids_to_use = [
        format!("{u}'q\"-o'reilly"),
        format!("{u}%-100%"),
        format!("{u}_-a_b"),
        format!("{u}\\-back\\slash\\"),
        format!("{u};\"; DROP TABLE events; --"),
        format!("{u}-a_b"),
        format!("{u}-axb"),
        format!("{u}-100%"),
        format!("{u}-1000"),
        format!("{u}-$1 ? :name @p0 {{0}}"),
        format!("{u}z-1"),
        format!("{u}zz-%"),
    ];
    let streams: Vec<StreamId> = ids_to_use.iter().map(stream_id).collect();
    let mut written_to: Vec<(StreamId, Vec<EventData>)> = Vec::new();
    for stream in &streams {
        written_to.push((stream.clone(), use_end_to_end(&store, stream).await));
    }

    let mut wanted_categories: Vec<&str> = streams.iter().map(StreamId::category).collect();
    wanted_categories.sort_unstable();
    wanted_categories.dedup();
    assert!(wanted_categories.contains(&format!("{u}%").as_str()));
    for wanted in wanted_categories {
        let expected: Vec<Uuid> = written_to
            .iter()
            .filter(|(stream, _)| stream.category() == wanted)
            .flat_map(|(_, written)| ids(written))
            .collect();
        let read = read_category(&store, wanted).await;
        assert_eq!(
            recorded_ids(&read),
            expected,
            "read_all filtered by the category {wanted:?} must return exactly its streams' events"
        );
        let mut follower = Follower::new(
            store.subscribe_all(None, &categories([wanted])),
            format!("subscribe_all filtered by the category {wanted:?}"),
        );
        let caught_up = follower.events_until_caught_up().await;
        assert_eq!(
            recorded_ids(&caught_up),
            expected,
            "subscribe_all filtered by the category {wanted:?}"
        );
    }

    let pattern_type = format!("{u}'\"; --%_\\");
    let matched_by_pattern = format!("{u}'\"; --abc\\");
    let stream = &streams[0];
    let typed = [
        event(&pattern_type, 1),
        event(&matched_by_pattern, 2),
        event(&pattern_type, 3),
    ];
    append(&store, stream, ExpectedVersion::Exact(2), &typed).await;
    let read = read_all(
        &store,
        None,
        None,
        &EventFilter::all().with_event_types([pattern_type.as_str()]),
    )
    .await;
    assert_eq!(
        recorded_ids(&read),
        [typed[0].id, typed[2].id],
        "read_all filtered by the event type {pattern_type:?} must match it exactly"
    );
    for (recorded, expected) in read.iter().zip([&typed[0], &typed[2]]) {
        assert_recorded_as(recorded, expected);
    }
}

/// Stream ids, categories and event types in unicode work verbatim: no normalisation (a
/// precomposed `ë` and `e` + combining diaeresis are different streams), no truncation.
pub async fn stream_ids_with_unicode_work_end_to_end<S: EventStore + Clone>(store: S) {
    let category = format!("ünï{}", Uuid::new_v4().simple());
    let event_type = unique_event_type("Überweisung→✓");
    let streams = [
        stream_id(format!("{category}-Zo\u{eb}-日本語-🎉")),
        stream_id(format!("{category}-Zoe\u{308}-日本語-🎉")),
        stream_id(format!("{category}-Ω≈ç√∫")),
    ];
    let mut all = Vec::new();
    for stream in &streams {
        all.extend(ids(&use_end_to_end(&store, stream).await));
    }
    let typed = EventData::json(&event_type, r#"{"text":"ünïcödé 🎉"}"#);
    append(
        &store,
        &streams[1],
        ExpectedVersion::Exact(2),
        std::slice::from_ref(&typed),
    )
    .await;
    all.push(typed.id);
    assert_eq!(
        recorded_ids(&read_category(&store, &category).await),
        all,
        "read_all filtered by the unicode category {category:?}"
    );
    let by_type = read_all(
        &store,
        None,
        None,
        &EventFilter::all().with_event_types([event_type.as_str()]),
    )
    .await;
    assert_eq!(
        recorded_ids(&by_type),
        [typed.id],
        "read_all filtered by a unicode event type"
    );
    assert_recorded_as(&by_type[0], &typed);
    assert_eq!(
        read_forward(&store, &streams[0]).await.len(),
        3,
        "the precomposed and the decomposed stream ids were merged"
    );
}

/// The events the codec of [`unknown_event_type_fails_to_decode_naming_stream_revision_and_type`]
/// knows.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Known {
    Opened { owner: String },
    Closed,
}

/// An event whose type the codec does not know, read back from the store, fails to decode with
/// [`CodecError::UnknownEventType`] naming the stream, the revision and the type the store
/// returned — never a panic, never a silent skip — while its neighbours decode.
pub async fn unknown_event_type_fails_to_decode_naming_stream_revision_and_type<
    S: EventStore + Clone,
>(
    store: S,
) {
    let codec = JsonCodec::<Known>::new();
    let as_event_data = |known: &Known| {
        let encoded = codec
            .encode(known)
            .expect("the codec encodes a known event");
        EventData {
            id: Uuid::new_v4(),
            event_type: encoded.event_type,
            payload: encoded.payload,
            content_type: encoded.content_type,
            metadata: Metadata {
                schema_version: Some(encoded.schema_version),
                ..Metadata::default()
            },
        }
    };
    let stream = stream_id(format!("{}-1", unique_category()));
    let written = [
        as_event_data(&Known::Opened {
            owner: "ada".into(),
        }),
        EventData::json("Frozen", r#"{"until":"2030-01-01"}"#),
        as_event_data(&Known::Closed),
    ];
    append(&store, &stream, ExpectedVersion::NoStream, &written).await;

    let from_stream = read_forward(&store, &stream).await;
    let from_log = read_category(&store, stream.category()).await;
    for (source, recorded) in [("read_stream", from_stream), ("read_all", from_log)] {
        assert_eq!(recorded.len(), 3, "{source} lost events");
        assert_eq!(
            codec.decode(&recorded[0]),
            Ok(Known::Opened {
                owner: "ada".into()
            }),
            "{source}: a known event no longer decodes"
        );
        let error = codec
            .decode(&recorded[1])
            .expect_err("an unknown event type must not decode");
        assert_eq!(
            error,
            CodecError::UnknownEventType {
                stream: stream.clone(),
                revision: 1,
                event_type: "Frozen".into(),
            },
            "{source}: decoding an unknown type"
        );
        assert!(
            error.to_string().contains(stream.as_str()) && error.to_string().contains("Frozen"),
            "the error message must name the stream and the type: {error}"
        );
        assert_eq!(codec.decode(&recorded[2]), Ok(Known::Closed), "{source}");
    }
}

/// Payloads of one megabyte — a JSON document and opaque binary bytes — round-trip exactly
/// through `read_stream`, `read_all` and `subscribe_stream`.
pub async fn one_megabyte_payloads_round_trip<S: EventStore + Clone>(store: S) {
    const MEGABYTE: usize = 1 << 20;
    let pattern = "ünïcödé text with \"quotes\" and \\ — ";
    let text = pattern.repeat(MEGABYTE / pattern.len() + 1);
    let json = serde_json::to_vec(&serde_json::json!({ "blob": text, "n": 1 }))
        .expect("a JSON value serialises");
    assert!(json.len() > MEGABYTE);
    let binary: Vec<u8> = (0..MEGABYTE)
        .map(|i| u8::try_from((i * 31 + i / 251) % 256).unwrap_or_default())
        .collect();
    let stream = stream_id(format!("{}-1", unique_category()));
    let written = vec![
        EventData::json("BigJson", json),
        EventData {
            content_type: ContentType::Binary,
            ..EventData::json("BigBinary", Bytes::from(binary))
        },
        event("Small", 3),
    ];
    append(&store, &stream, ExpectedVersion::NoStream, &written[..2]).await;
    append(&store, &stream, ExpectedVersion::Exact(1), &written[2..]).await;

    assert_stream_holds(&store, &stream, &written).await;
    let from_log = read_category(&store, stream.category()).await;
    assert_eq!(from_log.len(), 3, "read_all lost events");
    for (recorded, expected) in from_log.iter().zip(&written) {
        assert_recorded_as(recorded, expected);
    }
    let mut follower = Follower::new(
        store.subscribe_stream(&stream, None),
        "subscribe_stream of large events",
    );
    let caught_up = follower.events_until_caught_up().await;
    assert_eq!(caught_up.len(), 3, "subscribe_stream lost events");
    for (recorded, expected) in caught_up.iter().zip(&written) {
        assert_recorded_as(recorded, expected);
    }
}

/// Text no store can keep as text — U+0000 in the event type, in a JSON payload's string or
/// key, in the idempotency key or a header, or a lone surrogate in a JSON string — is
/// `InvalidInput` on every store, and an append holding one such event among good ones writes
/// nothing. What only looks like it (the six characters `\u0000`, NUL bytes in a binary
/// payload, escaped emoji) is kept verbatim.
pub async fn text_no_store_can_hold_is_invalid_input_and_writes_nothing<S: EventStore + Clone>(
    store: S,
) {
    let good = || event("Good", 1);
    let nul_header = Metadata::default().with_header("user", "a\0da");
    let nul_key = Metadata::default().with_idempotency_key("key-\0");
    let bad = [
        (
            "a NUL in the event type",
            EventData::json("Bad\0Type", "{}"),
        ),
        (
            "a NUL in a string",
            EventData::json("Bad", r#"{"owner":"Ada\u0000"}"#),
        ),
        (
            "a NUL in a key",
            EventData::json("Bad", r#"{"a":{"own\u0000er":1}}"#),
        ),
        (
            "a lone surrogate",
            EventData::json("Bad", r#"{"owner":"\ud800"}"#),
        ),
        (
            "a NUL in a header",
            EventData::json("Bad", "{}").with_metadata(nul_header),
        ),
        (
            "a NUL in the idempotency key",
            EventData::json("Bad", "{}").with_metadata(nul_key),
        ),
    ];
    let head = store
        .head_position()
        .await
        .expect("the head position reads");
    for (what, event) in bad {
        let stream = stream_id(format!("{}-1", unique_category()));
        let result = try_append(&store, &stream, ExpectedVersion::Any, &[good(), event]).await;
        assert_invalid_input(result, &format!("an append with {what}"));
        assert_stream_holds(&store, &stream, &[]).await;
    }
    assert_eq!(
        store
            .head_position()
            .await
            .expect("the head position reads"),
        head,
        "a refused append moved the head of the log"
    );

    let stream = stream_id(format!("{}-1", unique_category()));
    let look_alikes = vec![
        EventData::json("Text", r#"{"owner":"\\u0000 is six characters"}"#),
        EventData::json("Emoji", r#"{"owner":"\ud83d\ude00"}"#),
        EventData {
            content_type: ContentType::Binary,
            ..EventData::json("Bytes", Bytes::from_static(b"\0\0\0"))
        },
    ];
    append(&store, &stream, ExpectedVersion::NoStream, &look_alikes).await;
    assert_stream_holds(&store, &stream, &look_alikes).await;
}
