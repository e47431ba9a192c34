//! Dynamic consistency boundaries ([`DcbStore`]): reads by query, conditional appends, and
//! race-freedom — the checks of [`dcb_conformance_tests!`](crate::dcb_conformance_tests), for
//! stores that implement the extension.
//!
//! Every check tags its events with tags of its own (a fresh UUID in each), so that the checks
//! also pass on a store others write to.

use std::collections::HashSet;
use std::sync::Arc;

use decider_core::dcb::{AppendCondition, DcbStore, Query, QueryItem, Tag};
use decider_core::{
    AppendResult, EventData, EventFilter, EventStore, ExpectedVersion, Position, RecordedEvent,
    StoreError, SubscriptionMessage,
};
use futures::TryStreamExt;
use tokio::sync::Barrier;
use uuid::Uuid;

use super::support::{
    event, join, new_stream, read_all, recorded_ids, stream_in, unique_category, within,
};

/// A tag no other check uses.
fn unique_tag(key: &str) -> Tag {
    Tag::pair(key, Uuid::new_v4().simple()).expect("the kit builds valid tags")
}

fn tagged(event_type: &str, n: u64, tags: &[&Tag]) -> EventData {
    event(event_type, n).with_tags(tags.iter().map(|t| (*t).clone()))
}

async fn query<S: DcbStore>(
    store: &S,
    query: &Query,
    after: Option<Position>,
    limit: Option<u64>,
) -> Vec<RecordedEvent> {
    within(
        "a read by query",
        store.read_query(query, after, limit).try_collect(),
    )
    .await
    .unwrap_or_else(|error| panic!("a read by query failed: {error}"))
}

async fn append_if<S: DcbStore>(
    store: &S,
    events: Vec<EventData>,
    condition: AppendCondition,
) -> Result<AppendResult, StoreError> {
    let stream = new_stream();
    within(
        "a conditional append",
        store.append_if(&stream, ExpectedVersion::NoStream, events, condition),
    )
    .await
}

async fn append_tagged<S: DcbStore>(store: &S, events: Vec<EventData>) -> AppendResult {
    let stream = new_stream();
    within(
        "an append",
        store.append(&stream, ExpectedVersion::NoStream, events),
    )
    .await
    .unwrap_or_else(|error| panic!("a plain append of tagged events failed: {error}"))
}

fn last_position(events: &[RecordedEvent]) -> Option<Position> {
    events.last().map(|e| e.position)
}

/// Events carry their tags through every read, whichever way they were appended; a query
/// selects by type (one of) and tags (all of) per item, OR across items, in log order, after a
/// position, up to a limit.
pub async fn tagged_events_are_found_by_query_in_log_order<S: DcbStore + Clone>(store: S) {
    let (a, b) = (unique_tag("a"), unique_tag("b"));
    append_tagged(
        &store,
        vec![
            tagged("X", 0, &[&a]),
            tagged("Y", 1, &[&a, &b]),
            tagged("X", 2, &[&b]),
        ],
    )
    .await;
    let conditional = vec![tagged("Y", 3, &[&b]), tagged("Z", 4, &[&a, &b])];
    append_if(
        &store,
        conditional,
        AppendCondition::new(Query::from(QueryItem::tagged([unique_tag("none")])), None),
    )
    .await
    .expect("a conditional append on a query nothing matches succeeds");
    let n = |events: &[RecordedEvent]| -> Vec<u64> {
        events
            .iter()
            .map(|e| {
                let payload: serde_json::Value =
                    serde_json::from_slice(&e.payload).expect("JSON payload");
                payload["n"].as_u64().expect("n")
            })
            .collect()
    };
    let of_a = query(
        &store,
        &Query::from(QueryItem::tagged([a.clone()])),
        None,
        None,
    )
    .await;
    assert_eq!(n(&of_a), [0, 1, 4], "events tagged a");
    let mut sorted = vec![a.clone(), b.clone()];
    sorted.sort();
    assert_eq!(of_a[1].metadata.tags, sorted, "tags round-trip (in order)");
    let both = Query::from(QueryItem::tagged([a.clone(), b.clone()]));
    assert_eq!(
        n(&query(&store, &both, None, None).await),
        [1, 4],
        "tagged a and b"
    );
    let typed = Query::from(QueryItem::tagged([b.clone()]).with_types(["X", "Z"]));
    assert_eq!(
        n(&query(&store, &typed, None, None).await),
        [2, 4],
        "X or Z, tagged b"
    );
    let either = Query::from(QueryItem::tagged([a.clone()]).with_types(["X"]))
        .or(QueryItem::tagged([b.clone()]).with_types(["Y"]));
    let found = query(&store, &either, None, None).await;
    assert_eq!(n(&found), [0, 1, 3], "OR across items");
    assert_eq!(
        n(&query(&store, &either, Some(found[0].position), None).await),
        [1, 3],
        "after a position"
    );
    assert_eq!(
        n(&query(&store, &either, None, Some(2)).await),
        [0, 1],
        "a limit"
    );

    // One log: the conditionally appended events are in their stream and in global reads.
    let log = read_all(&store, None, None, &EventFilter::all()).await;
    let ids: HashSet<Uuid> = recorded_ids(&log).into_iter().collect();
    assert!(
        query(&store, &Query::from(QueryItem::tagged([b])), None, None)
            .await
            .iter()
            .all(|e| ids.contains(&e.id)),
        "every event found by query is in the global log"
    );
}

