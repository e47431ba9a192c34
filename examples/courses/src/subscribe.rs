//! Subscribing a student to a course: the course exists, the student is not subscribed to it
//! yet, the course has a seat left, and the student takes fewer than
//! [`MAX_COURSES_PER_STUDENT`] courses.
//!
//! Two entities' rules govern one event, which is what a stream cannot do and a query can: the
//! decision reads the course's definition, capacity changes and subscriptions (any student's),
//! and the student's subscriptions (to any course). Two subscriptions to different courses by
//! different students read disjoint events and never wait for each other.

use std::collections::{BTreeMap, BTreeSet};

use decider_core::dcb::{DecisionModel, Query, QueryItem, Tag};
use decider_core::{Category, Decider};

use crate::event::{CourseEvent, MAX_COURSES_PER_STUDENT, Refusal};
use crate::id::{CourseId, StudentId};

/// Give `student` a seat in `course`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeStudent {
    /// The student.
    pub student: StudentId,
    /// The course.
    pub course: CourseId,
}

/// The decision model of [`SubscribeStudent`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StudentSubscription;

/// What the events a subscription reads say: the courses' capacities and who holds which seat.
///
/// The handler reads only the command's course and student, so the entries of that course and
/// that student are complete; any other entry holds what those events say about it, and the
/// decision ignores it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seats {
    /// The capacity of each course defined.
    pub capacities: BTreeMap<CourseId, u32>,
    /// The seats held, as (student, course).
    pub held: BTreeSet<(StudentId, CourseId)>,
}

impl Seats {
    /// How many seats of `course` are held.
    pub fn taken(&self, course: &CourseId) -> usize {
        self.held.iter().filter(|(_, c)| c == course).count()
    }

    /// How many courses `student` holds a seat in.
    pub fn courses_of(&self, student: &StudentId) -> usize {
        self.held.iter().filter(|(s, _)| s == student).count()
    }
}

impl Decider for StudentSubscription {
    type Command = SubscribeStudent;
    type Event = CourseEvent;
    type State = Seats;
    type Error = Refusal;

    fn initial_state(&self) -> Seats {
        Seats::default()
    }

    fn decide(
        &self,
        SubscribeStudent { student, course }: &SubscribeStudent,
        seats: &Seats,
    ) -> Result<Vec<CourseEvent>, Refusal> {
        let (student, course) = (student.clone(), course.clone());
        let Some(&capacity) = seats.capacities.get(&course) else {
            return Err(Refusal::CourseNotDefined { course });
        };
        if seats.held.contains(&(student.clone(), course.clone())) {
            return Err(Refusal::AlreadySubscribed { student, course });
        }
        // `>=`, not `==`: a capacity lowered below the seats taken leaves the course over full.
        if seats.taken(&course) >= capacity as usize {
            return Err(Refusal::CourseFull { course, capacity });
        }
        if seats.courses_of(&student) >= MAX_COURSES_PER_STUDENT {
            return Err(Refusal::TooManyCourses { student });
        }
        Ok(vec![CourseEvent::StudentSubscribedToCourse {
            student,
            course,
        }])
    }

    fn evolve(&self, mut seats: Seats, event: &CourseEvent) -> Seats {
        match event {
            CourseEvent::CourseDefined { course, capacity }
            | CourseEvent::CourseCapacityChanged { course, capacity } => {
                seats.capacities.insert(course.clone(), *capacity);
            }
            CourseEvent::StudentSubscribedToCourse { student, course } => {
                seats.held.insert((student.clone(), course.clone()));
            }
            CourseEvent::StudentUnsubscribedFromCourse { student, course } => {
                seats.held.remove(&(student.clone(), course.clone()));
            }
        }
        seats
    }
}

impl DecisionModel for StudentSubscription {
    fn query(&self, SubscribeStudent { student, course }: &SubscribeStudent) -> Query {
        let seat = [
            CourseEvent::STUDENT_SUBSCRIBED,
            CourseEvent::STUDENT_UNSUBSCRIBED,
        ];
        let the_course = QueryItem::tagged([course.tag().clone()])
            .with_types([
                CourseEvent::COURSE_DEFINED,
                CourseEvent::COURSE_CAPACITY_CHANGED,
            ])
            .with_types(seat);
        let the_student = QueryItem::tagged([student.tag().clone()]).with_types(seat);
        Query::from(the_course).or(the_student)
    }

    fn tags(&self, event: &CourseEvent) -> Vec<Tag> {
        event.tags()
    }

    fn category(&self) -> Category {
        Category::new("subscription")
    }
}

#[cfg(test)]
mod specs {
    use decider_core::testing::decision_spec;

    use super::*;
    use crate::spec_support::{
        assert_query_is_exact, assert_tags_name_the_course_and_the_student, capacity_changed,
        course, defined, every_event_about, student, subscribed, unsubscribed,
    };

    fn subscribe(who: &str, to: &str) -> SubscribeStudent {
        SubscribeStudent {
            student: student(who),
            course: course(to),
        }
    }

    #[test]
    fn subscribes_a_student_to_a_course_with_a_seat_left() {
        decision_spec(StudentSubscription)
            .given([defined("algebra", 2), subscribed("bob", "algebra")])
            .when(subscribe("ada", "algebra"))
            .then([subscribed("ada", "algebra")]);
    }

