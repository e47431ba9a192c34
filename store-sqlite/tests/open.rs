//! Opening files: what is not ours is refused with a typed error and left untouched; a newer
//! schema, a read-only place and a corrupt file are typed errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use decider_core::{EventData, EventFilter, EventStore, ExpectedVersion, StoreError, StreamId};
use decider_store_sqlite::{OpenError, SqliteStore};
use futures::TryStreamExt;
use support::{TempDatabase, remove_database, temp_path};

/// Drops `store` and waits until its threads have closed their connections, so that the file
/// is whole on disk (the last connection to close folds the WAL back into it).
async fn close(store: SqliteStore) {
    drop(store);
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[test]
fn a_text_file_is_refused_and_left_untouched() {
    let database = TempDatabase::new("text");
    let path = database.path().to_owned();
    let text = "not a database, just notes\n".repeat(100);
    std::fs::write(&path, &text).unwrap();
    let error = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(error, OpenError::NotADeciderDatabase { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not an SQLite database"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    remove_database(&path);
}

#[test]
fn an_sqlite_database_of_another_application_is_refused_and_left_untouched() {
    let database = TempDatabase::new("foreign");
    let path = database.path().to_owned();
    {
        let theirs = rusqlite::Connection::open(&path).unwrap();
        theirs
            .execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);")
            .unwrap();
    }
    let error = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(&error, OpenError::NotADeciderDatabase { reason, .. } if reason.contains("tables of another application")),
        "{error:?}"
    );
    let theirs = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = theirs
        .prepare("SELECT name FROM sqlite_schema")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["customers"]);
    let mode: String = theirs
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "their journal mode was changed");
    drop(theirs);
    remove_database(&path);
}