/// A condition fails when an event matching its query was appended after its position, naming
/// that event, and writes nothing; events that do not match, or are not after it, never fail it.
pub async fn a_condition_fails_only_on_a_matching_event_after_its_position<S: DcbStore + Clone>(
    store: S,
) {
    let (course, other) = (unique_tag("course"), unique_tag("course"));
    let first = append_tagged(&store, vec![tagged("Subscribed", 0, &[&course])]).await;
    let on_course = Query::from(QueryItem::tagged([course.clone()]).with_types(["Subscribed"]));

    let stale = append_if(
        &store,
        vec![tagged("Subscribed", 1, &[&course])],
        AppendCondition::new(on_course.clone(), None),
    )
    .await;
    match stale {
        Err(StoreError::ConditionFailed {
            after: None,
            matched,
            event_type,
            ..
        }) => {
            assert_eq!(
                (matched, event_type.as_str()),
                (first.position, "Subscribed")
            );
        }
        other => panic!("a condition with a matching event after it must fail: {other:?}"),
    }
    assert_eq!(
        query(&store, &on_course, None, None).await.len(),
        1,
        "a failed conditional append writes nothing"
    );

    // Events of another tag, or another type, after the position do not fail it.
    append_tagged(&store, vec![tagged("Subscribed", 2, &[&other])]).await;
    append_tagged(&store, vec![tagged("Renamed", 3, &[&course])]).await;
    let current = AppendCondition::new(on_course.clone(), Some(first.position));
    let won = append_if(
        &store,
        vec![tagged("Subscribed", 4, &[&course])],
        current.clone(),
    )
    .await
    .expect("nothing matching was appended after the position");
    // ...and now its own event is after that position: the same condition fails.
    match append_if(&store, vec![tagged("Subscribed", 5, &[&course])], current).await {
        Err(StoreError::ConditionFailed { matched, .. }) => assert_eq!(matched, won.position),
        other => panic!("{other:?}"),
    }
}

/// An exact repeat of a conditional append that was written returns its original result
/// (its own events match the query now); the stream's expectation is checked too.
pub async fn a_repeated_conditional_append_returns_its_original_result<S: DcbStore + Clone>(
    store: S,
) {
    let tag = unique_tag("username");
    let claim = Query::from(QueryItem::tagged([tag.clone()]));
    let stream = new_stream();
    let events = vec![tagged("Claimed", 0, &[&tag])];
    let condition = AppendCondition::new(claim.clone(), None);
    let first = within(
        "a conditional append",
        store.append_if(
            &stream,
            ExpectedVersion::NoStream,
            events.clone(),
            condition.clone(),
        ),
    )
    .await
    .expect("the first claim succeeds");
    let again = within(
        "its repeat",
        store.append_if(
            &stream,
            ExpectedVersion::NoStream,
            events,
            condition.clone(),
        ),
    )
    .await
    .expect("a repeat is not a conflict");
    assert!(
        again.repeated && again.position == first.position,
        "{again:?}"
    );
    assert_eq!(
        query(&store, &claim, None, None).await.len(),
        1,
        "written once"
    );

    let refused = within(
        "an append to an existing stream",
        store.append_if(
            &stream,
            ExpectedVersion::NoStream,
            vec![tagged("Claimed", 1, &[&unique_tag("username")])],
            AppendCondition::new(Query::from(QueryItem::tagged([unique_tag("x")])), None),
        ),
    )
    .await;
    assert!(
        matches!(refused, Err(StoreError::WrongExpectedVersion { .. })),
        "the stream's expectation holds for conditional appends: {refused:?}"
    );
}

