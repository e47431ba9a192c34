//! A scripted term: courses defined, a student who reaches the limit of courses, capacities
//! changed, a race of students for the last seat of a course, and each course's roster at the
//! end.

use std::io::Write;
use std::sync::Arc;

use decider_core::dcb::DcbStore;
use decider_core::{CommandOutcome, Metadata};
use tokio::sync::Barrier;

use crate::change_capacity::ChangeCourseCapacity;
use crate::courses::{CourseCommand, Courses, CoursesError};
use crate::define_course::DefineCourse;
use crate::event::{CourseEvent, Refusal};
use crate::id::{CourseId, InvalidId, StudentId};
use crate::retries::Retries;
use crate::subscribe::{StudentSubscription, SubscribeStudent};
use crate::unsubscribe::UnsubscribeStudent;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A command or a read failed (a refusal is part of the script, not an error).
    #[error(transparent)]
    Courses(#[from] CoursesError),
    /// The store holds the demo's courses already: its script starts from an empty term.
    #[error(
        "the store holds course {0} already: the demo needs a store without its courses \
         (memory, a new file, or a new --schema)"
    )]
    NotEmpty(CourseId),
    /// A racer's task panicked or was cancelled.
    #[error("a racer's task failed: {0}")]
    Racer(#[from] tokio::task::JoinError),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
    /// An id of the script is not an id.
    #[error(transparent)]
    Script(#[from] InvalidId),
}

/// The courses of the term and their seats; the last one is raced for.
const COURSES: [(&str, u32); 7] = [
    ("algebra", 30),
    ("biology", 30),
    ("chemistry", 30),
    ("drama", 12),
    ("economics", 30),
    ("french", 30),
    ("seminar", 3),
];

/// The students racing for the seminar's last seat, at once.
const RACERS: [&str; 8] = [
    "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
];

/// Runs the script on `courses`, reporting to `out`; `retries` counts the decisions the race
/// for the last seat made again.
pub async fn run<S>(
    courses: Arc<Courses<S>>,
    retries: &Retries,
    out: &mut impl Write,
) -> Result<(), DemoError>
where
    S: DcbStore + Clone + Send + Sync + 'static,
{
    let first = CourseId::new(COURSES[0].0)?;
    if courses.roster(&first).await?.is_some() {
        return Err(DemoError::NotEmpty(first));
    }

    writeln!(out, "Courses")?;
    for (course, capacity) in COURSES {
        let done = courses.handle(&define(course, capacity)?).await;
        line(out, format!("{course}, {capacity} seats"), done, "defined")?;
    }
    let done = courses.handle(&define("algebra", 10)?).await;
    line(out, "algebra again, 10 seats", done, "defined")?;
    let done = courses.handle(&define("latin", 0)?).await;
    line(out, "latin, 0 seats", done, "defined")?;

    writeln!(out, "Ada's courses (at most 5)")?;
    // The first subscription carries an idempotency key: sent again, it is answered from it.
    let keyed = || Metadata::default().with_idempotency_key("demo-ada-algebra");
    let done = courses
        .handle_with(&subscribe("ada", "algebra")?, keyed())
        .await;
    line(out, "ada → algebra", done, "subscribed")?;
    for course in ["biology", "chemistry", "drama", "economics", "french"] {
        let done = courses.handle(&subscribe("ada", course)?).await;
        line(out, format!("ada → {course}"), done, "subscribed")?;
    }
    let done = courses.handle(&unsubscribe("ada", "drama")?).await;
    line(out, "ada leaves drama", done, "unsubscribed")?;
    let done = courses.handle(&subscribe("ada", "french")?).await;
    line(out, "ada → french", done, "subscribed")?;
    let done = courses.handle(&subscribe("ada", "algebra")?).await;
    line(out, "ada → algebra", done, "subscribed")?;
    let done = courses
        .handle_with(&subscribe("ada", "algebra")?, keyed())
        .await;
    line(
        out,
        "ada → algebra, its first request again",
        done,
        "subscribed",
    )?;
    let done = courses.handle(&subscribe("ada", "latin")?).await;
    line(out, "ada → latin", done, "subscribed")?;
    let done = courses.handle(&unsubscribe("ada", "latin")?).await;
    line(out, "ada leaves latin", done, "unsubscribed")?;

    writeln!(out, "Capacities")?;
    for (course, capacity) in [("french", 2), ("french", 2), ("latin", 10)] {
        let done = courses.handle(&change(course, capacity)?).await;
        line(out, format!("{course} → {capacity} seats"), done, "changed")?;
    }

    let (seminar, seats) = COURSES[COURSES.len() - 1];
    for student in ["bob", "carol"] {
        courses.handle(&subscribe(student, seminar)?).await?;
    }
    writeln!(
        out,
        "The race for the last seat of {seminar}: {seats} seats, 2 taken (bob, carol); \
         {} students subscribe at once",
        RACERS.len()
    )?;
    let before = retries.after_conflicts_of::<StudentSubscription>();
    let start = Arc::new(Barrier::new(RACERS.len()));
    let mut racers = Vec::new();
    for student in RACERS {
        let (courses, start, command) =
            (courses.clone(), start.clone(), subscribe(student, seminar)?);
        racers.push(tokio::spawn(async move {
            start.wait().await;
            courses.handle(&command).await
        }));
    }
    let (mut won, mut full) = (0, 0_u64);
    for (student, racer) in RACERS.into_iter().zip(racers) {
        let label = format!("{student} → {seminar}");
        match racer.await? {
            // Out of retries: what the race did is what the demo shows, so it goes on.
            Err(CoursesError::Failed(error)) => writeln!(out, "  {label:<40} failed: {error}")?,
            done => {
                match &done {
                    Ok(_) => won += 1,
                    Err(CoursesError::Refused(Refusal::CourseFull { .. })) => full += 1,
                    Err(_) => {}
                }
                line(out, label, done, "subscribed")?;
            }
        }
    }
    let again = retries.after_conflicts_of::<StudentSubscription>() - before;
    writeln!(
        out,
        "  {won} subscribed, {full} refused as the course is full"
    )?;
    // A loser either read the winner's seat and was refused at once, or read the seat free,
    // lost at the append (its condition failed), read the winner's seat and was refused then.
    writeln!(
        out,
        "  of the {full} refused: {again} lost at the append and decided again, {} read the \
         taken seat at once",
        full.saturating_sub(again)
    )?;

    writeln!(out, "Rosters (read by query)")?;
    for (course, _) in COURSES {
        let Some(roster) = courses.roster(&CourseId::new(course)?).await? else {
            continue;
        };
        let students: Vec<&str> = roster.students.iter().map(StudentId::as_str).collect();
        let line = format!(
            "  {course:<10} {:>2}/{:<2}  {}",
            roster.students.len(),
            roster.capacity,
            students.join(", ")
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Writes what `done` did: `what` when it was carried out, the refusal when a rule refused it.
/// A command that failed otherwise stops the demo.
fn line(
    out: &mut impl Write,
    label: impl AsRef<str>,
    done: Result<CommandOutcome<CourseEvent>, CoursesError>,
    what: &str,
) -> Result<(), DemoError> {
    let label = label.as_ref();
    match done {
        Ok(outcome) if outcome.replayed => writeln!(
            out,
            "  {label:<40} replayed: its first outcome, nothing written again"
        )?,
        Ok(_) => writeln!(out, "  {label:<40} {what}")?,
        Err(CoursesError::Refused(refusal)) => writeln!(out, "  {label:<40} refused: {refusal}")?,
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

fn define(course: &str, capacity: u32) -> Result<CourseCommand, InvalidId> {
    Ok(CourseCommand::Define(DefineCourse {
        course: CourseId::new(course)?,
        capacity,
    }))
}

fn change(course: &str, capacity: u32) -> Result<CourseCommand, InvalidId> {
    Ok(CourseCommand::ChangeCapacity(ChangeCourseCapacity {
        course: CourseId::new(course)?,
        capacity,
    }))
}

fn subscribe(student: &str, course: &str) -> Result<CourseCommand, InvalidId> {
    Ok(CourseCommand::Subscribe(SubscribeStudent {
        student: StudentId::new(student)?,
        course: CourseId::new(course)?,
    }))
}

fn unsubscribe(student: &str, course: &str) -> Result<CourseCommand, InvalidId> {
    Ok(CourseCommand::Unsubscribe(UnsubscribeStudent {
        student: StudentId::new(student)?,
        course: CourseId::new(course)?,
    }))
}
