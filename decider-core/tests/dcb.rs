//! The decision handler on the memory store: conflicts retried into the right answer, a typed
//! conflict when out of retries, idempotency keys, lost replies, and the log it leaves.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use decider_core::dcb::{DcbStore, DecisionHandler, DecisionModel, Query, QueryItem, Tag};
use decider_core::testing::decision_spec;
use decider_core::{
    Category, CommandError, Decider, EventFilter, EventStore, Metadata, Position, RetryPolicy,
    StoreError,
};
use decider_store_memory::MemoryStore;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    Defined { course: String, capacity: u32 },
    Subscribed { course: String, student: String },
}

#[derive(Debug, PartialEq)]
enum Refused {
    NoSuchCourse,
    Full,
    AlreadySubscribed,
}

/// Subscribing a student to a course: the course's definition and subscriptions decide.
struct Subscribe;

struct Command {
    course: String,
    student: String,
}

fn course_tag(course: &str) -> Tag {
    Tag::pair("course", course).unwrap()
}

fn student_tag(student: &str) -> Tag {
    Tag::pair("student", student).unwrap()
}

#[derive(Default)]
struct State {
    capacity: Option<u32>,
    students: Vec<String>,
}

impl Decider for Subscribe {
    type Command = Command;
    type Event = Event;
    type State = State;
    type Error = Refused;

    fn initial_state(&self) -> State {
        State::default()
    }

    fn decide(&self, command: &Command, state: &State) -> Result<Vec<Event>, Refused> {
        let capacity = state.capacity.ok_or(Refused::NoSuchCourse)?;
        if state.students.contains(&command.student) {
            return Err(Refused::AlreadySubscribed);
        }
        if state.students.len() as u32 >= capacity {
            return Err(Refused::Full);
        }
        Ok(vec![Event::Subscribed {
            course: command.course.clone(),
            student: command.student.clone(),
        }])
    }

    fn evolve(&self, mut state: State, event: &Event) -> State {
        match event {
            Event::Defined { capacity, .. } => state.capacity = Some(*capacity),
            Event::Subscribed { student, .. } => state.students.push(student.clone()),
        }
        state
    }
}

impl DecisionModel for Subscribe {
    fn query(&self, command: &Command) -> Query {
        Query::from(QueryItem::tagged([course_tag(&command.course)]))
    }

    fn tags(&self, event: &Event) -> Vec<Tag> {
        match event {
            Event::Defined { course, .. } => vec![course_tag(course)],
            Event::Subscribed { course, student } => vec![course_tag(course), student_tag(student)],
        }
    }

    fn category(&self) -> Category {
        Category::new("subscription")
    }
}

fn subscribe(course: &str, student: &str) -> Command {
    Command {
        course: course.to_owned(),
        student: student.to_owned(),
    }
}

async fn define(store: &MemoryStore, course: &str, capacity: u32) {
    let event = Event::Defined {
        course: course.to_owned(),
        capacity,
    };
    let data = decider_core::EventData::json(
        "Defined",
        serde_json::to_vec(&event_payload(&event)).unwrap(),
    )
    .with_tags(Subscribe.tags(&event));
    let stream = decider_core::StreamId::new(format!("course-{course}")).unwrap();
    store
        .append(&stream, decider_core::ExpectedVersion::NoStream, vec![data])
        .await
        .unwrap();
}

/// The payload the JSON codec writes for `event` (externally tagged: the variant's fields).
fn event_payload(event: &Event) -> serde_json::Value {
    let value = serde_json::to_value(event).unwrap();
    value.as_object().unwrap().values().next().unwrap().clone()
}