/// The number of racers in the race checks.
const RACERS: usize = 16;

/// Reads the seats of `course` taken, then (all racers together) claims the next one if any is
/// left, on the condition that nothing matching changed since its read.
async fn take_last_seat<S: DcbStore>(
    store: &S,
    course: &Tag,
    capacity: usize,
    start: &Barrier,
) -> Result<AppendResult, StoreError> {
    let seats = Query::from(QueryItem::tagged([course.clone()]).with_types(["SeatTaken"]));
    let taken = query(store, &seats, None, None).await;
    start.wait().await;
    assert!(
        taken.len() < capacity,
        "the course was full before the race"
    );
    append_if(
        store,
        vec![tagged("SeatTaken", taken.len() as u64, &[course])],
        AppendCondition::new(seats, last_position(&taken)),
    )
    .await
}

/// 16 concurrent appenders of the same decision (the last seat of a course): exactly one wins,
/// the other 15 get the conflict.
pub async fn sixteen_racers_for_the_last_seat_one_wins<S: DcbStore + Clone>(store: S) {
    let course = unique_tag("course");
    // 29 of 30 seats taken already.
    append_tagged(
        &store,
        (0..29)
            .map(|n| tagged("SeatTaken", n, &[&course]))
            .collect(),
    )
    .await;
    let start = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let (store, course, start) = (store.clone(), course.clone(), start.clone());
            tokio::spawn(async move { take_last_seat(&store, &course, 30, &start).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(join(racer).await);
    }
    let won = outcomes.iter().filter(|o| o.is_ok()).count();
    let conflicts = outcomes
        .iter()
        .filter(|o| matches!(o, Err(StoreError::ConditionFailed { .. })))
        .count();
    assert_eq!(
        (won, conflicts),
        (1, RACERS - 1),
        "exactly one racer gets the last seat, the others the conflict: {outcomes:?}"
    );
    let seats = Query::from(QueryItem::tagged([course]).with_types(["SeatTaken"]));
    assert_eq!(
        query(&store, &seats, None, None).await.len(),
        30,
        "30 seats, not more"
    );
}

/// 16 appenders on 16 different courses: all win at the first try.
pub async fn sixteen_appenders_on_disjoint_tags_all_win<S: DcbStore + Clone>(store: S) {
    let start = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                let course = unique_tag("course");
                take_last_seat(&store, &course, 30, &start).await
            })
        })
        .collect();
    for racer in racers {
        let outcome = join(racer).await;
        assert!(
            outcome.is_ok(),
            "a decision on its own course must not conflict with the others: {outcome:?}"
        );
    }
}

