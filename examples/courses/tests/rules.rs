//! The rules end to end, on every store: each command through its decision handler, its events
//! read back by query; idempotency keys; and both views of one log (decisions' events are in
//! streams, global reads and subscriptions; a tagged event appended to a stream counts in
//! decisions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::pin::pin;

use courses::{CourseEvent, Courses, Refusal, Roster};
use decider_core::dcb::DcbStore;
use decider_core::{
    Codec, EventFilter, ExpectedVersion, JsonCodec, Metadata, StreamId, SubscriptionMessage,
};
use futures::{StreamExt, TryStreamExt};
use support::{
    change, course, define, done, on_every_store, refused, student, subscribe, unsubscribe,
};

on_every_store!(
    a_course_id_is_defined_once_with_at_least_one_seat,
    a_capacity_changes_for_a_defined_course_to_another_number_of_seats,
    a_subscription_needs_the_course_a_free_seat_and_a_student_under_the_limit,
    only_a_subscribed_student_unsubscribes,
    a_command_sent_again_with_its_idempotency_key_is_answered_from_it,
    decisions_are_in_streams_global_reads_and_subscriptions_with_their_tags,
    a_tagged_event_appended_to_a_stream_counts_in_decisions,
);

async fn roster<S: DcbStore + Clone>(courses: &Courses<S>, id: &str) -> Roster {
    courses
        .roster(&course(id))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("course {id} is defined"))
}

fn students(ids: &[&str]) -> BTreeSet<courses::StudentId> {
    ids.iter().map(|id| student(id)).collect()
}

async fn a_course_id_is_defined_once_with_at_least_one_seat<S: DcbStore + Clone>(store: S) {
    let courses = Courses::new(store);
    assert_eq!(
        done(courses.handle(&define("algebra", 30)).await),
        [CourseEvent::CourseDefined {
            course: course("algebra"),
            capacity: 30
        }]
    );
    assert_eq!(
        refused(courses.handle(&define("algebra", 10)).await),
        Refusal::CourseAlreadyDefined {
            course: course("algebra")
        }
    );
    assert_eq!(
        refused(courses.handle(&define("latin", 0)).await),
        Refusal::NoSeats
    );
    done(courses.handle(&define("biology", 1)).await);
    assert_eq!(roster(&courses, "algebra").await.capacity, 30);
    assert_eq!(courses.roster(&course("latin")).await.unwrap(), None);
}

async fn a_capacity_changes_for_a_defined_course_to_another_number_of_seats<S: DcbStore + Clone>(
    store: S,
) {
    let courses = Courses::new(store);
    assert_eq!(
        refused(courses.handle(&change("algebra", 20)).await),
        Refusal::CourseNotDefined {
            course: course("algebra")
        }
    );
    done(courses.handle(&define("algebra", 2)).await);
    done(courses.handle(&subscribe("ada", "algebra")).await);
    done(courses.handle(&subscribe("bob", "algebra")).await);
    assert_eq!(
        refused(courses.handle(&change("algebra", 2)).await),
        Refusal::CapacityUnchanged {
            course: course("algebra"),
            capacity: 2
        }
    );
    assert_eq!(
        refused(courses.handle(&change("algebra", 0)).await),
        Refusal::NoSeats
    );
    // Below the seats taken: both keep theirs, nobody else gets one until a seat is free.
    done(courses.handle(&change("algebra", 1)).await);
    assert_eq!(
        roster(&courses, "algebra").await,
        Roster {
            capacity: 1,
            students: students(&["ada", "bob"])
        }
    );
    done(courses.handle(&unsubscribe("ada", "algebra")).await);
    assert!(matches!(
        refused(courses.handle(&subscribe("carol", "algebra")).await),
        Refusal::CourseFull { capacity: 1, .. }
    ));
    done(courses.handle(&change("algebra", 3)).await);
    done(courses.handle(&subscribe("carol", "algebra")).await);
}

async fn a_subscription_needs_the_course_a_free_seat_and_a_student_under_the_limit<
    S: DcbStore + Clone,
>(
    store: S,
) {
    let courses = Courses::new(store);
    assert_eq!(
        refused(courses.handle(&subscribe("ada", "algebra")).await),
        Refusal::CourseNotDefined {
            course: course("algebra")
        }
    );
    done(courses.handle(&define("algebra", 2)).await);
    assert_eq!(
        done(courses.handle(&subscribe("ada", "algebra")).await),
        [CourseEvent::StudentSubscribedToCourse {
            student: student("ada"),
            course: course("algebra")
        }]
    );
    assert_eq!(
        refused(courses.handle(&subscribe("ada", "algebra")).await),
        Refusal::AlreadySubscribed {
            student: student("ada"),
            course: course("algebra")
        }
    );
    done(courses.handle(&subscribe("bob", "algebra")).await);
    assert_eq!(
        refused(courses.handle(&subscribe("carol", "algebra")).await),
        Refusal::CourseFull {
            course: course("algebra"),
            capacity: 2
        }
    );
    done(courses.handle(&unsubscribe("bob", "algebra")).await);
    done(courses.handle(&subscribe("carol", "algebra")).await);

    // Ada takes algebra and four more; a sixth is refused until she leaves one.
    for id in ["b", "c", "d", "e", "f"] {
        done(courses.handle(&define(id, 30)).await);
    }
    for id in ["b", "c", "d", "e"] {
        done(courses.handle(&subscribe("ada", id)).await);
    }
    assert_eq!(
        refused(courses.handle(&subscribe("ada", "f")).await),
        Refusal::TooManyCourses {
            student: student("ada")
        }
    );
    // Another student is not limited by Ada's courses.
    done(courses.handle(&subscribe("bob", "f")).await);
    done(courses.handle(&unsubscribe("ada", "c")).await);
    done(courses.handle(&subscribe("ada", "f")).await);
    assert_eq!(
        roster(&courses, "algebra").await.students,
        students(&["ada", "carol"])
    );
    assert_eq!(
        roster(&courses, "f").await.students,
        students(&["ada", "bob"])
    );
}

