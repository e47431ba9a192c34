//! Unsubscribing a student from a course: only a student subscribed to it can give their seat
//! back.
//!
//! The decision reads the subscriptions and unsubscriptions tagged with both the student and the
//! course: those of this one seat, and nothing else.

use std::collections::BTreeSet;

use decider_core::dcb::{DecisionModel, Query, QueryItem, Tag};
use decider_core::{Category, Decider};

use crate::event::{CourseEvent, Refusal};
use crate::id::{CourseId, StudentId};

/// Give `student`'s seat in `course` back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeStudent {
    /// The student.
    pub student: StudentId,
    /// The course.
    pub course: CourseId,
}

/// The decision model of [`UnsubscribeStudent`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StudentUnsubscription;

impl Decider for StudentUnsubscription {
    type Command = UnsubscribeStudent;
    type Event = CourseEvent;
    /// The seats held, as (student, course), of the events read.
    type State = BTreeSet<(StudentId, CourseId)>;
    type Error = Refusal;

    fn initial_state(&self) -> BTreeSet<(StudentId, CourseId)> {
        BTreeSet::new()
    }

    fn decide(
        &self,
        UnsubscribeStudent { student, course }: &UnsubscribeStudent,
        held: &BTreeSet<(StudentId, CourseId)>,
    ) -> Result<Vec<CourseEvent>, Refusal> {
        let (student, course) = (student.clone(), course.clone());
        if !held.contains(&(student.clone(), course.clone())) {
            return Err(Refusal::NotSubscribed { student, course });
        }
        Ok(vec![CourseEvent::StudentUnsubscribedFromCourse {
            student,
            course,
        }])
    }

    fn evolve(
        &self,
        mut held: BTreeSet<(StudentId, CourseId)>,
        event: &CourseEvent,
    ) -> BTreeSet<(StudentId, CourseId)> {
        match event {
            CourseEvent::StudentSubscribedToCourse { student, course } => {
                held.insert((student.clone(), course.clone()));
            }
            CourseEvent::StudentUnsubscribedFromCourse { student, course } => {
                held.remove(&(student.clone(), course.clone()));
            }
            CourseEvent::CourseDefined { .. } | CourseEvent::CourseCapacityChanged { .. } => {}
        }
        held
    }
}

impl DecisionModel for StudentUnsubscription {
    fn query(&self, UnsubscribeStudent { student, course }: &UnsubscribeStudent) -> Query {
        Query::from(
            QueryItem::tagged([student.tag().clone(), course.tag().clone()]).with_types([
                CourseEvent::STUDENT_SUBSCRIBED,
                CourseEvent::STUDENT_UNSUBSCRIBED,
            ]),
        )
    }

    fn tags(&self, event: &CourseEvent) -> Vec<Tag> {
        event.tags()
    }

    fn category(&self) -> Category {
        Category::new("unsubscription")
    }
}

#[cfg(test)]
mod specs {
    use decider_core::testing::decision_spec;

    use super::*;
    use crate::spec_support::{
        assert_query_is_exact, assert_tags_name_the_course_and_the_student, course, defined,
        every_event_about, student, subscribed, unsubscribed,
    };

    fn unsubscribe(who: &str, from: &str) -> UnsubscribeStudent {
        UnsubscribeStudent {
            student: student(who),
            course: course(from),
        }
    }

    #[test]
    fn a_subscribed_student_gives_the_seat_back() {
        decision_spec(StudentUnsubscription)
            .given([defined("algebra", 30), subscribed("ada", "algebra")])
            .when(unsubscribe("ada", "algebra"))
            .then([unsubscribed("ada", "algebra")]);
    }

    #[test]
    fn refuses_a_student_who_holds_no_seat() {
        let not_subscribed = || Refusal::NotSubscribed {
            student: student("ada"),
            course: course("algebra"),
        };
        decision_spec(StudentUnsubscription)
            .given([defined("algebra", 30), subscribed("bob", "algebra")])
            .when(unsubscribe("ada", "algebra"))
            .then_error(not_subscribed());
        decision_spec(StudentUnsubscription)
            .given([subscribed("ada", "algebra"), unsubscribed("ada", "algebra")])
            .when(unsubscribe("ada", "algebra"))
            .then_error(not_subscribed());
    }

    #[test]
    fn the_query_selects_exactly_the_seat_of_the_student_in_the_course() {
        assert_query_is_exact(
            &StudentUnsubscription,
            &unsubscribe("ada", "algebra"),
            &every_event_about("algebra", "ada"),
            &[subscribed("ada", "algebra"), unsubscribed("ada", "algebra")],
            &[vec![], vec![subscribed("ada", "algebra")]],
        );
    }

    #[test]
    fn tags_name_the_course_and_the_student() {
        assert_tags_name_the_course_and_the_student(&StudentUnsubscription);
    }
}