/// Conditional appends racing unconditional appends that write matching tags: no conditional
/// append commits over an event it did not see — in the log, no event matching its query lies
/// between the position it decided on and its own — and a subscription sees every event once,
/// in order.
pub async fn conditional_appends_never_commit_over_an_unseen_matching_event<S: DcbStore + Clone>(
    store: S,
) {
    let category = unique_category();
    let course = unique_tag("course");
    let seats = Query::from(QueryItem::tagged([course.clone()]));
    let head = within("the head", store.head_position())
        .await
        .expect("the head");
    let subscription = store.subscribe_all(
        head,
        &EventFilter::all().with_categories([category.clone()]),
    );
    let watching = tokio::spawn(async move {
        futures::pin_mut!(subscription);
        let mut seen = Vec::new();
        while let Ok(message) =
            tokio::time::timeout(std::time::Duration::from_secs(2), subscription.try_next()).await
        {
            match message
                .expect("the subscription failed")
                .expect("the subscription ended")
            {
                SubscriptionMessage::Event(event) => seen.push(event),
                SubscriptionMessage::CaughtUp => {}
            }
        }
        seen
    });

    const ROUNDS: u64 = 12;
    let deciders: Vec<_> = (0..4)
        .map(|d| {
            let (store, seats, course, category) = (
                store.clone(),
                seats.clone(),
                course.clone(),
                category.clone(),
            );
            tokio::spawn(async move {
                let mut won = Vec::new();
                for round in 0..ROUNDS {
                    let seen = query(&store, &seats, None, None).await;
                    let after = last_position(&seen);
                    // Room for the others to write between the read and the append.
                    tokio::task::yield_now().await;
                    let stream = stream_in(&category);
                    let outcome = within(
                        "a conditional append",
                        store.append_if(
                            &stream,
                            ExpectedVersion::NoStream,
                            vec![tagged("Decided", d * 100 + round, &[&course])],
                            AppendCondition::new(seats.clone(), after),
                        ),
                    )
                    .await;
                    match outcome {
                        Ok(result) => won.push((after, result.position)),
                        Err(StoreError::ConditionFailed { .. }) => {}
                        Err(other) => panic!("a conditional append failed: {other}"),
                    }
                }
                won
            })
        })
        .collect();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (store, course, category) = (store.clone(), course.clone(), category.clone());
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let stream = stream_in(&category);
                    within(
                        "an unconditional append",
                        store.append(
                            &stream,
                            ExpectedVersion::NoStream,
                            vec![tagged("Written", w * 100 + round, &[&course])],
                        ),
                    )
                    .await
                    .unwrap_or_else(|error| panic!("a tagged append failed: {error}"));
                }
            })
        })
        .collect();
    let mut decisions = Vec::new();
    for decider in deciders {
        decisions.extend(join(decider).await);
    }
    for writer in writers {
        join(writer).await;
    }
    assert!(!decisions.is_empty(), "no conditional append ever won");

    let log = query(&store, &seats, None, None).await;
    for (after, own) in &decisions {
        let unseen: Vec<_> = log
            .iter()
            .filter(|e| after.is_none_or(|after| e.position > after) && e.position < *own)
            .collect();
        assert!(
            unseen.is_empty(),
            "a conditional append decided at {after:?} committed at {own} over {} matching \
             events it did not see: {:?}",
            unseen.len(),
            unseen
                .iter()
                .map(|e| (e.position, &e.event_type))
                .collect::<Vec<_>>()
        );
    }
    let seen = within("the subscription", join(watching)).await;
    let in_log = read_all(
        &store,
        head,
        None,
        &EventFilter::all().with_categories([category]),
    )
    .await;
    assert_eq!(
        recorded_ids(&seen),
        recorded_ids(&in_log),
        "the subscription saw every event once, in log order"
    );
    assert_eq!(
        in_log.len(),
        log.len(),
        "every event of the check is tagged"
    );
}

/// A small deterministic generator (xorshift64*), so that a failing sequence is the same on
/// every run.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn some<'a, T>(&mut self, of: &'a [T], most: usize) -> Vec<&'a T> {
        let count = self.below(most + 1);
        let mut picked: Vec<&T> = (0..count).map(|_| &of[self.below(of.len())]).collect();
        picked.dedup_by(|a, b| std::ptr::eq(*a, *b));
        picked
    }
}

/// What an append did, in terms both stores share: the index of the event in this check's
/// sequence, or the index of the event that failed its condition.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Written(usize),
    ConditionFailed(usize),
}

/// Random sequences of plain and conditional appends and reads by query give the same results
/// on the store as on the memory store, the model.
pub async fn random_operations_agree_with_the_memory_model<S: DcbStore + Clone>(store: S) {
    for seed in 1..=4u64 {
        agree_with_the_model(&store, seed).await;
    }
}

