//! What the decision models' specifications share: events built from short ids, and the check
//! that a model's query selects exactly the events its decision depends on.
#![allow(clippy::unwrap_used)]

use decider_core::dcb::DecisionModel;
use decider_core::fold;

use crate::event::{CourseEvent, Refusal};
use crate::id::{CourseId, StudentId};

/// The course of [`every_event_about`]'s events that is not the command's.
pub(crate) const OTHER_COURSE: &str = "other-course";
/// The student of [`every_event_about`]'s events who is not the command's.
pub(crate) const OTHER_STUDENT: &str = "other-student";

pub(crate) fn course(id: &str) -> CourseId {
    CourseId::new(id).unwrap()
}

pub(crate) fn student(id: &str) -> StudentId {
    StudentId::new(id).unwrap()
}

pub(crate) fn defined(id: &str, capacity: u32) -> CourseEvent {
    CourseEvent::CourseDefined {
        course: course(id),
        capacity,
    }
}

pub(crate) fn capacity_changed(id: &str, capacity: u32) -> CourseEvent {
    CourseEvent::CourseCapacityChanged {
        course: course(id),
        capacity,
    }
}

pub(crate) fn subscribed(who: &str, to: &str) -> CourseEvent {
    CourseEvent::StudentSubscribedToCourse {
        student: student(who),
        course: course(to),
    }
}

pub(crate) fn unsubscribed(who: &str, from: &str) -> CourseEvent {
    CourseEvent::StudentUnsubscribedFromCourse {
        student: student(who),
        course: course(from),
    }
}

/// Every kind of event, each about the course `of_course` and about [`OTHER_COURSE`], and each
/// subscription and unsubscription for every pair of `of_student` or [`OTHER_STUDENT`] and those
/// two courses: 12 events. Courses are defined with 1 seat and changed to 2.
pub(crate) fn every_event_about(of_course: &str, of_student: &str) -> Vec<CourseEvent> {
    let mut events = Vec::new();
    for c in [of_course, OTHER_COURSE] {
        events.push(defined(c, 1));
        events.push(capacity_changed(c, 2));
        for s in [of_student, OTHER_STUDENT] {
            events.push(subscribed(s, c));
            events.push(unsubscribed(s, c));
        }
    }
    events
}

/// Checks that `model`'s query for `command` selects, of `catalogue`, exactly `selected`, and
/// that this is exactly what the decision depends on:
///
/// - the query matches each event of `selected` (by type and the model's tags) and no other of
///   `catalogue`;
/// - an event the query leaves out, added before or after any of `histories`, never changes
///   the decision: reading less than the whole log is safe;
/// - an event the query selects changes the decision after at least one of `histories`: the
///   query reads nothing the decision could do without;
/// - the events the decision writes match its own query, so that two decisions racing to write
///   them conflict.
#[track_caller]
pub(crate) fn assert_query_is_exact<M>(
    model: &M,
    command: &M::Command,
    catalogue: &[CourseEvent],
    selected: &[CourseEvent],
    histories: &[Vec<CourseEvent>],
) where
    M: DecisionModel<Event = CourseEvent, Error = Refusal>,
{
    let query = model.query(command);
    let decide = |history: &[CourseEvent]| model.decide(command, &fold(model, history));
    for event in selected {
        assert!(
            catalogue.contains(event),
            "{event:?} is not in the catalogue"
        );
    }
    for event in catalogue {
        let matched = query.matches(event.event_type(), &model.tags(event));
        let expected = selected.contains(event);
        assert_eq!(
            matched,
            expected,
            "the query {} {event:?}",
            if matched { "selects" } else { "leaves out" }
        );
        if matched {
            assert!(
                histories.iter().any(|history| {
                    let with = [history.as_slice(), std::slice::from_ref(event)].concat();
                    decide(&with) != decide(history)
                }),
                "the query selects {event:?}, but it changes the decision after none of the \
                 histories: either the query reads too much or a history is missing"
            );
        } else {
            for history in histories {
                let before = [std::slice::from_ref(event), history.as_slice()].concat();
                let after = [history.as_slice(), std::slice::from_ref(event)].concat();
                assert_eq!(
                    (decide(&before), decide(&after)),
                    (decide(history), decide(history)),
                    "the query leaves out {event:?}, which changes the decision after {history:?}"
                );
            }
        }
    }
    for history in histories {
        for written in decide(history).unwrap_or_default() {
            assert!(
                query.matches(written.event_type(), &model.tags(&written)),
                "the decision writes {written:?}, which its own query does not select: two \
                 such decisions could both commit"
            );
        }
    }
}

/// Checks that `model` tags every kind of event with its course, and subscriptions and
/// unsubscriptions with their student too: what the queries find them by.
#[track_caller]
pub(crate) fn assert_tags_name_the_course_and_the_student<M>(model: &M)
where
    M: DecisionModel<Event = CourseEvent>,
{
    let cases = [
        (defined("algebra", 30), &["course:algebra"][..]),
        (capacity_changed("algebra", 20), &["course:algebra"]),
        (
            subscribed("ada", "algebra"),
            &["course:algebra", "student:ada"],
        ),
        (
            unsubscribed("ada", "algebra"),
            &["course:algebra", "student:ada"],
        ),
    ];
    for (event, expected) in cases {
        let mut tags: Vec<String> = model.tags(&event).iter().map(ToString::to_string).collect();
        tags.sort();
        assert_eq!(tags, expected, "the tags of {event:?}");
    }
}
