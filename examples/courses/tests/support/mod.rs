//! Test support: the checks of a test file run on every store that implements `DcbStore`,
//! each on a fresh store of its own, and helpers to write commands and read outcomes briefly.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

use courses::{
    ChangeCourseCapacity, CourseCommand, CourseEvent, CourseId, CoursesError, DefineCourse,
    Refusal, StudentId, SubscribeStudent, UnsubscribeStudent,
};
use decider_core::CommandOutcome;

/// How long one check may take on one store before it fails: every check is bounded.
pub const CHECK_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Expands each `check` of the test file, an `async fn check<S>(store: S)` generic over the
/// store (`DcbStore`, `Clone`, `Send`, `Sync`, `'static`), to one `#[tokio::test]` per store, in
/// a module named after the store: `memory::check`, `sqlite::check` (a fresh file each) and
/// `postgres::check` (a fresh schema each, dropped after it).
macro_rules! on_every_store {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let store = decider_store_memory::MemoryStore::new();
                    $crate::support::bounded(super::$check(store)).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let store = $crate::support::postgres().await;
                    $crate::support::bounded(super::$check(store.clone())).await;
                    $crate::support::pg::drop_store(store).await;
                }
            )*
        }

        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let file = $crate::support::TempDb::new();
                    $crate::support::bounded(super::$check(file.open())).await;
                }
            )*
        }
    };
}

pub(crate) use on_every_store;

/// The store-postgres test support: a fresh schema per test on the database of `DATABASE_URL`
/// (default `postgres://postgres@127.0.0.1:5432/test`), dropped after it, also when it fails,
/// and a clear message when no database answers.
#[path = "../../../../store-postgres/tests/support/mod.rs"]
pub mod pg;

/// A store in a fresh schema, with a connection for each of the checks' 16 tasks.
pub async fn postgres() -> decider_store_postgres::PostgresStore {
    pg::fresh_store_with(decider_store_postgres::PostgresOptions {
        pool_size: 17,
        ..decider_store_postgres::PostgresOptions::default()
    })
    .await
}

/// A database file of its own, removed (with its `-wal` and `-shm` files) when dropped: also
/// when the test fails.
pub struct TempDb(pub std::path::PathBuf);

impl TempDb {
    pub fn new() -> Self {
        Self(
            std::env::temp_dir().join(format!("courses-test-{}.db", uuid::Uuid::new_v4().simple())),
        )
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }

    /// A store on this file.
    pub fn open(&self) -> decider_store_sqlite::SqliteStore {
        decider_store_sqlite::SqliteStore::open(&self.0).expect("open a fresh SQLite file")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Runs `check`, failing it when it outlasts [`CHECK_TIME_LIMIT`].
pub async fn bounded(check: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(CHECK_TIME_LIMIT, check)
        .await
        .unwrap_or_else(|_| panic!("the check took longer than {CHECK_TIME_LIMIT:?}"));
}

pub fn course(id: &str) -> CourseId {
    CourseId::new(id).unwrap()
}

pub fn student(id: &str) -> StudentId {
    StudentId::new(id).unwrap()
}

pub fn define(id: &str, capacity: u32) -> CourseCommand {
    CourseCommand::Define(DefineCourse {
        course: course(id),
        capacity,
    })
}

pub fn change(id: &str, capacity: u32) -> CourseCommand {
    CourseCommand::ChangeCapacity(ChangeCourseCapacity {
        course: course(id),
        capacity,
    })
}

pub fn subscribe(who: &str, to: &str) -> CourseCommand {
    CourseCommand::Subscribe(SubscribeStudent {
        student: student(who),
        course: course(to),
    })
}

pub fn unsubscribe(who: &str, from: &str) -> CourseCommand {
    CourseCommand::Unsubscribe(UnsubscribeStudent {
        student: student(who),
        course: course(from),
    })
}

/// The events of an outcome that must have been carried out.
#[track_caller]
pub fn done(outcome: Result<CommandOutcome<CourseEvent>, CoursesError>) -> Vec<CourseEvent> {
    match outcome {
        Ok(outcome) => outcome.events,
        Err(error) => panic!("expected the command to be carried out: {error}"),
    }
}

/// The refusal of an outcome that must have been refused.
#[track_caller]
pub fn refused(outcome: Result<CommandOutcome<CourseEvent>, CoursesError>) -> Refusal {
    match outcome {
        Err(CoursesError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal: {other:?}"),
    }
}
