//! Reads and subscriptions by partition ([`EventFilter::with_partition`]): each event in exactly
//! one partition of a count, the one of its stream ([`Partition::of`]), in global order, with
//! nothing of the other partitions and nothing skipped.

use decider_core::projection::Partition;
use decider_core::{EventFilter, EventStore, ExpectedVersion, StreamId};
use uuid::Uuid;

use super::support::{
    Follower, append, categories, event, read_all, recorded_ids, stream_in, unique_category,
};

/// Two rounds of one event per stream (types `A` then `B`) over 24 fresh streams of a fresh
/// category: the category and what was appended, in order.
async fn spread<S: EventStore>(store: &S) -> (String, Vec<(Uuid, StreamId, &'static str)>) {
    let category = unique_category();
    let streams: Vec<StreamId> = (0..24).map(|_| stream_in(&category)).collect();
    let mut appended = Vec::new();
    for (round, event_type) in ["A", "B"].into_iter().enumerate() {
        for stream in &streams {
            let written = event(event_type, round as u64);
            append(
                store,
                stream,
                ExpectedVersion::Any,
                std::slice::from_ref(&written),
            )
            .await;
            appended.push((written.id, stream.clone(), event_type));
        }
    }
    (category, appended)
}

/// For 1, 3 and 4 partitions, a read of each partition returns exactly the events of its
/// streams, in global order, so that every event is in one partition; with a type filter too.
pub async fn read_all_by_partition_returns_each_event_in_exactly_its_streams_partition<
    S: EventStore + Clone,
>(
    store: S,
) {
    let (category, appended) = spread(&store).await;
    for count in [1, 3, 4] {
        let mut seen = 0;
        for partition in Partition::all(count).unwrap_or_default() {
            let filter = categories([category.as_str()]).with_partition(partition);
            let expected: Vec<Uuid> = appended
                .iter()
                .filter(|(_, stream, _)| partition.contains(stream))
                .map(|(id, _, _)| *id)
                .collect();
            let read = read_all(&store, None, None, &filter).await;
            assert_eq!(
                recorded_ids(&read),
                expected,
                "the events of partition {partition}, in global order"
            );
            seen += read.len();
            let typed = filter.clone().with_event_types(["B"]);
            let expected_b: Vec<Uuid> = appended
                .iter()
                .filter(|(_, stream, t)| partition.contains(stream) && *t == "B")
                .map(|(id, _, _)| *id)
                .collect();
            assert_eq!(
                recorded_ids(&read_all(&store, None, None, &typed).await),
                expected_b,
                "the events of type B of partition {partition}"
            );
        }
        assert_eq!(
            seen,
            appended.len(),
            "every event in one partition of {count}"
        );
    }
}

/// A subscription to one partition delivers its streams' events, catch-up then live, in order,
/// and nothing of the other partitions.
pub async fn subscribe_all_by_partition_delivers_only_its_streams_catch_up_then_live<
    S: EventStore + Clone,
>(
    store: S,
) {
    let (category, appended) = spread(&store).await;
    let Ok(partition) = Partition::new(1, 3) else {
        unreachable!("partition 1 of 3 exists")
    };
    let filter: EventFilter = categories([category.as_str()]).with_partition(partition);
    let mine = |entries: &[(Uuid, StreamId, &str)]| -> Vec<Uuid> {
        entries
            .iter()
            .filter(|(_, stream, _)| partition.contains(stream))
            .map(|(id, _, _)| *id)
            .collect()
    };
    let mut follower = Follower::new(store.subscribe_all(None, &filter), format!("{filter:?}"));
    assert_eq!(
        recorded_ids(&follower.events_until_caught_up().await),
        mine(&appended),
        "the catch-up of partition {partition}"
    );
    let mut live = Vec::new();
    let streams: Vec<StreamId> = appended
        .iter()
        .take(24)
        .map(|(_, s, _)| s.clone())
        .collect();
    for stream in &streams {
        let written = event("C", 2);
        append(
            &store,
            stream,
            ExpectedVersion::Any,
            std::slice::from_ref(&written),
        )
        .await;
        live.push((written.id, stream.clone(), "C"));
    }
    let expected = mine(&live);
    assert_eq!(
        recorded_ids(&follower.events(expected.len()).await),
        expected,
        "the live events of partition {partition}"
    );
    follower.assert_quiet(|_| false).await;
}
