//! The application: each command run by a [`DecisionHandler`] of its own decision model, on
//! one [`DcbStore`], and the courses' rosters read by query.

use std::collections::BTreeSet;
use std::pin::pin;

use decider_core::dcb::{DcbStore, DecisionHandler, Query, QueryItem};
use decider_core::{
    Codec, CommandError, CommandOutcome, JsonCodec, Metadata, RetryPolicy, View, fold_view,
};
use futures::TryStreamExt;

use crate::change_capacity::{CapacityChange, ChangeCourseCapacity};
use crate::define_course::{CourseDefinition, DefineCourse};
use crate::event::{CourseEvent, Refusal};
use crate::id::{CourseId, StudentId};
use crate::subscribe::{StudentSubscription, SubscribeStudent};
use crate::unsubscribe::{StudentUnsubscription, UnsubscribeStudent};

/// What the application can be asked to do: one command per decision model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CourseCommand {
    /// Define a course.
    Define(DefineCourse),
    /// Change a course's capacity.
    ChangeCapacity(ChangeCourseCapacity),
    /// Subscribe a student to a course.
    Subscribe(SubscribeStudent),
    /// Unsubscribe a student from a course.
    Unsubscribe(UnsubscribeStudent),
}

/// Why a command was not carried out, or a roster not read.
#[derive(Debug, thiserror::Error)]
pub enum CoursesError {
    /// A rule refused the command.
    #[error(transparent)]
    Refused(Refusal),
    /// The store or the codec failed, or the decision lost more races than its retry policy
    /// allows ([`is_conflict`](CommandError::is_conflict)); never `Rejected`.
    #[error(transparent)]
    Failed(CommandError<Refusal>),
}

impl From<CommandError<Refusal>> for CoursesError {
    fn from(error: CommandError<Refusal>) -> Self {
        match error {
            CommandError::Rejected(refusal) => Self::Refused(refusal),
            other => Self::Failed(other),
        }
    }
}

/// A course's seats and who holds them, as the log says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    /// Its capacity.
    pub capacity: u32,
    /// The students subscribed to it (there may be more than `capacity` after the capacity was
    /// lowered).
    pub students: BTreeSet<StudentId>,
}

/// The fold of one course's events into its [`Roster`]: `None` until the course is defined.
/// A read-side view, so it may know its course, and ignores other courses' events.
#[derive(Debug, Clone)]
struct CourseRoster<'a>(&'a CourseId);

impl View for CourseRoster<'_> {
    type Event = CourseEvent;
    type State = Option<Roster>;

    fn initial_state(&self) -> Option<Roster> {
        None
    }

    fn evolve(&self, roster: Option<Roster>, event: &CourseEvent) -> Option<Roster> {
        match event {
            CourseEvent::CourseDefined { course, capacity } if course == self.0 => Some(Roster {
                capacity: *capacity,
                students: BTreeSet::new(),
            }),
            CourseEvent::CourseCapacityChanged { course, capacity } if course == self.0 => roster
                .map(|roster| Roster {
                    capacity: *capacity,
                    ..roster
                }),
            CourseEvent::StudentSubscribedToCourse { student, course } if course == self.0 => {
                roster.map(|mut roster| {
                    roster.students.insert(student.clone());
                    roster
                })
            }
            CourseEvent::StudentUnsubscribedFromCourse { student, course } if course == self.0 => {
                roster.map(|mut roster| {
                    roster.students.remove(student);
                    roster
                })
            }
            _ => roster,
        }
    }
}

/// The course-subscription application on `S`.
///
/// ```
/// # use courses::{CourseCommand, CourseId, Courses, DefineCourse, StudentId, SubscribeStudent};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let courses = Courses::new(decider_store_memory::MemoryStore::new());
/// let (algebra, ada) = (CourseId::new("algebra")?, StudentId::new("ada")?);
/// courses
///     .handle(&CourseCommand::Define(DefineCourse { course: algebra.clone(), capacity: 30 }))
///     .await?;
/// courses
///     .handle(&CourseCommand::Subscribe(SubscribeStudent { student: ada.clone(), course: algebra.clone() }))
///     .await?;
/// let roster = courses.roster(&algebra).await?.expect("algebra is defined");
/// assert_eq!((roster.capacity, roster.students.len()), (30, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Courses<S> {
    define: DecisionHandler<CourseDefinition, S>,
    change_capacity: DecisionHandler<CapacityChange, S>,
    subscribe: DecisionHandler<StudentSubscription, S>,
    unsubscribe: DecisionHandler<StudentUnsubscription, S>,
}

impl<S: DcbStore + Clone> Courses<S> {
    /// The application on `store`, with the handlers' default retry policy.
    pub fn new(store: S) -> Self {
        Self::with_retry_policy(store, RetryPolicy::default())
    }

    /// The application on `store`, deciding again after a lost race as `retry` says.
    pub fn with_retry_policy(store: S, retry: RetryPolicy) -> Self {
        Self {
            define: DecisionHandler::new(CourseDefinition, store.clone()).with_retry_policy(retry),
            change_capacity: DecisionHandler::new(CapacityChange, store.clone())
                .with_retry_policy(retry),
            subscribe: DecisionHandler::new(StudentSubscription, store.clone())
                .with_retry_policy(retry),
            unsubscribe: DecisionHandler::new(StudentUnsubscription, store)
                .with_retry_policy(retry),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        self.define.store()
    }

    /// Decides `command` and appends its events.
    pub async fn handle(
        &self,
        command: &CourseCommand,
    ) -> Result<CommandOutcome<CourseEvent>, CoursesError> {
        self.handle_with(command, Metadata::default()).await
    }

    /// Decides `command` and appends its events with `metadata`: with an idempotency key, a
    /// command sent again is answered with its first outcome, marked `replayed`.
    pub async fn handle_with(
        &self,
        command: &CourseCommand,
        metadata: Metadata,
    ) -> Result<CommandOutcome<CourseEvent>, CoursesError> {
        let outcome = match command {
            CourseCommand::Define(command) => self.define.handle_with(command, metadata).await,
            CourseCommand::ChangeCapacity(command) => {
                self.change_capacity.handle_with(command, metadata).await
            }
            CourseCommand::Subscribe(command) => {
                self.subscribe.handle_with(command, metadata).await
            }
            CourseCommand::Unsubscribe(command) => {
                self.unsubscribe.handle_with(command, metadata).await
            }
        };
        Ok(outcome?)
    }

    /// `course`'s roster (`None`: nobody defined it), from the events tagged with it.
    pub async fn roster(&self, course: &CourseId) -> Result<Option<Roster>, CoursesError> {
        let query = Query::from(QueryItem::tagged([course.tag().clone()]));
        let codec = JsonCodec::<CourseEvent>::default();
        let mut read = pin!(self.store().read_query(&query, None, None));
        let mut events = Vec::new();
        while let Some(recorded) = read
            .try_next()
            .await
            .map_err(|error| CoursesError::Failed(error.into()))?
        {
            let event = codec
                .decode(&recorded)
                .map_err(|error| CoursesError::Failed(error.into()))?;
            events.push(event);
        }
        Ok(fold_view(&CourseRoster(course), &events))
    }
}
