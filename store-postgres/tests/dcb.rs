//! Dynamic consistency boundaries on PostgreSQL: reads by query, and conditional appends under
//! concurrency — one winner per decision, no false conflicts between disjoint tags, no
//! conditional append committing over an event it did not see (tagged plain appends count),
//! and the store's gap-free global order kept through it all.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use decider_core::dcb::{AppendCondition, DcbStore, Query, QueryItem, Tag};
use decider_core::{
    AppendResult, EventData, EventFilter, EventStore, ExpectedVersion, Position, RecordedEvent,
    StoreError, StreamId, SubscriptionMessage,
};
use decider_store_postgres::{PostgresOptions, PostgresStore};
use futures::{StreamExt, TryStreamExt};
use support::{drop_store, fresh_store, fresh_store_with, raw_client, unmigrated_store};
use tokio::sync::Barrier;
use uuid::Uuid;

fn tag(text: &str) -> Tag {
    Tag::new(text).unwrap()
}

fn event(event_type: &str, tags: &[&str]) -> EventData {
    EventData::json(event_type, "{}").with_tags(tags.iter().map(|t| tag(t)))
}

/// A stream of its own, as each decision of `DecisionHandler` gets.
fn new_stream(category: &str) -> StreamId {
    StreamId::new(format!("{category}-{}", Uuid::new_v4().simple())).unwrap()
}

fn query(tags: &[&str], types: &[&str]) -> Query {
    Query::from(QueryItem::tagged(tags.iter().map(|t| tag(t))).with_types(types.iter().copied()))
}

async fn read(store: &PostgresStore, query: &Query, after: Option<Position>) -> Vec<RecordedEvent> {
    store
        .read_query(query, after, None)
        .try_collect()
        .await
        .unwrap()
}

/// Where a decision read up to: the last event its query returned.
async fn decision_basis(store: &PostgresStore, query: &Query) -> Option<Position> {
    read(store, query, None).await.last().map(|e| e.position)
}

async fn append_if(
    store: &PostgresStore,
    stream: &StreamId,
    events: Vec<EventData>,
    query: &Query,
    after: Option<Position>,
) -> Result<AppendResult, StoreError> {
    store
        .append_if(
            stream,
            ExpectedVersion::NoStream,
            events,
            AppendCondition::new(query.clone(), after),
        )
        .await
}

fn types_of(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[tokio::test]
async fn read_query_returns_the_matching_events_in_global_order_once_each() {
    let store = fresh_store().await;
    let s = new_stream("s");
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![
                event("A", &["x:1"]),
                event("B", &["x:1", "y:1"]),
                event("A", &["y:1"]),
                event("C", &[]),
                event("B", &["x:2"]),
                event("C", &["x:1"]),
            ],
        )
        .await
        .unwrap();
    let x1 = query(&["x:1"], &[]);
    assert_eq!(types_of(&read(&store, &x1, None).await), ["A", "B", "C"]);
    assert_eq!(
        types_of(&read(&store, &query(&["x:1"], &["B", "C"]), None).await),
        ["B", "C"]
    );
    assert_eq!(
        types_of(&read(&store, &query(&["x:1", "y:1"], &[]), None).await),
        ["B"]
    );
    // An event matching two items comes once; a type-only item finds untagged events too.
    let either = Query::from(QueryItem::tagged([tag("y:1")]))
        .or(QueryItem::tagged([tag("x:1")]).with_types(["B"]))
        .or(QueryItem::any().with_types(["C"]));
    assert_eq!(
        types_of(&read(&store, &either, None).await),
        ["B", "A", "C", "C"]
    );
    assert_eq!(read(&store, &Query::all(), None).await.len(), 6);
    // After a position, and a limit.
    let all_x1 = read(&store, &x1, None).await;
    let after_first = read(&store, &x1, Some(all_x1[0].position)).await;
    assert_eq!(types_of(&after_first), ["B", "C"]);
    let limited: Vec<RecordedEvent> = store
        .read_query(&either, None, Some(2))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(types_of(&limited), ["B", "A"]);
    // Tags come back in the metadata.
    assert_eq!(all_x1[1].metadata.tags, [tag("x:1"), tag("y:1")]);
    assert!(
        read(&store, &query(&["nothing:here"], &[]), None)
            .await
            .is_empty()
    );
    drop_store(store).await;
}