#[test]
fn an_empty_file_becomes_a_decider_database() {
    let database = TempDatabase::new("empty");
    let path = database.path().to_owned();
    std::fs::write(&path, b"").unwrap();
    let store = SqliteStore::open(&path).unwrap();
    drop(store);
    // And it opens again as ours.
    SqliteStore::open(&path).unwrap();
    remove_database(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_code_is_refused_naming_both_versions() {
    let database = TempDatabase::new("newer");
    let path = database.path().to_owned();
    close(SqliteStore::open(&path).unwrap()).await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let error = SqliteStore::open(&path).unwrap_err();
    assert_eq!(
        error,
        OpenError::SchemaTooNew {
            path: path.clone(),
            found: 99,
            supported: 5
        }
    );
    let message = error.to_string();
    assert!(message.contains("99") && message.contains('1'), "{message}");
    assert!(matches!(
        StoreError::from(error),
        StoreError::Backend { .. }
    ));
    remove_database(&path);
}

#[test]
fn a_place_that_cannot_be_written_is_a_typed_error_with_the_path() {
    // Tests may run as root, who may write any file: a read-only file system (procfs) and a
    // missing folder are refused to everyone.
    for path in [
        std::path::PathBuf::from("/proc/decider-cannot-be-here.db"),
        temp_path("missing").join("folder").join("app.db"),
    ] {
        let error = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(
                error,
                OpenError::CannotOpen { .. } | OpenError::ReadOnly { .. }
            ),
            "{error:?}"
        );
        let message = StoreError::from(error).to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_file_is_refused_when_permissions_apply() {
    use std::os::unix::fs::PermissionsExt;
    let database = TempDatabase::new("readonly");
    let path = database.path().to_owned();
    close(SqliteStore::open(&path).unwrap()).await;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let writable_anyway = std::fs::OpenOptions::new().write(true).open(&path).is_ok(); // root
    let opened = SqliteStore::open(&path);
    match opened {
        Ok(store) => {
            assert!(writable_anyway, "a read-only file was opened for writing");
            drop(store);
        }
        Err(error) => assert!(matches!(error, OpenError::ReadOnly { .. }), "{error:?}"),
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    remove_database(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_copy_gives_typed_errors_and_no_panic() {
    let database = TempDatabase::new("original");
    let path = database.path().to_owned();
    let store = SqliteStore::open(&path).unwrap();
    for n in 0..50 {
        let stream = StreamId::new(format!("corrupt-{n}")).unwrap();
        let payload = format!("{{\"text\":\"{}\"}}", "y".repeat(2_000));
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![EventData::json("E", payload)],
            )
            .await
            .unwrap();
    }
    close(store).await;
    let original = std::fs::read(&path).unwrap();
    assert!(
        original.len() > 64 * 1024,
        "the file is {} bytes",
        original.len()
    );
    remove_database(&path);

    // Pages in the middle overwritten: the open (header intact) may succeed, reading must fail.
    let middle_database = TempDatabase::new("corrupt-middle");
    let middle = middle_database.path().to_owned();
    let mut bytes = original.clone();
    let end = bytes.len() - 4096;
    for byte in &mut bytes[8 * 1024..end] {
        *byte = 0xA5;
    }
    std::fs::write(&middle, &bytes).unwrap();
    match SqliteStore::open(&middle) {
        Err(error) => assert!(
            !matches!(error, OpenError::SchemaTooNew { .. }),
            "{error:?}"
        ),
        Ok(store) => {
            let read: Result<Vec<_>, StoreError> = store
                .read_whole_log(&EventFilter::all())
                .try_collect()
                .await;
            let error = read.unwrap_err();
            assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
            assert!(error.to_string().contains("corrupt"), "{error}");
            let stream = StreamId::new("corrupt-7").unwrap();
            let read: Result<Vec<_>, StoreError> =
                store.read_whole_stream(&stream).try_collect().await;
            assert!(read.is_err() || read.is_ok_and(|events| events.len() <= 1));
            drop(store);
        }
    }
    remove_database(&middle);

    // The header overwritten: not a database any more.
    let header_database = TempDatabase::new("corrupt-header");
    let header = header_database.path().to_owned();
    let mut bytes = original;
    bytes[..16].copy_from_slice(b"garbage garbage!");
    std::fs::write(&header, &bytes).unwrap();
    let error = SqliteStore::open(&header).unwrap_err();
    assert!(
        matches!(error, OpenError::NotADeciderDatabase { .. }),
        "{error:?}"
    );
    remove_database(&header);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_opens_the_file_it_names() {
    let database = TempDatabase::new("url");
    let path = database.path().to_owned();
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).unwrap();
    let stream = StreamId::new("url-1").unwrap();
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("E", "{}")],
        )
        .await
        .unwrap();
    assert_eq!(store.path(), path);
    drop(store);
    remove_database(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_is_wal_with_full_sync_by_default_and_normal_on_request() {
    use decider_store_sqlite::{SqliteOptions, Synchronous};
    let settings = |store: SqliteStore| async move {
        store
            .write(|connection| {
                let mode: String = connection
                    .query_row("PRAGMA journal_mode", [], |row| row.get(0))
                    .unwrap();
                let sync: i64 = connection
                    .query_row("PRAGMA synchronous", [], |row| row.get(0))
                    .unwrap();
                let timeout: i64 = connection
                    .query_row("PRAGMA busy_timeout", [], |row| row.get(0))
                    .unwrap();
                (mode, sync, timeout)
            })
            .await
            .unwrap()
    };
    let database = TempDatabase::new("durability");
    // FULL is 2, NORMAL 1.
    assert_eq!(
        settings(database.open()).await,
        ("wal".to_owned(), 2, 5_000)
    );
    let normal = SqliteOptions {
        synchronous: Synchronous::Normal,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(database.path(), normal).unwrap();
    assert_eq!(settings(store).await, ("wal".to_owned(), 1, 5_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_schema_version_1_is_upgraded_on_open_and_keeps_its_events() {
    use decider_core::projection::{ControlAction, ProjectionControl};

    let database = TempDatabase::new("upgrade");
    let path = database.path().to_owned();
    let store = SqliteStore::open(&path).unwrap();
    let stream = StreamId::new("account-1").unwrap();
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![EventData::json("Opened", "{}")],
        )
        .await
        .unwrap();
    close(store).await;
    // What version 1 was: the tables of migrations 2 to 5 did not exist.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP TABLE projection_runners; DROP TABLE projection_requests; \
             DROP TABLE event_tags; DROP TABLE projection_versions; \
             DROP TABLE projection_partitions; PRAGMA user_version = 1;",
        )
        .unwrap();

    let store = SqliteStore::open(&path).unwrap();
    let events: Vec<_> = store
        .read_all(None, None, &EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let id = store
        .control()
        .request("p", ControlAction::Rebuild)
        .await
        .unwrap();
    assert_eq!(store.control().pending("p").await.unwrap()[0].id, id);
    let version: i64 = store
        .read(|connection| {
            connection
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .map_err(decider_store_sqlite::store_error)
        })
        .await
        .unwrap();
    assert_eq!(version, 5);
    assert!(
        store
            .control()
            .switch_version("g", None, "v2")
            .await
            .unwrap(),
        "version 4's table exists after the upgrade"
    );
    assert_eq!(
        store.control().claim_partition_count("p", 2).await.unwrap(),
        2,
        "version 5's table exists after the upgrade"
    );
}
