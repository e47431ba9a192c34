//! The demo: its script on every store, and the `courses demo` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use courses::demo::{self, DemoError};
use courses::{Courses, Retries};
use decider_core::dcb::DcbStore;
use support::on_every_store;

on_every_store!(
    the_demo_tells_each_rule_the_race_and_the_rosters,
    the_demo_refuses_a_store_that_holds_its_courses,
);

async fn run<S: DcbStore + Clone + Send + Sync + 'static>(
    courses: &Arc<Courses<S>>,
) -> Result<String, DemoError> {
    let retries = Retries::install().unwrap();
    let mut out = Vec::new();
    demo::run(courses.clone(), &retries, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

/// The lines of `output` that start with `start` (after their indent), whitespace collapsed.
fn lines_starting(output: &str, start: &str) -> Vec<String> {
    output
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| line.starts_with(start))
        .collect()
}

async fn the_demo_tells_each_rule_the_race_and_the_rosters<
    S: DcbStore + Clone + Send + Sync + 'static,
>(
    store: S,
) {
    let output = run(&Arc::new(Courses::new(store))).await.unwrap();
    for expected in [
        "algebra again, 10 seats refused: course algebra is already defined",
        "latin, 0 seats refused: a course has at least one seat",
        "ada → french refused: student ada takes 5 courses already, the most a student may take",
        "ada leaves drama unsubscribed",
        "ada → algebra refused: student ada is subscribed to course algebra already",
        "ada → algebra, its first request again replayed: its first outcome, nothing written again",
        "ada leaves latin refused: student ada is not subscribed to course latin",
        "french → 2 seats refused: course french has 2 seats already",
        "latin → 10 seats refused: course latin is not defined",
        "1 subscribed, 7 refused as the course is full",
        "of the 7 refused: ",
        "algebra 1/30 ada",
        "drama 0/12",
        "french 1/2 ada",
    ] {
        assert_eq!(
            lines_starting(&output, expected).len(),
            1,
            "{expected:?} in\n{output}"
        );
    }
    let seminar = lines_starting(&output, "seminar 3/3 bob, carol, ");
    assert_eq!(seminar.len(), 1, "{output}");
    let winner = lines_starting(&output, "")
        .into_iter()
        .find_map(|line| Some(line.strip_suffix("→ seminar subscribed")?.trim().to_owned()))
        .expect("a racer subscribed");
    assert!(seminar[0].ends_with(&winner), "{output}");
}

async fn the_demo_refuses_a_store_that_holds_its_courses<
    S: DcbStore + Clone + Send + Sync + 'static,
>(
    store: S,
) {
    let courses = Arc::new(Courses::new(store));
    run(&courses).await.unwrap();
    match run(&courses).await {
        Err(DemoError::NotEmpty(course)) => assert_eq!(course.as_str(), "algebra"),
        other => panic!("a second run on the same store must stop first: {other:?}"),
    }
}

#[test]
fn courses_demo_runs_on_the_memory_store_by_default() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_courses"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        lines_starting(&stdout, "1 subscribed, 7 refused").len(),
        1,
        "{stdout}"
    );
}

#[test]
fn courses_demo_refuses_an_unknown_store() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_courses"))
        .args(["demo", "--store", "mysql://localhost"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unknown store"),
        "{output:?}"
    );
}

#[test]
fn courses_demo_runs_on_an_sqlite_file_and_keeps_it() {
    let file = support::TempDb::new();
    let demo = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_courses"))
            .args(["demo", "--store", url])
            .output()
            .unwrap()
    };
    let first = demo(&file.url());
    let stdout = String::from_utf8(first.stdout).unwrap();
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(lines_starting(&stdout, "seminar 3/3").len(), 1, "{stdout}");
    // The file kept the term: a second run finds its courses and stops.
    let second = demo(&file.url());
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("holds course algebra already"),
        "{second:?}"
    );
}

#[tokio::test]
async fn courses_demo_runs_on_postgres_in_the_schema_it_is_given() {
    let schema = format!("courses_test_{}", uuid::Uuid::new_v4().simple());
    support::pg::drop_schemas_on_panic(&schema);
    let url = support::pg::database_url();
    let demo = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_courses"))
            .args(["demo", "--store", &url, "--schema", &schema])
            .output()
            .unwrap()
    };
    // Blocking, which this test's runtime can afford: nothing else runs on it.
    let first = demo();
    let stdout = String::from_utf8(first.stdout).unwrap();
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(lines_starting(&stdout, "seminar 3/3").len(), 1, "{stdout}");
    let second = demo();
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("holds course algebra already"),
        "{second:?}"
    );
    support::pg::raw_client()
        .await
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}
