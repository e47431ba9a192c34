//! Course subscriptions with dynamic consistency boundaries: the example of the DCB
//! specification (dcb.events), built with decider.
//!
//! Students subscribe to courses. A course has a number of seats; a student takes at most
//! [`MAX_COURSES_PER_STUDENT`] courses. Both rules govern one event, a
//! [`StudentSubscribedToCourse`](CourseEvent::StudentSubscribedToCourse) tagged with its course
//! and its student, so neither a course stream nor a student stream could guard it alone. Each
//! command is decided by a [`DecisionModel`](decider_core::dcb::DecisionModel) of its own, which
//! names the events it depends on as a query, and is appended on the condition that none of
//! them changed since it read them.
//!
//! | item | what it is | source file |
//! |---|---|---|
//! | [`CourseEvent`], [`Refusal`], [`MAX_COURSES_PER_STUDENT`] | the events and their tags; why a rule refuses a command | `event.rs` |
//! | [`CourseId`], [`StudentId`], [`InvalidId`], [`MAX_ID_CHARS`] | ids, each with its tag | `id.rs` |
//! | [`DefineCourse`], [`CourseDefinition`] | defining a course: its decision model and specs | `define_course.rs` |
//! | [`ChangeCourseCapacity`], [`CapacityChange`] | changing a capacity | `change_capacity.rs` |
//! | [`SubscribeStudent`], [`StudentSubscription`], [`Seats`] | subscribing a student | `subscribe.rs` |
//! | [`UnsubscribeStudent`], [`StudentUnsubscription`] | unsubscribing a student | `unsubscribe.rs` |
//! | [`Courses`], [`CourseCommand`], [`CoursesError`], [`Roster`] | the application on a store | `courses.rs` |
//! | [`StoreUrl`] | which store, from `--store` | `store_url.rs` |
//! | [`Retries`] | how many decisions were made again after a lost race | `retries.rs` |
//! | [`demo`] | the scripted run, with a race for the last seat of a course | `demo.rs` |
//!
//! `cargo run -p courses -- demo` runs the demo on the in-memory store (see the README).
#![deny(missing_docs)]

mod change_capacity;
mod courses;
mod define_course;
pub mod demo;
mod event;
mod id;
mod retries;
mod store_url;
mod subscribe;
mod unsubscribe;

#[cfg(test)]
mod spec_support;

pub use change_capacity::{CapacityChange, ChangeCourseCapacity};
pub use courses::{CourseCommand, Courses, CoursesError, Roster};
pub use define_course::{CourseDefinition, DefineCourse};
pub use event::{CourseEvent, MAX_COURSES_PER_STUDENT, Refusal};
pub use id::{CourseId, InvalidId, MAX_ID_CHARS, StudentId};
pub use retries::Retries;
pub use store_url::{StoreUrl, UnknownStore};
pub use subscribe::{Seats, StudentSubscription, SubscribeStudent};
pub use unsubscribe::{StudentUnsubscription, UnsubscribeStudent};
