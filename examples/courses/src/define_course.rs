//! Defining a course: course ids are unique, and a course has at least one seat.
//!
//! The decision reads the `CourseDefined` events tagged with the course: at most one.

use std::collections::BTreeSet;

use decider_core::dcb::{DecisionModel, Query, QueryItem, Tag};
use decider_core::{Category, Decider};

use crate::event::{CourseEvent, Refusal};
use crate::id::CourseId;

/// Define `course` with `capacity` seats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefineCourse {
    /// The new course's id, unique.
    pub course: CourseId,
    /// Its seats, at least one.
    pub capacity: u32,
}

/// The decision model of [`DefineCourse`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CourseDefinition;

impl Decider for CourseDefinition {
    type Command = DefineCourse;
    type Event = CourseEvent;
    /// The courses the events read define (the handler reads only the command's course).
    type State = BTreeSet<CourseId>;
    type Error = Refusal;

    fn initial_state(&self) -> BTreeSet<CourseId> {
        BTreeSet::new()
    }

    fn decide(
        &self,
        DefineCourse { course, capacity }: &DefineCourse,
        defined: &BTreeSet<CourseId>,
    ) -> Result<Vec<CourseEvent>, Refusal> {
        if defined.contains(course) {
            return Err(Refusal::CourseAlreadyDefined {
                course: course.clone(),
            });
        }
        if *capacity == 0 {
            return Err(Refusal::NoSeats);
        }
        Ok(vec![CourseEvent::CourseDefined {
            course: course.clone(),
            capacity: *capacity,
        }])
    }

    fn evolve(&self, mut defined: BTreeSet<CourseId>, event: &CourseEvent) -> BTreeSet<CourseId> {
        if let CourseEvent::CourseDefined { course, .. } = event {
            defined.insert(course.clone());
        }
        defined
    }
}

impl DecisionModel for CourseDefinition {
    fn query(&self, DefineCourse { course, .. }: &DefineCourse) -> Query {
        Query::from(
            QueryItem::tagged([course.tag().clone()]).with_types([CourseEvent::COURSE_DEFINED]),
        )
    }

    fn tags(&self, event: &CourseEvent) -> Vec<Tag> {
        event.tags()
    }

    fn category(&self) -> Category {
        Category::new("course")
    }
}

#[cfg(test)]
mod specs {
    use decider_core::testing::decision_spec;

    use super::*;
    use crate::spec_support::{
        assert_query_is_exact, assert_tags_name_the_course_and_the_student, course, defined,
        every_event_about,
    };

    fn define(id: &str, capacity: u32) -> DefineCourse {
        DefineCourse {
            course: course(id),
            capacity,
        }
    }

    #[test]
    fn defines_a_course_once() {
        decision_spec(CourseDefinition)
            .when(define("algebra", 30))
            .then([defined("algebra", 30)]);
        decision_spec(CourseDefinition)
            .given([defined("algebra", 30)])
            .when(define("algebra", 10))
            .then_error(Refusal::CourseAlreadyDefined {
                course: course("algebra"),
            });
    }

    #[test]
    fn another_course_does_not_take_the_id() {
        decision_spec(CourseDefinition)
            .given([defined("biology", 30)])
            .when(define("algebra", 30))
            .then([defined("algebra", 30)]);
    }

    #[test]
    fn a_course_has_at_least_one_seat() {
        decision_spec(CourseDefinition)
            .when(define("algebra", 0))
            .then_error(Refusal::NoSeats);
    }

    #[test]
    fn the_query_selects_exactly_the_definition_of_the_course() {
        assert_query_is_exact(
            &CourseDefinition,
            &define("algebra", 30),
            &every_event_about("algebra", "ada"),
            &[defined("algebra", 1)],
            &[vec![], vec![defined("algebra", 1)]],
        );
    }

    #[test]
    fn tags_name_the_course_and_the_student() {
        assert_tags_name_the_course_and_the_student(&CourseDefinition);
    }
}
