//! Concurrent decisions, on every store: 16 students racing for a course's last seat; 16
//! subscriptions racing against both a course's capacity and a student's limit, which never
//! end above either; and 16 subscriptions of different students to different courses, which
//! never conflict at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use courses::{CourseEvent, Courses, CoursesError, MAX_COURSES_PER_STUDENT, Refusal, Roster};
use decider_core::dcb::DcbStore;
use decider_core::{CommandOutcome, RetryPolicy};
use support::{course, define, done, on_every_store, student, subscribe};
use tokio::sync::Barrier;

on_every_store!(
    sixteen_students_racing_for_the_last_seat_one_wins_and_the_others_are_refused_course_full,
    concurrent_subscriptions_never_exceed_a_courses_capacity_nor_a_students_limit,
    subscriptions_of_different_students_to_different_courses_never_conflict,
);

/// The number of concurrent tasks in each check.
const TASKS: usize = 16;

type Outcome = Result<CommandOutcome<CourseEvent>, CoursesError>;

/// Sends each of `commands` from a task of its own, all released at once; the outcomes in the
/// order of `commands`.
async fn all_at_once<S>(
    courses: &Arc<Courses<S>>,
    commands: Vec<courses::CourseCommand>,
) -> Vec<Outcome>
where
    S: DcbStore + Clone + Send + Sync + 'static,
{
    let start = Arc::new(Barrier::new(commands.len()));
    let tasks: Vec<_> = commands
        .into_iter()
        .map(|command| {
            let (courses, start) = (courses.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                courses.handle(&command).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("a task panicked"));
    }
    outcomes
}

async fn roster<S: DcbStore + Clone>(courses: &Courses<S>, id: &str) -> Roster {
    courses.roster(&course(id)).await.unwrap().unwrap()
}

async fn sixteen_students_racing_for_the_last_seat_one_wins_and_the_others_are_refused_course_full<
    S: DcbStore + Clone + Send + Sync + 'static,
>(
    store: S,
) {
    // The handlers' default retry policy: a loser's condition fails once, and deciding again
    // it reads the winner's seat.
    let courses = Arc::new(Courses::new(store));
    done(courses.handle(&define("seminar", 30)).await);
    for n in 0..29 {
        done(
            courses
                .handle(&subscribe(&format!("early-{n}"), "seminar"))
                .await,
        );
    }
    let racers: Vec<_> = (0..TASKS)
        .map(|n| subscribe(&format!("racer-{n}"), "seminar"))
        .collect();
    let outcomes = all_at_once(&courses, racers).await;
    let won = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let full = outcomes
        .iter()
        .filter(|outcome| {
            matches!(
                outcome,
                Err(CoursesError::Refused(Refusal::CourseFull {
                    capacity: 30,
                    ..
                }))
            )
        })
        .count();
    assert_eq!(
        (won, full),
        (1, TASKS - 1),
        "one racer gets the last seat, the others are refused as the course is full: {outcomes:?}"
    );
    assert_eq!(roster(&courses, "seminar").await.students.len(), 30);
}

async fn concurrent_subscriptions_never_exceed_a_courses_capacity_nor_a_students_limit<
    S: DcbStore + Clone + Send + Sync + 'static,
>(
    store: S,
) {
    // Retries enough for 16 tasks that all contend, so that every outcome is a decision (a
    // subscription or a refusal by the rules), never a race lost for good.
    let retry = RetryPolicy {
        max_retries: 64,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    let courses = Arc::new(Courses::with_retry_policy(store, retry));
    const ROUNDS: usize = 3;
    const SEATS: u32 = 4;
    for round in 0..ROUNDS {
        // Eight courses: the first has 4 seats, the others plenty. Ada subscribes to all eight
        // at once (she may take 5), while eight other students go for the first course (9
        // candidates for 4 seats).
        let c = |n: usize| format!("r{round}-c{n}");
        let ada = format!("r{round}-ada");
        for n in 0..8 {
            let seats = if n == 0 { SEATS } else { 30 };
            done(courses.handle(&define(&c(n), seats)).await);
        }
        let mut commands: Vec<_> = (0..8).map(|n| subscribe(&ada, &c(n))).collect();
        commands.extend((0..8).map(|n| subscribe(&format!("r{round}-s{n}"), &c(0))));
        assert_eq!(commands.len(), TASKS);
        let outcomes = all_at_once(&courses, commands).await;

        for (index, outcome) in outcomes.iter().enumerate() {
            let allowed = match outcome {
                Ok(_) => true,
                Err(CoursesError::Refused(Refusal::CourseFull { course, capacity })) => {
                    *course == self::course(&c(0)) && *capacity == SEATS
                }
                Err(CoursesError::Refused(Refusal::TooManyCourses { student })) => {
                    *student == self::student(&ada)
                }
                Err(_) => false,
            };
            assert!(allowed, "round {round}, task {index}: {outcome:?}");
        }
        let ada_takes = {
            let mut count = 0;
            for n in 0..8 {
                if roster(&courses, &c(n))
                    .await
                    .students
                    .contains(&student(&ada))
                {
                    count += 1;
                }
            }
            count
        };
        let first = roster(&courses, &c(0)).await;
        // Exactly, not at most: with retries every refusal is for a rule, so the seats and
        // Ada's courses are all taken.
        assert_eq!(
            ada_takes, MAX_COURSES_PER_STUDENT,
            "round {round}: ada's courses"
        );
        assert_eq!(
            first.students.len(),
            SEATS as usize,
            "round {round}: {first:?}"
        );
        let subscribed = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
        assert_eq!(
            subscribed,
            MAX_COURSES_PER_STUDENT + SEATS as usize
                - usize::from(first.students.contains(&student(&ada))),
            "round {round}: every subscription the log holds was answered as done, no other"
        );
    }
}

async fn subscriptions_of_different_students_to_different_courses_never_conflict<
    S: DcbStore + Clone + Send + Sync + 'static,
>(
    store: S,
) {
    // No retries: any conflict between these disjoint decisions would be returned.
    let retry = RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    };
    let courses = Arc::new(Courses::with_retry_policy(store, retry));
    for n in 0..TASKS {
        done(courses.handle(&define(&format!("c{n}"), 1)).await);
    }
    let commands = (0..TASKS)
        .map(|n| subscribe(&format!("s{n}"), &format!("c{n}")))
        .collect();
    for (n, outcome) in all_at_once(&courses, commands)
        .await
        .into_iter()
        .enumerate()
    {
        assert!(
            outcome.is_ok(),
            "s{n} → c{n} shares no event with the others, yet: {outcome:?}"
        );
    }
}
