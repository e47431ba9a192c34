//! How SQLite failures become [`StoreError`]s, and why a file is refused at open.
//!
//! - A write lock held by another connection past the busy timeout is `Unavailable`: it passes.
//! - A full disk (`SQLITE_FULL`, also a `max_page_count` reached) is `Backend`: retrying soon
//!   fails the same way, someone has to free space. The failed write is rolled back whole.
//! - A corrupt file, a file that is not a database, a read-only file are `Backend` too, with a
//!   message saying which.

use std::path::PathBuf;

use decider_core::StoreError;
use rusqlite::ErrorCode;

/// Why [`SqliteStore::open`](crate::SqliteStore::open) refused a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file is not a decider database: not SQLite at all, or an SQLite database of someone
    /// else's (tables of its own, or another application id). Nothing was written to it.
    #[error("{path}: not a decider database ({reason}); nothing was changed")]
    NotADeciderDatabase {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The file was written by a newer version of this crate, whose schema this code does not
    /// know.
    #[error(
        "{path}: schema version {found} is newer than {supported}, the newest this code knows; \
         upgrade decider-store-sqlite"
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// The file's schema version.
        found: u32,
        /// The newest version this code knows.
        supported: u32,
    },
    /// The file (or its folder) cannot be written: the store needs to write the events, the
    /// write-ahead log and its index beside it.
    #[error("{path}: cannot open for writing: {reason}")]
    ReadOnly {
        /// The file.
        path: PathBuf,
        /// What SQLite or the file system said.
        reason: String,
    },
    /// The file cannot be opened or created (its folder is missing, say).
    #[error("{path}: cannot open or create the database: {reason}")]
    CannotOpen {
        /// The file.
        path: PathBuf,
        /// What SQLite or the file system said.
        reason: String,
    },
    /// A `sqlite://` URL that does not name a file.
    #[error("invalid SQLite URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Opening failed otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<OpenError> for StoreError {
    fn from(error: OpenError) -> Self {
        match error {
            OpenError::Store(error) => error,
            OpenError::InvalidUrl { .. } => StoreError::InvalidInput(error.to_string()),
            other => StoreError::backend(other.to_string()),
        }
    }
}

/// Maps an SQLite error, for code that runs its own statements beside the store (a
/// [`SqliteTransactionalHandler`](crate::SqliteTransactionalHandler)'s read model, say) and wants
/// the store's classification. SQLite's error stays reachable as the result's
/// [`source`](std::error::Error::source).
pub fn store_error(error: rusqlite::Error) -> StoreError {
    match classify(&error) {
        Class::Unavailable(message) => StoreError::unavailable_caused_by(message, error),
        Class::InvalidInput(message) => StoreError::InvalidInput(message),
        Class::Backend(message) => StoreError::backend_caused_by(message, error),
    }
}

/// Whether [`store_error`] would call `error` retryable, without taking it.
pub(crate) fn is_retryable(error: &rusqlite::Error) -> bool {
    matches!(classify(error), Class::Unavailable(_))
}

/// What an SQLite error is, and the message that says so.
enum Class {
    Unavailable(String),
    InvalidInput(String),
    Backend(String),
}

fn classify(error: &rusqlite::Error) -> Class {
    let Some(code) = error.sqlite_error_code() else {
        return Class::Backend(format!("SQLite client error: {error}"));
    };
    match code {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Class::Unavailable(format!(
            "SQLite: the database is locked by another connection past the busy timeout: {error}"
        )),
        ErrorCode::DiskFull => Class::Backend(format!(
            "SQLite: the database or disk is full (SQLITE_FULL); the failed write was rolled \
             back whole. Free disk space (or raise max_page_count) and retry: {error}"
        )),
        ErrorCode::DatabaseCorrupt => Class::Backend(format!(
            "SQLite: the database file is corrupt (SQLITE_CORRUPT); restore it from a backup: \
             {error}"
        )),
        ErrorCode::NotADatabase => Class::Backend(format!(
            "SQLite: the file is not a database (SQLITE_NOTADB): {error}"
        )),
        ErrorCode::ReadOnly => Class::Backend(format!(
            "SQLite: the database is read-only (SQLITE_READONLY): {error}"
        )),
        ErrorCode::CannotOpen => Class::Backend(format!(
            "SQLite: cannot open the database file (SQLITE_CANTOPEN): {error}"
        )),
        ErrorCode::TooBig => Class::InvalidInput(format!(
            "SQLite: a value is too big (SQLITE_TOOBIG): {error}"
        )),
        _ => Class::Backend(format!("SQLite: {error}")),
    }
}

/// Whether `error` is a unique-constraint failure (an event id taken already).
pub(crate) fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}