async fn only_a_subscribed_student_unsubscribes<S: DcbStore + Clone>(store: S) {
    let courses = Courses::new(store);
    done(courses.handle(&define("algebra", 30)).await);
    let not_subscribed = Refusal::NotSubscribed {
        student: student("ada"),
        course: course("algebra"),
    };
    assert_eq!(
        refused(courses.handle(&unsubscribe("ada", "algebra")).await),
        not_subscribed
    );
    done(courses.handle(&subscribe("ada", "algebra")).await);
    done(courses.handle(&subscribe("bob", "algebra")).await);
    assert_eq!(
        done(courses.handle(&unsubscribe("ada", "algebra")).await),
        [CourseEvent::StudentUnsubscribedFromCourse {
            student: student("ada"),
            course: course("algebra")
        }]
    );
    assert_eq!(
        refused(courses.handle(&unsubscribe("ada", "algebra")).await),
        not_subscribed
    );
    assert_eq!(
        roster(&courses, "algebra").await.students,
        students(&["bob"])
    );
}

async fn a_command_sent_again_with_its_idempotency_key_is_answered_from_it<S: DcbStore + Clone>(
    store: S,
) {
    let courses = Courses::new(store);
    done(courses.handle(&define("algebra", 30)).await);
    let keyed = || Metadata::default().with_idempotency_key("subscribe-ada-algebra");
    let first = courses
        .handle_with(&subscribe("ada", "algebra"), keyed())
        .await
        .unwrap();
    let again = courses
        .handle_with(&subscribe("ada", "algebra"), keyed())
        .await
        .unwrap();
    assert!(
        !first.replayed && again.replayed,
        "{first:?} then {again:?}"
    );
    assert_eq!(
        (again.events, again.position),
        (first.events, first.position),
        "the first outcome"
    );
    // Without the key it is decided again, and refused.
    assert!(matches!(
        refused(courses.handle(&subscribe("ada", "algebra")).await),
        Refusal::AlreadySubscribed { .. }
    ));
    assert_eq!(roster(&courses, "algebra").await.students.len(), 1);
}

async fn decisions_are_in_streams_global_reads_and_subscriptions_with_their_tags<
    S: DcbStore + Clone,
>(
    store: S,
) {
    let courses = Courses::new(store.clone());
    let subscription = store.subscribe_all(None, &EventFilter::all());
    let outcomes = [
        courses.handle(&define("algebra", 30)).await.unwrap(),
        courses.handle(&subscribe("ada", "algebra")).await.unwrap(),
        courses.handle(&change("algebra", 20)).await.unwrap(),
        courses
            .handle(&unsubscribe("ada", "algebra"))
            .await
            .unwrap(),
    ];
    let log: Vec<_> = store
        .read_all(None, None, &EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    let codec = JsonCodec::<CourseEvent>::default();
    assert_eq!(log.len(), 4, "{log:?}");
    for (recorded, outcome) in log.iter().zip(&outcomes) {
        let event = codec.decode(recorded).unwrap();
        let mut tags = event.tags();
        tags.sort();
        assert_eq!(recorded.metadata.tags, tags, "tags in the metadata");
        assert_eq!(outcome.events, [event]);
        assert_eq!(Some(recorded.position), outcome.position);
        // Each decision wrote a stream of its own, of its model's category.
        let category = recorded.stream.category();
        assert!(
            ["course", "subscription", "capacity", "unsubscription"].contains(&category),
            "{}",
            recorded.stream
        );
        let in_stream: Vec<_> = store
            .read_whole_stream(&recorded.stream)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(in_stream.len(), 1);
        assert_eq!(in_stream[0].id, recorded.id);
    }
    let mut subscription = pin!(subscription);
    let mut seen = Vec::new();
    while seen.len() < log.len() {
        match subscription.next().await.unwrap().unwrap() {
            SubscriptionMessage::Event(event) => seen.push(event.id),
            SubscriptionMessage::CaughtUp => {}
        }
    }
    let ids: Vec<_> = log.iter().map(|event| event.id).collect();
    assert_eq!(
        seen, ids,
        "a subscription sees every decision's event, in order"
    );
}

async fn a_tagged_event_appended_to_a_stream_counts_in_decisions<S: DcbStore + Clone>(store: S) {
    let courses = Courses::new(store.clone());
    done(courses.handle(&define("seminar", 1)).await);
    // A subscription imported from an older system, appended to a stream of its own, tagged as
    // the decision model would tag it.
    let imported = CourseEvent::StudentSubscribedToCourse {
        student: student("ada"),
        course: course("seminar"),
    };
    let event = JsonCodec::<CourseEvent>::default()
        .encode(&imported)
        .unwrap()
        .into_event_data(
            uuid::Uuid::new_v4(),
            Metadata::default().with_tags(imported.tags()),
        );
    store
        .append(
            &StreamId::new("import-1").unwrap(),
            ExpectedVersion::NoStream,
            vec![event],
        )
        .await
        .unwrap();
    assert_eq!(
        refused(courses.handle(&subscribe("bob", "seminar")).await),
        Refusal::CourseFull {
            course: course("seminar"),
            capacity: 1
        }
    );
    assert!(matches!(
        refused(courses.handle(&subscribe("ada", "seminar")).await),
        Refusal::AlreadySubscribed { .. }
    ));
    done(courses.handle(&unsubscribe("ada", "seminar")).await);
    done(courses.handle(&subscribe("bob", "seminar")).await);
}
