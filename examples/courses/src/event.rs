//! What happens to courses and students: the events every decision model reads and writes,
//! the tags they carry, and why a rule refuses a command.

use decider_core::dcb::Tag;
use serde::{Deserialize, Serialize};

use crate::id::{CourseId, StudentId};

/// The most courses a student takes at once.
pub const MAX_COURSES_PER_STUDENT: usize = 5;

/// The events of the course-subscription example, named as in the DCB specification.
///
/// Stored with [`JsonCodec`](decider_core::JsonCodec): the variant name is the event type, which
/// the decision models' queries name through the constants below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CourseEvent {
    /// A course was defined with its number of seats.
    CourseDefined {
        /// The course.
        course: CourseId,
        /// How many students it takes (at least one).
        capacity: u32,
    },
    /// A course's number of seats changed; subscriptions already made are kept.
    CourseCapacityChanged {
        /// The course.
        course: CourseId,
        /// How many students it takes from now on (at least one).
        capacity: u32,
    },
    /// A student took a seat in a course.
    StudentSubscribedToCourse {
        /// The student.
        student: StudentId,
        /// The course.
        course: CourseId,
    },
    /// A student gave their seat in a course back.
    StudentUnsubscribedFromCourse {
        /// The student.
        student: StudentId,
        /// The course.
        course: CourseId,
    },
}

impl CourseEvent {
    /// The event type of [`CourseDefined`](Self::CourseDefined).
    pub const COURSE_DEFINED: &'static str = "CourseDefined";
    /// The event type of [`CourseCapacityChanged`](Self::CourseCapacityChanged).
    pub const COURSE_CAPACITY_CHANGED: &'static str = "CourseCapacityChanged";
    /// The event type of [`StudentSubscribedToCourse`](Self::StudentSubscribedToCourse).
    pub const STUDENT_SUBSCRIBED: &'static str = "StudentSubscribedToCourse";
    /// The event type of [`StudentUnsubscribedFromCourse`](Self::StudentUnsubscribedFromCourse).
    pub const STUDENT_UNSUBSCRIBED: &'static str = "StudentUnsubscribedFromCourse";

    /// Its event type, as the codec stores it (the variant name).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::CourseDefined { .. } => Self::COURSE_DEFINED,
            Self::CourseCapacityChanged { .. } => Self::COURSE_CAPACITY_CHANGED,
            Self::StudentSubscribedToCourse { .. } => Self::STUDENT_SUBSCRIBED,
            Self::StudentUnsubscribedFromCourse { .. } => Self::STUDENT_UNSUBSCRIBED,
        }
    }

    /// Its tags: `course:<id>` on every event, and `student:<id>` on a subscription or an
    /// unsubscription, so that both the course's and the student's queries find it.
    pub fn tags(&self) -> Vec<Tag> {
        match self {
            Self::CourseDefined { course, .. } | Self::CourseCapacityChanged { course, .. } => {
                vec![course.tag().clone()]
            }
            Self::StudentSubscribedToCourse { student, course }
            | Self::StudentUnsubscribedFromCourse { student, course } => {
                vec![course.tag().clone(), student.tag().clone()]
            }
        }
    }
}

/// Why a rule refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Defining a course whose id is taken.
    #[error("course {course} is already defined")]
    CourseAlreadyDefined {
        /// The course.
        course: CourseId,
    },
    /// Changing, or subscribing to, a course nobody defined.
    #[error("course {course} is not defined")]
    CourseNotDefined {
        /// The course.
        course: CourseId,
    },
    /// A capacity of zero seats.
    #[error("a course has at least one seat")]
    NoSeats,
    /// Changing a course's capacity to the one it has.
    #[error("course {course} has {capacity} seats already")]
    CapacityUnchanged {
        /// The course.
        course: CourseId,
        /// Its capacity.
        capacity: u32,
    },
    /// Subscribing to a course whose seats are all taken.
    #[error("course {course} is full: its {capacity} seats are taken")]
    CourseFull {
        /// The course.
        course: CourseId,
        /// Its capacity.
        capacity: u32,
    },
    /// Subscribing a student to a course they are subscribed to.
    #[error("student {student} is subscribed to course {course} already")]
    AlreadySubscribed {
        /// The student.
        student: StudentId,
        /// The course.
        course: CourseId,
    },
    /// Subscribing a student who takes [`MAX_COURSES_PER_STUDENT`] courses already.
    #[error(
        "student {student} takes {MAX_COURSES_PER_STUDENT} courses already, the most a student may take"
    )]
    TooManyCourses {
        /// The student.
        student: StudentId,
    },
    /// Unsubscribing a student from a course they are not subscribed to.
    #[error("student {student} is not subscribed to course {course}")]
    NotSubscribed {
        /// The student.
        student: StudentId,
        /// The course.
        course: CourseId,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use decider_core::{Codec, JsonCodec};

    use super::*;

    fn every_kind_of_event() -> [CourseEvent; 4] {
        let (course, student) = (
            CourseId::new("algebra").unwrap(),
            StudentId::new("ada").unwrap(),
        );
        [
            CourseEvent::CourseDefined {
                course: course.clone(),
                capacity: 30,
            },
            CourseEvent::CourseCapacityChanged {
                course: course.clone(),
                capacity: 20,
            },
            CourseEvent::StudentSubscribedToCourse {
                student: student.clone(),
                course: course.clone(),
            },
            CourseEvent::StudentUnsubscribedFromCourse { student, course },
        ]
    }

    /// The queries name event types as text: a constant that drifted from the codec's name would
    /// make a query silently match nothing.
    #[test]
    fn the_event_type_constants_are_the_codecs_names() {
        let codec = JsonCodec::<CourseEvent>::default();
        for event in every_kind_of_event() {
            assert_eq!(codec.encode(&event).unwrap().event_type, event.event_type());
        }
    }
}
