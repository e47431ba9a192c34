//! Subscriptions: catch-up, exactly one `CaughtUp`, then live events; resumption after every
//! position or revision; filters; subscriptions that start while appends run; and a slow
//! subscriber that must not lose, repeat or reorder anything.
//!
//! Every wait is bounded, so a store whose subscription stalls fails the check instead of
//! hanging it.

use std::collections::HashMap;
use std::time::Duration;

use decider_core::{
    EventFilter, EventStore, ExpectedVersion, RecordedEvent, StreamId, SubscriptionMessage,
};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::support::{
    Follower, append, assert_positions_increase, assert_recorded_as, categories, event, events,
    ids, join, read_category, read_forward, recorded_ids, revisions, stream_in, unique_category,
    unique_event_type,
};

/// `subscribe_all` from the start delivers the events that exist, then `CaughtUp` once, then the
/// events appended afterwards — also without a filter on a store holding others' events.
pub async fn subscribe_all_delivers_existing_events_then_caught_up_once_then_live_events<
    S: EventStore + Clone,
>(
    store: S,
) {
    let category = unique_category();
    let (first, second) = (stream_in(&category), stream_in(&category));
    let existing = [events(2), events(1), events(2)];
    append(&store, &first, ExpectedVersion::NoStream, &existing[0]).await;
    append(&store, &second, ExpectedVersion::NoStream, &existing[1]).await;
    append(&store, &first, ExpectedVersion::Exact(1), &existing[2]).await;
    let existing_ids = ids(&existing.concat());
    let ours = |event: &RecordedEvent| event.stream.category() == category;

    let mut follower = Follower::new(
        store.subscribe_all(None, &EventFilter::all()),
        "subscribe_all(None, all)",
    );
    let caught_up = follower.events_until_caught_up().await;
    assert_positions_increase(&caught_up, "subscribe_all's catch-up");
    let caught_up_ours: Vec<_> = caught_up.into_iter().filter(|e| ours(e)).collect();
    assert_eq!(
        recorded_ids(&caught_up_ours),
        existing_ids,
        "the catch-up phase did not deliver exactly the existing events, in order"
    );
    assert_eq!(
        caught_up_ours,
        read_category(&store, &category).await,
        "subscribe_all and read_all disagree about the events"
    );

    let live = [events(1), events(3)];
    append(&store, &second, ExpectedVersion::Exact(0), &live[0]).await;
    append(&store, &first, ExpectedVersion::Exact(3), &live[1]).await;
    let mut previous = caught_up_ours.last().map(|event| event.position);
    for expected in live.concat() {
        let received = follower.next_event_where(ours).await;
        assert_eq!(received.id, expected.id, "live events out of order");
        assert_recorded_as(&received, &expected);
        assert!(
            previous < Some(received.position),
            "live positions do not increase"
        );
        previous = Some(received.position);
    }
    follower.assert_quiet(|event| !ours(event)).await;
}

/// A subscription whose scope holds no events yet sends `CaughtUp` first, then the live events.
pub async fn subscribe_all_to_an_empty_scope_sends_caught_up_first<S: EventStore + Clone>(
    store: S,
) {
    let category = unique_category();
    let stream = stream_in(&category);
    let mut follower = Follower::new(
        store.subscribe_all(None, &categories([&category])),
        "subscribe_all to an empty category",
    );
    follower.expect_caught_up().await;
    follower.assert_quiet(|_| false).await;
    let live = events(3);
    append(&store, &stream, ExpectedVersion::NoStream, &live[..2]).await;
    append(&store, &stream, ExpectedVersion::Exact(1), &live[2..]).await;
    let received = follower.events(3).await;
    assert_eq!(recorded_ids(&received), ids(&live), "live events");
    assert_eq!(revisions(&received), [0, 1, 2], "live revisions");
    follower.assert_quiet(|_| false).await;
}

/// Resuming `subscribe_all` after any position of a small log delivers exactly the events after
/// it (exclusive) before `CaughtUp` — from every position of its own events and of events
/// outside its filter.
pub async fn subscribe_all_resumes_after_every_position<S: EventStore + Clone>(store: S) {
    let (c, d) = (unique_category(), unique_category());
    let (c1, c2, d1) = (stream_in(&c), stream_in(&c), stream_in(&d));
    for (stream, count) in [(&c1, 2), (&d1, 1), (&c2, 1), (&c1, 1), (&d1, 2), (&c2, 1)] {
        append(&store, stream, ExpectedVersion::Any, &events(count)).await;
    }
    let both = read_category(&store, &c).await;
    let log = super::support::read_all(&store, None, None, &categories([&c, &d])).await;
    assert_eq!(log.len(), 8);
    let starts = std::iter::once(None).chain(log.iter().map(|event| Some(event.position)));
    for after in starts {
        let mut follower = Follower::new(
            store.subscribe_all(after, &categories([&c])),
            format!("subscribe_all(after {after:?})"),
        );
        let expected: Vec<Uuid> = both
            .iter()
            .filter(|event| after.is_none_or(|p| event.position > p))
            .map(|event| event.id)
            .collect();
        let received = follower.events_until_caught_up().await;
        assert_eq!(
            recorded_ids(&received),
            expected,
            "subscribe_all after {after:?} did not deliver exactly the events after it"
        );
    }
}