#[tokio::test]
async fn read_query_pages_through_a_large_result() {
    let store = fresh_store_with(PostgresOptions {
        page_size: 7,
        pool_size: 4,
        ..PostgresOptions::default()
    })
    .await;
    for round in 0..10 {
        let batch = (0..10)
            .map(|i| match (round + i) % 3 {
                0 => event("Hit", &["p:1"]),
                1 => event("Hit", &["p:2"]),
                _ => event("Miss", &["p:1"]),
            })
            .collect();
        store
            .append(&new_stream("page"), ExpectedVersion::NoStream, batch)
            .await
            .unwrap();
    }
    let q = query(&["p:1"], &["Hit"]).or(QueryItem::tagged([tag("p:2")]));
    let events = read(&store, &q, None).await;
    let expected: Vec<RecordedEvent> = store
        .read_all(None, None, &EventFilter::all())
        .try_filter(|e| futures::future::ready(e.event_type == "Hit"))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), expected.len());
    assert!(
        events
            .iter()
            .zip(&expected)
            .all(|(a, b)| a.position == b.position)
    );
    drop_store(store).await;
}

#[tokio::test]
async fn a_conditional_append_fails_on_an_event_appended_after_its_basis() {
    let store = fresh_store().await;
    let q = query(&["course:c1"], &["Subscribed"]);
    let basis = decision_basis(&store, &q).await;
    assert_eq!(basis, None);
    // Another tag, or another type, does not match.
    let other = query(&["course:c2"], &[]);
    append_if(
        &store,
        &new_stream("sub"),
        vec![event("Subscribed", &["course:c2"])],
        &other,
        None,
    )
    .await
    .unwrap();
    store
        .append(
            &new_stream("sub"),
            ExpectedVersion::NoStream,
            vec![event("Renamed", &["course:c1"])],
        )
        .await
        .unwrap();
    let first = new_stream("sub");
    append_if(
        &store,
        &first,
        vec![event("Subscribed", &["course:c1"])],
        &q,
        basis,
    )
    .await
    .unwrap();
    let error = append_if(
        &store,
        &new_stream("sub"),
        vec![event("Subscribed", &["course:c1"])],
        &q,
        basis,
    )
    .await
    .unwrap_err();
    let matched = read(&store, &q, None).await[0].position;
    assert_eq!(
        error,
        StoreError::ConditionFailed {
            after: None,
            matched,
            stream: first.clone(),
            event_type: "Subscribed".to_owned(),
        }
    );
    // Decided on what is there now, it goes through.
    let basis = decision_basis(&store, &q).await;
    append_if(
        &store,
        &new_stream("sub"),
        vec![event("Subscribed", &["course:c1"])],
        &q,
        basis,
    )
    .await
    .unwrap();
    drop_store(store).await;
}

#[tokio::test]
async fn a_plain_append_of_tagged_events_fails_a_condition_and_is_found_by_query() {
    let store = fresh_store().await;
    let q = query(&["user:ada"], &[]);
    let basis = decision_basis(&store, &q).await;
    let plain = StreamId::new("user-ada").unwrap();
    store
        .append(
            &plain,
            ExpectedVersion::Any,
            vec![event("Claimed", &["user:ada"])],
        )
        .await
        .unwrap();
    assert_eq!(read(&store, &q, None).await[0].stream, plain);
    let error = append_if(
        &store,
        &new_stream("claim"),
        vec![event("Claimed", &["user:ada"])],
        &q,
        basis,
    )
    .await
    .unwrap_err();
    assert!(error.is_condition_failed(), "{error}");
    drop_store(store).await;
}

#[tokio::test]
async fn the_stream_expectation_is_checked_before_the_condition_and_a_repeat_after_neither() {
    let store = fresh_store().await;
    let q = query(&["seat:1"], &[]);
    let stream = new_stream("seat");
    let events = vec![event("Taken", &["seat:1"]), event("Noted", &["seat:1"])];
    let written = append_if(&store, &stream, events.clone(), &q, None)
        .await
        .unwrap();
    assert_eq!(written.next_revision, 2);
    assert!(!written.repeated);
    // The same batch again: its original result, though its own events now fail the condition.
    let again = append_if(&store, &stream, events, &q, None).await.unwrap();
    assert_eq!(
        again,
        AppendResult {
            repeated: true,
            ..written
        }
    );
    // Other events to the existing stream: the expectation fails first.
    let error = append_if(&store, &stream, vec![event("Taken", &["seat:1"])], &q, None)
        .await
        .unwrap_err();
    assert!(error.is_wrong_expected_version(), "{error}");
    drop_store(store).await;
}

