//! Opening the file: refuse what is not ours, create or upgrade the schema, set up each
//! connection (WAL, synchronous, busy timeout).

use std::path::Path;

use decider_core::StoreError;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::error::{OpenError, store_error};
use crate::{SqliteOptions, Synchronous, sql};

fn open_flags() -> OpenFlags {
    // NO_MUTEX: each connection is used by one thread at a time (the writer's, or one
    // blocking task's), so SQLite's own locking of a connection is not needed.
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// What an error met while opening `path` means.
fn open_error(path: &Path, error: rusqlite::Error) -> OpenError {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => OpenError::NotADeciderDatabase {
            path: path.to_owned(),
            reason: "the file is not an SQLite database".to_owned(),
        },
        Some(ErrorCode::ReadOnly) => OpenError::ReadOnly {
            path: path.to_owned(),
            reason: error.to_string(),
        },
        Some(ErrorCode::CannotOpen) => OpenError::CannotOpen {
            path: path.to_owned(),
            reason: format!("{error} (does the folder exist, and may this process write to it?)"),
        },
        _ => OpenError::Store(store_error(error)),
    }
}

fn connect(path: &Path, options: &SqliteOptions) -> Result<Connection, OpenError> {
    let connection =
        Connection::open_with_flags(path, open_flags()).map_err(|e| open_error(path, e))?;
    connection
        .busy_timeout(options.busy_timeout)
        .map_err(|e| open_error(path, e))?;
    // SQLite opens a file it may not write read-only without saying so; the store must write.
    if connection
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(|e| open_error(path, e))?
    {
        return Err(OpenError::ReadOnly {
            path: path.to_owned(),
            reason: "the file is not writable by this process".to_owned(),
        });
    }
    add_partition_function(&connection).map_err(|e| open_error(path, e))?;
    Ok(connection)
}

/// `decider_partition(stream_id, count)`: the partition of a stream among `count`
/// ([`decider_core::projection::Partition::of`]), for reads by partition. Computed by this code
/// rather than stored, so that files of every schema version answer it the same.
fn add_partition_function(connection: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    connection.create_scalar_function(
        "decider_partition",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |context| {
            let stream: String = context.get(0)?;
            let count: i64 = context.get(1)?;
            let partition = decider_core::StreamId::new(stream)
                .ok()
                .zip(u32::try_from(count).ok())
                .and_then(|(stream, count)| {
                    decider_core::projection::Partition::of(&stream, count).ok()
                });
            Ok(partition.map(|partition| i64::from(partition.index())))
        },
    )
}

fn pragma_i64(connection: &Connection, path: &Path, pragma: &str) -> Result<i64, OpenError> {
    connection
        .query_row(&format!("PRAGMA {pragma}"), [], |row| row.get(0))
        .map_err(|e| open_error(path, e))
}

/// Checks that `connection`'s file is a decider database this code can read, or empty.
/// Returns whether the schema must be created or upgraded.
fn check_file(connection: &Connection, path: &Path) -> Result<bool, OpenError> {
    let application_id = pragma_i64(connection, path, "application_id")?;
    let version = pragma_i64(connection, path, "user_version")?;
    if application_id == i64::from(sql::APPLICATION_ID) {
        let found = u32::try_from(version).unwrap_or(u32::MAX);
        if found > sql::SCHEMA_VERSION {
            return Err(OpenError::SchemaTooNew {
                path: path.to_owned(),
                found,
                supported: sql::SCHEMA_VERSION,
            });
        }
        return Ok(found < sql::SCHEMA_VERSION);
    }
    if application_id != 0 {
        return Err(OpenError::NotADeciderDatabase {
            path: path.to_owned(),
            reason: format!(
                "it belongs to another application (application id {application_id:#x})"
            ),
        });
    }
    let has_objects: bool = connection
        .query_row(sql::HAS_OBJECTS, [], |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    if has_objects {
        // Someone else's SQLite database: creating our tables beside theirs would be a
        // surprise to them and to us.
        return Err(OpenError::NotADeciderDatabase {
            path: path.to_owned(),
            reason: "it holds tables of another application".to_owned(),
        });
    }
    Ok(true)
}

/// Creates or upgrades the schema, in one transaction under the write lock; another process
/// doing the same at the same moment waits, then finds nothing left to do.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| open_error(path, e))?;
    if !check_file(&transaction, path)? {
        return Ok(());
    }
    let applied = pragma_i64(&transaction, path, "user_version")?;
    let applied = usize::try_from(applied).unwrap_or(0);
    for (index, migration) in sql::MIGRATIONS.iter().enumerate().skip(applied) {
        tracing::info!(path = %path.display(), version = index + 1, "applying SQLite migration");
        transaction
            .execute_batch(migration)
            .map_err(|e| open_error(path, e))?;
    }
    transaction
        .execute_batch(&format!(
            "PRAGMA application_id = {}; PRAGMA user_version = {};",
            sql::APPLICATION_ID,
            sql::SCHEMA_VERSION
        ))
        .map_err(|e| open_error(path, e))?;
    transaction.commit().map_err(|e| open_error(path, e))
}

/// Opens the write connection: checks the file, switches it to WAL, creates or upgrades the
/// schema.
pub(crate) fn open_writer(path: &Path, options: &SqliteOptions) -> Result<Connection, OpenError> {
    let mut connection = connect(path, options)?;
    // Checked before anything is written: a foreign file stays untouched, journal mode included.
    let needs_migration = check_file(&connection, path)?;
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Store(StoreError::backend(format!(
            "{}: SQLite cannot use WAL mode here (journal mode stays {mode}); is it on a \
             network file system?",
            path.display()
        ))));
    }
    let synchronous = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    connection
        .execute_batch(&format!("PRAGMA synchronous = {synchronous};"))
        .map_err(|e| open_error(path, e))?;
    if let Some(pages) = options.max_page_count {
        connection
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| open_error(path, e))?;
    }
    if needs_migration {
        migrate(&mut connection, path)?;
    }
    Ok(connection)
}

/// Opens a read connection; the file was checked by [`open_writer`].
pub(crate) fn open_reader(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let connection = connect(path, options).map_err(StoreError::from)?;
    // A reader never writes: saying so turns a bug into an error instead of a write.
    connection
        .execute_batch("PRAGMA query_only = 1;")
        .map_err(store_error)?;
    Ok(connection)
}