/// A filtered subscription delivers only events that pass its filter, in the catch-up and the live
/// phase.
pub async fn subscribe_all_with_a_filter_delivers_only_matching_events<S: EventStore + Clone>(
    store: S,
) {
    let (c, d) = (unique_category(), unique_category());
    let (wanted, other) = (unique_event_type("Wanted"), unique_event_type("Other"));
    let (in_c, in_d) = (stream_in(&c), stream_in(&d));
    let mut expected = Vec::new();
    let write_round = async |n: u64, expected: &mut Vec<Uuid>| {
        for stream in [&in_c, &in_d] {
            for event_type in [&wanted, &other] {
                let written = event(event_type, n);
                append(
                    &store,
                    stream,
                    ExpectedVersion::Any,
                    std::slice::from_ref(&written),
                )
                .await;
                if stream == &in_c && event_type == &wanted {
                    expected.push(written.id);
                }
            }
        }
    };
    write_round(0, &mut expected).await;
    write_round(1, &mut expected).await;
    let filter = EventFilter::all()
        .with_event_types([wanted.as_str()])
        .with_categories([c.as_str()]);
    let mut follower = Follower::new(store.subscribe_all(None, &filter), format!("{filter:?}"));
    let caught_up = follower.events_until_caught_up().await;
    assert_eq!(
        recorded_ids(&caught_up),
        expected,
        "the catch-up phase of a filtered subscription"
    );
    let before_live = expected.len();
    write_round(2, &mut expected).await;
    write_round(3, &mut expected).await;
    let live = follower.events(expected.len() - before_live).await;
    assert_eq!(
        recorded_ids(&live),
        expected[before_live..],
        "the live phase of a filtered subscription"
    );
    follower.assert_quiet(|_| false).await;
}

/// Appends `batches` × `batch_size` events to `streams` (round robin) and returns their ids in
/// append order; after `signal_after` batches it signals, so that a subscription can start while
/// the appends run.
async fn write_while_signalling<S: EventStore>(
    store: S,
    streams: Vec<StreamId>,
    batches: usize,
    batch_size: u64,
    signal_after: usize,
    signal: oneshot::Sender<()>,
) -> Vec<Uuid> {
    let mut signal = Some(signal);
    let mut appended = Vec::new();
    for round in 0..batches {
        if round == signal_after
            && let Some(signal) = signal.take()
        {
            // The receiver only goes away if the check already failed.
            let _ = signal.send(());
        }
        let batch = events(batch_size);
        append(
            &store,
            &streams[round % streams.len()],
            ExpectedVersion::Any,
            &batch,
        )
        .await;
        appended.extend(ids(&batch));
        tokio::task::yield_now().await;
    }
    appended
}

/// Collects `count` events and exactly one `CaughtUp` from `follower`, checking order as they
/// come; returns the events and the number of events before `CaughtUp`.
async fn collect_with_one_caught_up(
    follower: &mut Follower,
    count: usize,
    what: &str,
) -> (Vec<RecordedEvent>, usize) {
    let mut received: Vec<RecordedEvent> = Vec::with_capacity(count);
    let mut caught_up_at = None;
    while received.len() < count || caught_up_at.is_none() {
        match follower.next().await {
            SubscriptionMessage::Event(event) => {
                if let Some(previous) = received.last() {
                    assert!(
                        previous.position < event.position,
                        "{what}: position {} follows {}",
                        event.position,
                        previous.position
                    );
                }
                assert!(
                    received.len() < count,
                    "{what}: more events than were appended"
                );
                received.push(event);
            }
            SubscriptionMessage::CaughtUp => {
                assert!(caught_up_at.is_none(), "{what}: CaughtUp sent twice");
                caught_up_at = Some(received.len());
            }
        }
    }
    (received, caught_up_at.unwrap_or_default())
}

/// A subscription that starts while a writer appends misses nothing and repeats nothing across
/// the switch from catch-up to live, and sends `CaughtUp` once, after at least the events that
/// existed when it started.
pub async fn subscribe_all_started_during_appends_delivers_every_event_once<
    S: EventStore + Clone,