/// Two decisions on the same read of `query`, each appending an untagged `event_type`: the
/// first wins, the second meets the first's event.
async fn the_second_decision_on_one_basis_conflicts(
    store: &PostgresStore,
    query: &Query,
    event_type: &str,
) {
    let basis = decision_basis(store, query).await;
    append_if(
        store,
        &new_stream("d"),
        vec![event(event_type, &[])],
        query,
        basis,
    )
    .await
    .unwrap();
    let error = append_if(
        store,
        &new_stream("d"),
        vec![event(event_type, &[])],
        query,
        basis,
    )
    .await
    .unwrap_err();
    assert!(error.is_condition_failed(), "{error}");
}

#[tokio::test]
async fn query_items_without_tags_and_the_query_of_everything_are_conditions_too() {
    let store = fresh_store().await;
    let by_type = Query::from(QueryItem::any().with_types(["Defined"]));
    the_second_decision_on_one_basis_conflicts(&store, &by_type, "Defined").await;
    the_second_decision_on_one_basis_conflicts(&store, &Query::all(), "Other").await;
    drop_store(store).await;
}

/// (a) The last seat: every appender decided on the same events; the exclusive lock on the
/// course's tag makes them take turns, and each one after the first sees the first's event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conditional_appends_of_one_decision_admit_exactly_one_winner() {
    const CLIENTS: usize = 16;
    let store = fresh_store_with(PostgresOptions {
        pool_size: CLIENTS,
        ..PostgresOptions::default()
    })
    .await;
    let q = query(&["course:last"], &["Defined", "Subscribed"]);
    store
        .append(
            &new_stream("course"),
            ExpectedVersion::NoStream,
            vec![event("Defined", &["course:last"])],
        )
        .await
        .unwrap();
    for _round in 0..5 {
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (store, q, barrier) = (store.clone(), q.clone(), barrier.clone());
                tokio::spawn(async move {
                    let basis = decision_basis(&store, &q).await;
                    barrier.wait().await;
                    let seat = vec![event("Subscribed", &["course:last", "student:any"])];
                    append_if(&store, &new_stream("sub"), seat, &q, basis).await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(error) => assert!(error.is_condition_failed(), "{error}"),
            }
        }
        assert_eq!(won, 1);
    }
    assert_eq!(read(&store, &q, None).await.len(), 6);
    drop_store(store).await;
}