#[test]
fn the_spec_decides_on_what_the_query_matches() {
    let defined = |course: &str, capacity| Event::Defined {
        course: course.to_owned(),
        capacity,
    };
    let subscribed = |course: &str, student: &str| Event::Subscribed {
        course: course.to_owned(),
        student: student.to_owned(),
    };
    // The other course's subscriptions are not in the query: c1 still has its seat.
    decision_spec(Subscribe)
        .given([defined("c1", 1), defined("c2", 1), subscribed("c2", "s1")])
        .when(subscribe("c1", "s1"))
        .then([subscribed("c1", "s1")]);
    decision_spec(Subscribe)
        .given([defined("c1", 1), subscribed("c1", "s2")])
        .when(subscribe("c1", "s1"))
        .then_error(Refused::Full);
    decision_spec(Subscribe)
        .given([defined("c2", 1)])
        .when(subscribe("c1", "s1"))
        .then_error(Refused::NoSuchCourse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_subscriptions_fill_a_course_exactly_and_the_others_are_told_it_is_full() {
    let store = MemoryStore::new();
    define(&store, "c1", 3).await;
    let handler = Arc::new(
        DecisionHandler::new(Subscribe, store.clone()).with_retry_policy(RetryPolicy {
            max_retries: 32,
            ..RetryPolicy::default()
        }),
    );
    let racers: Vec<_> = (0..16)
        .map(|n| {
            let handler = handler.clone();
            tokio::spawn(async move { handler.handle(&subscribe("c1", &format!("s{n}"))).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.unwrap());
    }
    let subscribed = outcomes.iter().filter(|o| o.is_ok()).count();
    let full = outcomes
        .iter()
        .filter(|o| matches!(o, Err(CommandError::Rejected(Refused::Full))))
        .count();
    assert_eq!((subscribed, full), (3, 13), "{outcomes:?}");

    // One log: the subscriptions are in streams of their category, tagged.
    let written: Vec<_> = store
        .read_all(
            None,
            None,
            &EventFilter::all().with_categories(["subscription"]),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(written.len(), 3);
    assert!(
        written
            .iter()
            .all(|e| e.metadata.tags.contains(&course_tag("c1")))
    );
}

#[tokio::test]
async fn a_conflict_out_of_retries_is_typed_and_writes_nothing() {
    let store = MemoryStore::new();
    define(&store, "c1", 3).await;
    let handler = DecisionHandler::new(Subscribe, store.clone()).with_retry_policy(RetryPolicy {
        max_retries: 1,
        ..RetryPolicy::default()
    });
    let conflict = StoreError::ConditionFailed {
        after: None,
        matched: Position::new(1, 1),
        stream: decider_core::StreamId::new("course-c1").unwrap(),
        event_type: "Defined".to_owned(),
    };
    store.fail_append(1, conflict.clone());
    store.fail_append(2, conflict);
    let error = handler.handle(&subscribe("c1", "s1")).await.unwrap_err();
    assert!(error.is_conflict() && error.is_retryable(), "{error:?}");
    assert_eq!(store.len(), 1, "nothing written");
    // The next attempt, without injected conflicts, succeeds.
    handler.handle(&subscribe("c1", "s1")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_a_repeat_with_the_original_even_when_racing() {
    let store = MemoryStore::new();
    define(&store, "c1", 5).await;
    let handler = Arc::new(DecisionHandler::new(Subscribe, store.clone()));
    let keyed = Metadata::default().with_idempotency_key("subscribe-s1-c1");
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (handler, keyed) = (handler.clone(), keyed.clone());
            tokio::spawn(async move { handler.handle_with(&subscribe("c1", "s1"), keyed).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.unwrap().unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| !o.replayed).count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| o.events == outcomes[0].events));
    assert_eq!(store.len(), 2, "one subscription written");
    // Without the key, the same command is decided again: refused, it is there.
    let again = handler.handle(&subscribe("c1", "s1")).await;
    assert!(matches!(
        again,
        Err(CommandError::Rejected(Refused::AlreadySubscribed))
    ));
}

#[tokio::test]
async fn a_keyed_decision_whose_reply_was_lost_is_retried_into_its_original_outcome() {
    let store = MemoryStore::new();
    define(&store, "c1", 5).await;
    let handler = DecisionHandler::new(Subscribe, store.clone());
    store.commit_then_fail_append(1);
    let keyed = Metadata::default().with_idempotency_key("k");
    let outcome = handler
        .handle_with(&subscribe("c1", "s1"), keyed)
        .await
        .unwrap();
    assert!(outcome.replayed, "found as the key's original: {outcome:?}");
    assert_eq!(store.len(), 2, "written once");
    let tags: Vec<_> = store
        .read_query(
            &Query::from(QueryItem::tagged([student_tag("s1")])),
            None,
            None,
        )
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(tags.len(), 1);

    // Unkeyed, a lost reply is not retried: the append may have committed.
    store.commit_then_fail_append(1);
    let lost = handler.handle(&subscribe("c1", "s2")).await;
    assert!(
        matches!(lost, Err(CommandError::Store(ref e)) if e.is_retryable()),
        "{lost:?}"
    );
}