    #[test]
    fn refuses_a_course_nobody_defined() {
        decision_spec(StudentSubscription)
            .when(subscribe("ada", "algebra"))
            .then_error(Refusal::CourseNotDefined {
                course: course("algebra"),
            });
    }

    #[test]
    fn refuses_a_student_subscribed_already() {
        decision_spec(StudentSubscription)
            .given([defined("algebra", 30), subscribed("ada", "algebra")])
            .when(subscribe("ada", "algebra"))
            .then_error(Refusal::AlreadySubscribed {
                student: student("ada"),
                course: course("algebra"),
            });
    }

    #[test]
    fn a_student_who_unsubscribed_may_subscribe_again() {
        decision_spec(StudentSubscription)
            .given([
                defined("algebra", 30),
                subscribed("ada", "algebra"),
                unsubscribed("ada", "algebra"),
            ])
            .when(subscribe("ada", "algebra"))
            .then([subscribed("ada", "algebra")]);
    }

    #[test]
    fn refuses_a_full_course() {
        decision_spec(StudentSubscription)
            .given([defined("algebra", 1), subscribed("bob", "algebra")])
            .when(subscribe("ada", "algebra"))
            .then_error(Refusal::CourseFull {
                course: course("algebra"),
                capacity: 1,
            });
    }

    #[test]
    fn a_seat_given_back_or_added_can_be_taken() {
        decision_spec(StudentSubscription)
            .given([
                defined("algebra", 1),
                subscribed("bob", "algebra"),
                unsubscribed("bob", "algebra"),
            ])
            .when(subscribe("ada", "algebra"))
            .then([subscribed("ada", "algebra")]);
        decision_spec(StudentSubscription)
            .given([
                defined("algebra", 1),
                subscribed("bob", "algebra"),
                capacity_changed("algebra", 2),
            ])
            .when(subscribe("ada", "algebra"))
            .then([subscribed("ada", "algebra")]);
    }

    #[test]
    fn a_capacity_lowered_below_the_seats_taken_keeps_the_course_full() {
        decision_spec(StudentSubscription)
            .given([
                defined("algebra", 3),
                subscribed("bob", "algebra"),
                subscribed("carol", "algebra"),
                capacity_changed("algebra", 1),
                unsubscribed("bob", "algebra"),
            ])
            .when(subscribe("ada", "algebra"))
            .then_error(Refusal::CourseFull {
                course: course("algebra"),
                capacity: 1,
            });
    }

    #[test]
    fn other_students_seats_in_other_courses_do_not_count() {
        // A log of a busy term: the query leaves bob's five courses out of ada's decision.
        decision_spec(StudentSubscription)
            .given([defined("algebra", 1), defined("biology", 1)])
            .given(["a", "b", "c", "d", "biology"].map(|c| subscribed("bob", c)))
            .when(subscribe("ada", "algebra"))
            .then([subscribed("ada", "algebra")]);
    }

    /// Ada's subscriptions to `courses`.
    fn ada_takes(courses: &[&str]) -> Vec<CourseEvent> {
        courses.iter().map(|c| subscribed("ada", c)).collect()
    }

    #[test]
    fn a_student_takes_at_most_five_courses() {
        let four = ["a", "b", "c", "d"];
        decision_spec(StudentSubscription)
            .given([defined("algebra", 30)])
            .given(ada_takes(&four))
            .when(subscribe("ada", "algebra"))
            .then([subscribed("ada", "algebra")]);
        decision_spec(StudentSubscription)
            .given([defined("algebra", 30)])
            .given(ada_takes(&["a", "b", "c", "d", "e"]))
            .when(subscribe("ada", "algebra"))
            .then_error(Refusal::TooManyCourses {
                student: student("ada"),
            });
        decision_spec(StudentSubscription)
            .given([defined("algebra", 30)])
            .given(ada_takes(&["a", "b", "c", "d", "e"]))
            .given([unsubscribed("ada", "c")])
            .when(subscribe("ada", "algebra"))
            .then([subscribed("ada", "algebra")]);
    }

    #[test]
    fn the_query_selects_the_course_and_the_students_seats_but_no_other_students_other_courses() {
        let catalogue = every_event_about("algebra", "ada");
        // Seats of the course, and the student's seats in other courses: all but the other
        // student's seats in the other course, and the other course's definition and changes.
        let selected = [
            defined("algebra", 1),
            capacity_changed("algebra", 2),
            subscribed("ada", "algebra"),
            unsubscribed("ada", "algebra"),
            subscribed("other-student", "algebra"),
            unsubscribed("other-student", "algebra"),
            subscribed("ada", "other-course"),
            unsubscribed("ada", "other-course"),
        ];
        let one_seat = || vec![defined("algebra", 1)];
        let histories = [
            vec![],
            one_seat(),
            [one_seat(), vec![subscribed("other-student", "algebra")]].concat(),
            [one_seat(), vec![subscribed("ada", "algebra")]].concat(),
            [one_seat(), ada_takes(&["a", "b", "c", "d"])].concat(),
            [one_seat(), ada_takes(&["a", "b", "c", "other-course", "d"])].concat(),
        ];
        assert_query_is_exact(
            &StudentSubscription,
            &subscribe("ada", "algebra"),
            &catalogue,
            &selected,
            &histories,
        );
    }

    #[test]
    fn tags_name_the_course_and_the_student() {
        assert_tags_name_the_course_and_the_student(&StudentSubscription);
    }
}