/// Counts, until `stop`, the advisory locks the store's connections wait for.
async fn count_lock_waits(schema: String, stop: Arc<AtomicBool>) -> u64 {
    let monitor = raw_client().await;
    let mut waits = 0;
    while !stop.load(Ordering::Relaxed) {
        let row = monitor
            .query_one(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = $1",
                &[&format!("decider:{schema}")],
            )
            .await
            .unwrap();
        waits += row.get::<_, i64>(0) as u64;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    waits
}

/// (b) Disjoint tags: sixteen decisions at once, each on a tag of its own, all win at the first
/// try, again and again, and none ever waits for another's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_appends_on_disjoint_tags_neither_conflict_nor_wait() {
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 10;
    let store = fresh_store_with(PostgresOptions {
        pool_size: CLIENTS,
        ..PostgresOptions::default()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = tokio::spawn(count_lock_waits(store.schema().to_owned(), stop.clone()));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let conflicts = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (store, barrier, conflicts) = (store.clone(), barrier.clone(), conflicts.clone());
            tokio::spawn(async move {
                let mine = format!("account:{client}");
                // The same types for all: shared type locks never make anyone wait.
                let q = query(&[&mine], &["Opened", "Deposited"]);
                for _ in 0..ROUNDS {
                    let basis = decision_basis(&store, &q).await;
                    barrier.wait().await;
                    let events = vec![event(
                        "Deposited",
                        &[&mine, "bank:shared-tag-written-by-all"],
                    )];
                    if let Err(error) =
                        append_if(&store, &new_stream("dep"), events, &q, basis).await
                    {
                        assert!(error.is_condition_failed(), "{error}");
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(conflicts.load(Ordering::Relaxed), 0);
    assert_eq!(
        monitor.await.unwrap(),
        0,
        "a disjoint append waited for a lock"
    );
    let shared = query(&["bank:shared-tag-written-by-all"], &[]);
    assert_eq!(read(&store, &shared, None).await.len(), CLIENTS * ROUNDS);
    drop_store(store).await;
}

/// A committed conditional append, as its writer knows it.
struct Committed {
    stream: StreamId,
    after: Option<Position>,
    position: Position,
}

/// (c) and (d): conditional appends race plain appends of matching tagged events. No
/// committed conditional append has a matching event of another stream between its basis and
/// its own position: every such event either committed before the append's check (which then
/// saw it and refused) or waited for the append's commit (and so took a later transaction id).
/// A subscription running through it all sees every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_appends_never_commit_over_a_racing_tagged_plain_append() {
    const DECIDERS: usize = 6;
    const PLAIN_WRITERS: usize = 6;
    const DECISIONS: usize = 25;
    const PLAIN_APPENDS: usize = 25;
    let store = fresh_store_with(PostgresOptions {
        pool_size: DECIDERS + PLAIN_WRITERS + 2,
        ..PostgresOptions::default()
    })
    .await;
    let q = query(&["room:r1"], &["Booked"]);
    let filter = EventFilter::all();
    let mut subscription = Box::pin(store.subscribe_all(None, &filter));
    let deciders: Vec<_> = (0..DECIDERS)
        .map(|_| {
            let (store, q) = (store.clone(), q.clone());
            tokio::spawn(async move {
                let mut committed = Vec::new();
                let mut refused = 0;
                for _ in 0..DECISIONS {
                    let after = decision_basis(&store, &q).await;
                    let stream = new_stream("booking");
                    let events = vec![event("Booked", &["room:r1", "guest:g"])];
                    match append_if(&store, &stream, events, &q, after).await {
                        Ok(result) => committed.push(Committed {
                            stream,
                            after,
                            position: result.position,
                        }),
                        Err(error) => {
                            assert!(error.is_condition_failed(), "{error}");
                            refused += 1;
                        }
                    }
                }
                (committed, refused)
            })
        })
        .collect();
    let plain_writers: Vec<_> = (0..PLAIN_WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = StreamId::new(format!("walkin-{writer}")).unwrap();
                for _ in 0..PLAIN_APPENDS {
                    store
                        .append(
                            &stream,
                            ExpectedVersion::Any,
                            vec![event("Booked", &["room:r1"])],
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let (mut committed, mut refused) = (Vec::new(), 0);
    for decider in deciders {
        let (mine, theirs) = decider.await.unwrap();
        committed.extend(mine);
        refused += theirs;
    }
    for writer in plain_writers {
        writer.await.unwrap();
    }
    let log = read(&store, &q, None).await;
    assert_eq!(log.len(), committed.len() + PLAIN_WRITERS * PLAIN_APPENDS);
    assert!(!committed.is_empty());
    for append in &committed {
        let over: Vec<&RecordedEvent> = log
            .iter()
            .filter(|e| append.after.is_none_or(|after| e.position > after))
            .filter(|e| e.position < append.position && e.stream != append.stream)
            .collect();
        assert!(
            over.is_empty(),
            "the append to {} decided after {:?} committed at {} over {:?}",
            append.stream,
            append.after,
            append.position,
            over.iter()
                .map(|e| (&e.stream, e.position))
                .collect::<Vec<_>>()
        );
    }
    // (d) The subscription: every event once, in global order.
    let all: Vec<RecordedEvent> = store
        .read_all(None, None, &filter)
        .try_collect()
        .await
        .unwrap();
    let mut seen: Vec<RecordedEvent> = Vec::new();
    while seen.len() < all.len() {
        match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
            Ok(Some(Ok(SubscriptionMessage::Event(event)))) => seen.push(event),
            Ok(Some(Ok(SubscriptionMessage::CaughtUp))) => {}
            other => panic!(
                "the subscription stopped after {} events: {other:?}",
                seen.len()
            ),
        }
    }
    let positions: Vec<Position> = seen.iter().map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert_eq!(
        positions,
        all.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    let ids: HashSet<Uuid> = seen.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), seen.len());
    eprintln!(
        "{} conditional appends committed, {refused} refused",
        committed.len()
    );
    drop_store(store).await;
}

/// (e) A tagged append held open in another transaction (its shared lock taken, its event
/// inserted, not committed) holds back a conditional append on its tag, which then sees the
/// event and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tagged_append_blocks_a_conditional_append_until_it_commits() {
    let store = fresh_store().await;
    let q = query(&["door:d1"], &[]);
    let basis = decision_basis(&store, &q).await;
    let mut client = raw_client().await;
    let transaction = client.transaction().await.unwrap();
    let key = format!("decider-dcb:{}:tag:door:d1", store.schema());
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))",
            &[&key],
        )
        .await
        .unwrap();
    let sql = format!(
        "SELECT outcome FROM \"{}\".append_tagged_events('held-1', 0::smallint, NULL, \
         ARRAY[$1::uuid], ARRAY['Opened'], ARRAY['{{}}'::jsonb], ARRAY[NULL::bytea], \
         ARRAY['{{\"$tags\": [\"door:d1\"]}}'::jsonb], NULL, 0, 0)",
        store.schema()
    );
    let row = transaction
        .query_one(&sql, &[&Uuid::new_v4()])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "ok");

    let conditional = tokio::spawn({
        let (store, q) = (store.clone(), q.clone());
        async move {
            append_if(
                &store,
                &new_stream("open"),
                vec![event("Opened", &["door:d1"])],
                &q,
                basis,
            )
            .await
        }
    });
    // It waits for the lock (seen in pg_locks), and only for that.
    let monitor = raw_client().await;
    let application = format!("decider:{}", store.schema());
    let mut waited = false;
    for _ in 0..500 {
        let row = monitor
            .query_one(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = $1",
                &[&application],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) > 0 {
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        waited,
        "the conditional append did not wait for the open append's lock"
    );
    assert!(!conditional.is_finished());
    transaction.commit().await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(10), conditional)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let StoreError::ConditionFailed {
        stream, event_type, ..
    } = &error
    else {
        panic!("{error}")
    };
    assert_eq!((stream.as_str(), event_type.as_str()), ("held-1", "Opened"));
    drop_store(store).await;
}

/// (f) A store created at migration 3 is upgraded: events appended then with tags in their
/// metadata are found by query afterwards, and condition appends see them.
#[tokio::test]
async fn migration_4_upgrades_a_store_of_migration_3_and_indexes_its_tagged_events() {
    let store = unmigrated_store(PostgresOptions::default()).await;
    store.migrate().await.unwrap();
    let client = raw_client().await;
    let schema = format!("\"{}\"", store.schema());
    // Back to migration 3: what migrations 4 to 6 added, removed.
    client
        .batch_execute(&format!(
            "DROP TABLE {schema}.projection_partitions; DROP TABLE {schema}.projection_versions; \
             ALTER TABLE {schema}.events DROP COLUMN stream_hash; \
             DROP FUNCTION {schema}.append_tagged_events; DROP TABLE {schema}.event_tags; \
             ALTER TABLE {schema}.events DROP COLUMN tags; \
             DELETE FROM {schema}.schema_migrations WHERE version >= 4"
        ))
        .await
        .unwrap();
    // Appended at migration 3: tags in the metadata only (untagged events are fine too).
    store
        .append(
            &StreamId::new("old-1").unwrap(),
            ExpectedVersion::NoStream,
            vec![event("Old", &[])],
        )
        .await
        .unwrap();
    client
        .execute(
            &format!(
                "SELECT {schema}.append_events('old-2', 0::smallint, NULL, ARRAY[$1::uuid], \
                 ARRAY['Old'], ARRAY['{{}}'::jsonb], ARRAY[NULL::bytea], \
                 ARRAY['{{\"$tags\": [\"era:old\", \"x:1\"]}}'::jsonb])"
            ),
            &[&Uuid::new_v4()],
        )
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let version: i32 = client
        .query_one(
            &format!("SELECT max(version) FROM {schema}.schema_migrations"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 6);
    let q = query(&["era:old"], &[]);
    let found = read(&store, &q, None).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].stream.as_str(), "old-2");
    let error = append_if(
        &store,
        &new_stream("new"),
        vec![event("New", &["era:old"])],
        &q,
        None,
    )
    .await
    .unwrap_err();
    assert!(error.is_condition_failed(), "{error}");
    drop_store(store).await;
}