>(
    store: S,
) {
    let category = unique_category();
    let streams = vec![
        stream_in(&category),
        stream_in(&category),
        stream_in(&category),
    ];
    let (started, start) = oneshot::channel();
    let writer = tokio::spawn(write_while_signalling(
        store.clone(),
        streams,
        300,
        10,
        50,
        started,
    ));
    start.await.expect("the writer stopped before signalling");
    let existing = read_category(&store, &category).await.len();
    let mut follower = Follower::new(
        store.subscribe_all(None, &categories([&category])),
        "subscribe_all started during appends",
    );
    let (received, caught_up_at) =
        collect_with_one_caught_up(&mut follower, 3_000, "subscribe_all during appends").await;
    let appended = join(writer).await;
    assert_eq!(
        recorded_ids(&received),
        appended,
        "the subscription lost, repeated or reordered events"
    );
    assert!(
        caught_up_at >= existing,
        "CaughtUp came after {caught_up_at} events, but {existing} existed when the subscription \
         started"
    );
    follower.assert_quiet(|_| false).await;
}

/// A subscriber that is slower than the writer — it pauses every few thousand events while
/// 100,000 events are appended in batches of 1,000 — still receives every event exactly once, in
/// order: the store reads behind it from the log instead of dropping what it cannot buffer.
pub async fn subscribe_all_delivers_every_event_once_to_a_slow_subscriber<S: EventStore + Clone>(
    store: S,
) {
    const BATCHES: usize = 100;
    const BATCH_SIZE: u64 = 1_000;
    const TOTAL: usize = BATCHES * BATCH_SIZE as usize;
    let category = unique_category();
    let streams: Vec<StreamId> = (0..4).map(|_| stream_in(&category)).collect();
    let mut follower = Follower::new(
        store.subscribe_all(None, &categories([&category])),
        "a slow subscribe_all",
    );
    let (started, start) = oneshot::channel();
    let writer = tokio::spawn(write_while_signalling(
        store.clone(),
        streams.clone(),
        BATCHES,
        BATCH_SIZE,
        0,
        started,
    ));
    start.await.expect("the writer stopped before signalling");

    let mut received: Vec<Uuid> = Vec::with_capacity(TOTAL);
    let mut next_revision: HashMap<StreamId, u64> = HashMap::new();
    let mut previous = None;
    let mut caught_up = 0;
    while received.len() < TOTAL || caught_up == 0 {
        match follower.next().await {
            SubscriptionMessage::Event(event) => {
                assert!(
                    previous < Some(event.position),
                    "event {} of the slow subscriber: position {} follows {previous:?}",
                    received.len(),
                    event.position
                );
                previous = Some(event.position);
                let revision = next_revision.entry(event.stream.clone()).or_default();
                assert_eq!(
                    event.revision, *revision,
                    "{}: the slow subscriber skipped or repeated a revision",
                    event.stream
                );
                *revision += 1;
                received.push(event.id);
                assert!(received.len() <= TOTAL, "more events than were appended");
                if received.len().is_multiple_of(5_000) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            SubscriptionMessage::CaughtUp => caught_up += 1,
        }
        assert!(caught_up <= 1, "the slow subscriber got CaughtUp twice");
    }
    let appended = join(writer).await;
    assert!(
        received == appended,
        "the slow subscriber did not receive the 100,000 events exactly once in append order"
    );
    follower.assert_quiet(|_| false).await;
}

/// `subscribe_stream` from the start delivers the stream's events, then `CaughtUp` once, then
/// events appended afterwards — and never events of other streams.
pub async fn subscribe_stream_delivers_existing_events_then_caught_up_once_then_live_events<
    S: EventStore + Clone,
>(
    store: S,
) {
    let category = unique_category();
    let (stream, sibling) = (stream_in(&category), stream_in(&category));
    let existing = events(3);
    append(&store, &stream, ExpectedVersion::NoStream, &existing[..2]).await;
    append(&store, &sibling, ExpectedVersion::NoStream, &events(2)).await;
    append(&store, &stream, ExpectedVersion::Exact(1), &existing[2..]).await;

    let mut follower = Follower::new(
        store.subscribe_stream(&stream, None),
        format!("subscribe_stream({stream}, None)"),
    );
    let caught_up = follower.events_until_caught_up().await;
    assert_eq!(
        recorded_ids(&caught_up),
        ids(&existing),
        "the catch-up phase did not deliver exactly the stream's events"
    );
    assert_eq!(
        caught_up,
        read_forward(&store, &stream).await,
        "subscribe_stream and read_stream disagree"
    );

    let live = events(2);
    append(&store, &sibling, ExpectedVersion::Any, &events(2)).await;
    append(&store, &stream, ExpectedVersion::Exact(2), &live[..1]).await;
    append(&store, &sibling, ExpectedVersion::Any, &events(1)).await;
    append(&store, &stream, ExpectedVersion::Exact(3), &live[1..]).await;
    let received = follower.events(2).await;
    assert_eq!(
        recorded_ids(&received),
        ids(&live),
        "live events of the stream"
    );
    assert_eq!(revisions(&received), [3, 4], "live revisions");
    for (received, expected) in received.iter().zip(&live) {
        assert_recorded_as(received, expected);
    }
    follower.assert_quiet(|_| false).await;
}

/// Resuming `subscribe_stream` after revision `r` delivers exactly the revisions after `r` before
/// `CaughtUp`, for every `r` of the stream and past its end; then live events follow.
pub async fn subscribe_stream_resumes_after_every_revision<S: EventStore + Clone>(store: S) {
    let stream = stream_in(&unique_category());
    let written = events(5);
    append(&store, &stream, ExpectedVersion::NoStream, &written[..2]).await;
    append(&store, &stream, ExpectedVersion::Exact(1), &written[2..]).await;
    let mut followers = Vec::new();
    for after in [None, Some(0), Some(1), Some(2), Some(3), Some(4)] {
        let mut follower = Follower::new(
            store.subscribe_stream(&stream, after),
            format!("subscribe_stream({stream}, after {after:?})"),
        );
        let from = after.map_or(0, |r| r + 1);
        let received = follower.events_until_caught_up().await;
        assert_eq!(
            revisions(&received),
            (from..5).collect::<Vec<_>>(),
            "subscribe_stream after {after:?}"
        );
        assert_eq!(
            recorded_ids(&received),
            ids(&written[usize::try_from(from).unwrap()..]),
            "subscribe_stream after {after:?}"
        );
        followers.push(follower);
    }
    let live = events(1);
    append(&store, &stream, ExpectedVersion::Exact(4), &live).await;
    for follower in &mut followers {
        let received = follower.next_event().await;
        assert_eq!(
            (received.revision, received.id),
            (5, live[0].id),
            "a resumed subscription missed the live event"
        );
    }
}

/// `subscribe_stream` on a stream that does not exist yet sends `CaughtUp` first, then the
/// stream's first events as they are appended.
pub async fn subscribe_stream_to_a_missing_stream_sends_caught_up_then_its_first_events<
    S: EventStore + Clone,
>(
    store: S,
) {
    let category = unique_category();
    let (stream, sibling) = (stream_in(&category), stream_in(&category));
    append(&store, &sibling, ExpectedVersion::NoStream, &events(1)).await;
    let mut follower = Follower::new(
        store.subscribe_stream(&stream, None),
        format!("subscribe_stream({stream}) before it exists"),
    );
    follower.expect_caught_up().await;
    follower.assert_quiet(|_| false).await;
    let written = events(2);
    append(&store, &sibling, ExpectedVersion::Any, &events(1)).await;
    append(&store, &stream, ExpectedVersion::NoStream, &written).await;
    let received = follower.events(2).await;
    assert_eq!(
        recorded_ids(&received),
        ids(&written),
        "the stream's first events"
    );
    assert_eq!(revisions(&received), [0, 1], "the stream's first revisions");
    follower.assert_quiet(|_| false).await;
}

/// A stream subscription that starts while a writer appends to that stream misses nothing and
/// repeats nothing across the switch from catch-up to live.
pub async fn subscribe_stream_started_during_appends_delivers_every_event_once<
    S: EventStore + Clone,
>(
    store: S,
) {
    let stream = stream_in(&unique_category());
    let (started, start) = oneshot::channel();
    let writer = tokio::spawn(write_while_signalling(
        store.clone(),
        vec![stream.clone()],
        300,
        10,
        50,
        started,
    ));
    start.await.expect("the writer stopped before signalling");
    let existing = read_forward(&store, &stream).await.len();
    let mut follower = Follower::new(
        store.subscribe_stream(&stream, None),
        "subscribe_stream started during appends",
    );
    let (received, caught_up_at) =
        collect_with_one_caught_up(&mut follower, 3_000, "subscribe_stream during appends").await;
    let appended = join(writer).await;
    assert_eq!(
        recorded_ids(&received),
        appended,
        "the subscription lost, repeated or reordered events"
    );
    assert_eq!(
        revisions(&received),
        (0..3_000).collect::<Vec<_>>(),
        "revisions of the stream subscription"
    );
    assert!(
        caught_up_at >= existing,
        "CaughtUp came after {caught_up_at} events, but {existing} existed when the subscription \
         started"
    );
    follower.assert_quiet(|_| false).await;
}