async fn agree_with_the_model<S: DcbStore>(store: &S, seed: u64) {
    let model = decider_store_memory::MemoryStore::new();
    let mut dice = Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let tags: Vec<Tag> = (0..4).map(|_| unique_tag("t")).collect();
    let types: Vec<String> = (0..3)
        .map(|n| super::support::unique_event_type(&format!("T{n}")))
        .collect();
    // The positions of this sequence's events, in the store and in the model.
    let (mut in_store, mut in_model): (Vec<Position>, Vec<Position>) = (Vec::new(), Vec::new());
    let random_query = |dice: &mut Dice| {
        let item = |dice: &mut Dice| {
            // At least a type or a tag of this check: other checks' events never match.
            let mut item = QueryItem::any()
                .with_types(dice.some(&types, 2).into_iter().cloned())
                .with_tags(dice.some(&tags, 2).into_iter().cloned());
            if item.is_any() {
                item = item.with_tags([tags[dice.below(tags.len())].clone()]);
            }
            item
        };
        let mut query = Query::from(item(dice));
        if dice.below(2) == 0 {
            query = query.or(item(dice));
        }
        query
    };
    for step in 0..40 {
        let event = EventData::json(
            types[dice.below(types.len())].clone(),
            format!(r#"{{"n":{step}}}"#),
        )
        .with_tags(dice.some(&tags, 3).into_iter().cloned());
        let stream = new_stream();
        let (in_store_result, in_model_result) = if dice.below(3) == 0 {
            let r1 = within(
                "an append",
                store.append(&stream, ExpectedVersion::NoStream, vec![event.clone()]),
            )
            .await;
            let r2 = model
                .append(&stream, ExpectedVersion::NoStream, vec![event])
                .await;
            (r1, r2)
        } else {
            let query = random_query(&mut dice);
            let at = dice.below(in_store.len() + 1);
            let (after_store, after_model) = match at.checked_sub(1) {
                None => (None, None),
                Some(index) => (Some(in_store[index]), Some(in_model[index])),
            };
            let r1 = within(
                "a conditional append",
                store.append_if(
                    &stream,
                    ExpectedVersion::NoStream,
                    vec![event.clone()],
                    AppendCondition::new(query.clone(), after_store),
                ),
            )
            .await;
            let r2 = model
                .append_if(
                    &stream,
                    ExpectedVersion::NoStream,
                    vec![event],
                    AppendCondition::new(query, after_model),
                )
                .await;
            (r1, r2)
        };
        let outcome = |result: Result<AppendResult, StoreError>, positions: &mut Vec<Position>| {
            match result {
                Ok(result) => {
                    positions.push(result.position);
                    Outcome::Written(positions.len() - 1)
                }
                Err(StoreError::ConditionFailed { matched, .. }) => Outcome::ConditionFailed(
                    positions
                        .iter()
                        .position(|p| *p == matched)
                        .unwrap_or(usize::MAX),
                ),
                Err(other) => panic!("step {step} (seed {seed}) failed: {other}"),
            }
        };
        let (a, b) = (
            outcome(in_store_result, &mut in_store),
            outcome(in_model_result, &mut in_model),
        );
        assert_eq!(
            a, b,
            "step {step} (seed {seed}): the store and the model disagree"
        );
    }
    for _ in 0..10 {
        let query = random_query(&mut dice);
        let at = dice.below(in_store.len() + 1);
        let (after_store, after_model) = match at.checked_sub(1) {
            None => (None, None),
            Some(index) => (Some(in_store[index]), Some(in_model[index])),
        };
        let found = recorded_ids(&query_of(store, &query, after_store).await);
        let expected = recorded_ids(&query_of(&model, &query, after_model).await);
        assert_eq!(
            found, expected,
            "seed {seed}: a read by query disagrees with the model: {query:?}"
        );
    }
}

async fn query_of<S: DcbStore>(
    store: &S,
    query: &Query,
    after: Option<Position>,
) -> Vec<RecordedEvent> {
    within(
        "a read by query",
        store.read_query(query, after, None).try_collect(),
    )
    .await
    .unwrap_or_else(|error| panic!("a read by query failed: {error}"))
}
