//! Changing a course's capacity: the course exists, and the new capacity is at least one seat
//! and differs from the current one. As in the DCB specification, it may go below the seats
//! taken: those subscriptions stay, and new ones wait until seats are given back.
//!
//! The decision reads the course's `CourseDefined` and `CourseCapacityChanged` events; its
//! subscriptions do not matter to it.

use std::collections::BTreeMap;

use decider_core::dcb::{DecisionModel, Query, QueryItem, Tag};
use decider_core::{Category, Decider};

use crate::event::{CourseEvent, Refusal};
use crate::id::CourseId;

/// Give `course` `capacity` seats from now on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeCourseCapacity {
    /// The course, defined.
    pub course: CourseId,
    /// Its new number of seats: at least one, and not the current one.
    pub capacity: u32,
}

/// The decision model of [`ChangeCourseCapacity`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CapacityChange;

impl Decider for CapacityChange {
    type Command = ChangeCourseCapacity;
    type Event = CourseEvent;
    /// The capacity of each course the events read define.
    type State = BTreeMap<CourseId, u32>;
    type Error = Refusal;

    fn initial_state(&self) -> BTreeMap<CourseId, u32> {
        BTreeMap::new()
    }

    fn decide(
        &self,
        ChangeCourseCapacity { course, capacity }: &ChangeCourseCapacity,
        capacities: &BTreeMap<CourseId, u32>,
    ) -> Result<Vec<CourseEvent>, Refusal> {
        let Some(&current) = capacities.get(course) else {
            return Err(Refusal::CourseNotDefined {
                course: course.clone(),
            });
        };
        if *capacity == 0 {
            return Err(Refusal::NoSeats);
        }
        if *capacity == current {
            return Err(Refusal::CapacityUnchanged {
                course: course.clone(),
                capacity: current,
            });
        }
        Ok(vec![CourseEvent::CourseCapacityChanged {
            course: course.clone(),
            capacity: *capacity,
        }])
    }

    fn evolve(
        &self,
        mut capacities: BTreeMap<CourseId, u32>,
        event: &CourseEvent,
    ) -> BTreeMap<CourseId, u32> {
        match event {
            CourseEvent::CourseDefined { course, capacity }
            | CourseEvent::CourseCapacityChanged { course, capacity } => {
                capacities.insert(course.clone(), *capacity);
            }
            CourseEvent::StudentSubscribedToCourse { .. }
            | CourseEvent::StudentUnsubscribedFromCourse { .. } => {}
        }
        capacities
    }
}

impl DecisionModel for CapacityChange {
    fn query(&self, ChangeCourseCapacity { course, .. }: &ChangeCourseCapacity) -> Query {
        Query::from(QueryItem::tagged([course.tag().clone()]).with_types([
            CourseEvent::COURSE_DEFINED,
            CourseEvent::COURSE_CAPACITY_CHANGED,
        ]))
    }

    fn tags(&self, event: &CourseEvent) -> Vec<Tag> {
        event.tags()
    }

    fn category(&self) -> Category {
        Category::new("capacity")
    }
}

#[cfg(test)]
mod specs {
    use decider_core::testing::decision_spec;

    use super::*;
    use crate::spec_support::{
        assert_query_is_exact, assert_tags_name_the_course_and_the_student, capacity_changed,
        course, defined, every_event_about, subscribed,
    };

    fn change(id: &str, capacity: u32) -> ChangeCourseCapacity {
        ChangeCourseCapacity {
            course: course(id),
            capacity,
        }
    }

    #[test]
    fn changes_the_capacity_of_a_defined_course() {
        decision_spec(CapacityChange)
            .given([defined("algebra", 30)])
            .when(change("algebra", 20))
            .then([capacity_changed("algebra", 20)]);
        decision_spec(CapacityChange)
            .given([defined("algebra", 30), capacity_changed("algebra", 20)])
            .when(change("algebra", 30))
            .then([capacity_changed("algebra", 30)]);
    }

    #[test]
    fn refuses_a_course_nobody_defined() {
        decision_spec(CapacityChange)
            .given([defined("biology", 30)])
            .when(change("algebra", 20))
            .then_error(Refusal::CourseNotDefined {
                course: course("algebra"),
            });
    }

    #[test]
    fn refuses_zero_seats_and_the_current_capacity() {
        decision_spec(CapacityChange)
            .given([defined("algebra", 30)])
            .when(change("algebra", 0))
            .then_error(Refusal::NoSeats);
        decision_spec(CapacityChange)
            .given([defined("algebra", 30), capacity_changed("algebra", 20)])
            .when(change("algebra", 20))
            .then_error(Refusal::CapacityUnchanged {
                course: course("algebra"),
                capacity: 20,
            });
    }

    #[test]
    fn may_go_below_the_seats_taken() {
        decision_spec(CapacityChange)
            .given([
                defined("algebra", 2),
                subscribed("ada", "algebra"),
                subscribed("bob", "algebra"),
            ])
            .when(change("algebra", 1))
            .then([capacity_changed("algebra", 1)]);
    }

    #[test]
    fn the_query_selects_exactly_the_definition_and_capacity_changes_of_the_course() {
        assert_query_is_exact(
            &CapacityChange,
            &change("algebra", 2),
            &every_event_about("algebra", "ada"),
            &[defined("algebra", 1), capacity_changed("algebra", 2)],
            &[vec![], vec![defined("algebra", 1)]],
        );
    }

    #[test]
    fn tags_name_the_course_and_the_student() {
        assert_tags_name_the_course_and_the_student(&CapacityChange);
    }
}
