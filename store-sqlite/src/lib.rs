//! # decider-store-sqlite
//!
//! The durable embedded [`EventStore`]: one SQLite file (bundled SQLite, nothing to install)
//! holding the events, projection checkpoints, dead letters, snapshots, leases — and, through
//! [`SqliteTransactionalSink`], your read models, written exactly once.
//!
//! - **Durability first**: WAL mode with `synchronous=FULL` by default, so an acknowledged
//!   append survives a power loss. [`Synchronous::Normal`] trades the last few transactions on
//!   power loss or an OS crash (never on a process crash, never corruption) for speed.
//! - **One writer, group commit**: a thread of its own owns the write connection; every append
//!   queued when it looks goes into one transaction, each in its own `SAVEPOINT`, so one
//!   append's conflict fails only that append, and one `fsync` serves them all. With nothing
//!   queued an append commits alone, without lingering.
//! - **Readers** are a small pool of connections used on blocking threads: no SQLite call ever
//!   runs on the async runtime's workers. Reads and subscriptions are pulled page by page.
//! - **Global order**: SQLite commits one writer at a time, so the sequence assigned under the
//!   write lock (`INTEGER PRIMARY KEY`) is gap-free in commit order; positions are
//!   `Position::new(seq, seq)`.
//! - **Live subscriptions** are woken at once by this process's commits, and within about
//!   50 ms by other processes' commits to the same file (`PRAGMA data_version`).
//! - **Several processes** may share one file: SQLite's locks serialise their writers (each
//!   waits up to the busy timeout), and [`SqliteLeases`] keep one active runner per projection
//!   across them, with a heartbeat and an expiry so that a dead holder's lease passes on.
//! - The file is marked as a decider database (`PRAGMA application_id`) and versioned
//!   (`PRAGMA user_version`): a file that is not one, or was written by newer code, is refused
//!   at open with an [`OpenError`], and nothing is written to it.
//!
//! The store runs its blocking work on its own threads and on tokio's blocking pool: use it
//! from inside a tokio runtime.
//!
//! ```
//! use decider_core::{EventData, EventStore, ExpectedVersion, StreamId};
//! use decider_store_sqlite::SqliteStore;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! # let dir = std::env::temp_dir().join(format!("decider-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let store = SqliteStore::open(dir.join("app.db"))?; // created on first use
//! let stream = StreamId::new("account-1")?;
//! let written = store
//!     .append(&stream, ExpectedVersion::NoStream, vec![EventData::json("Opened", "{}")])
//!     .await?;
//! assert_eq!(written.next_revision, 1);
//! # drop(store);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]

mod catalog;
mod control;
mod dcb;
mod error;
mod open;
mod owner;
mod projection;
mod reads;
mod snapshots;
mod sql;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decider_core::{
    AppendResult, Direction, EventData, EventFilter, EventStore, EventStream, ExpectedVersion,
    Position, StoreError, StreamFrom, StreamId, Subscription,
};
use rusqlite::Connection;
use tokio::sync::watch;

pub use crate::control::SqliteControl;
pub use crate::error::{OpenError, store_error};
pub use crate::projection::{
    SqliteCheckpoints, SqliteDeadLetters, SqliteLeases, SqliteTransactionalHandler,
    SqliteTransactionalSink, handle_error,
};
pub(crate) use open::open_reader;
/// The SQLite binding the store is built on, for handlers that write read models in its
/// transactions: use this one, so that the types match.
pub use rusqlite;

/// How SQLite syncs commits to disk (`PRAGMA synchronous`, in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is synced to disk before the append returns: an acknowledged append
    /// survives a power loss or an OS crash. The default.
    #[default]
    Full,
    /// Commits are synced at WAL checkpoints only. Faster; a process crash loses nothing, but a
    /// power loss or an OS crash may lose the last transactions acknowledged before it. The
    /// database is never corrupted either way.
    Normal,
}

/// How a [`SqliteStore`] is set up.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of commits. Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// How long a statement waits for a lock held by another connection (another process's
    /// writer, say) before failing with `Unavailable`. Default 5 s.
    pub busy_timeout: Duration,
    /// Events fetched per query by reads and subscriptions. Default 1,000.
    pub page_size: u32,
    /// Read connections kept open for reuse. Default 4.
    pub readers: usize,
    /// A cap on the file's size, in pages of 4 KiB (`PRAGMA max_page_count`): an append that
    /// would grow the file past it fails as a full disk does, and writes nothing. Default none.
    pub max_page_count: Option<u64>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            page_size: 1_000,
            readers: 4,
            max_page_count: None,
        }
    }
}

/// An SQLite event store on one file. Clones share the writer and the readers.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    path: PathBuf,
    options: SqliteOptions,
    writer: writer::Writer,
    readers: Mutex<Vec<Connection>>,
    /// Bumped after every commit that wrote events (ours, or another process's when seen).
    appended: Arc<watch::Sender<u64>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the decider database at `path` with default options, creating it if the file
    /// does not exist or is empty.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens the decider database at `path` with `options`. Creates the schema in a new or empty
    /// file, upgrades an older one, and refuses (writing nothing) a file that is not a decider
    /// database or was written by newer code.
    ///
    /// Opening is blocking file I/O (a migration, at worst): do it at start-up, or inside
    /// `spawn_blocking`.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        if options.page_size == 0 || options.readers == 0 {
            return Err(StoreError::InvalidInput(
                "page_size and readers must be at least 1".to_owned(),
            )
            .into());
        }
        let write_connection = open::open_writer(&path, &options)?;
        let watch_connection = open_reader(&path, &options)?;
        let appended = Arc::new(watch::channel(0).0);
        let writer = writer::Writer::start(write_connection, appended.clone())?;
        let shared = Arc::new(Shared {
            path,
            options,
            writer,
            readers: Mutex::new(Vec::new()),
            appended,
        });
        reads::watch_other_processes(Arc::downgrade(&shared), watch_connection)?;
        Ok(Self { shared })
    }

    /// Opens the database a `sqlite://PATH` URL names (`sqlite:///abs/app.db`,
    /// `sqlite://data/app.db`), with default options.
    pub fn connect(url: &str) -> Result<Self, OpenError> {
        Self::open(path_of_url(url)?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Runs `work` on the write connection, on the writer thread, between group commits; `work`
    /// opens and commits its own transaction. The store's own projection types use it; it is
    /// here for read models of your own that are written outside a projection.
    pub async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        self.shared.writer.run(work).await
    }
}

/// The file path of a `sqlite://PATH` URL.
fn path_of_url(url: &str) -> Result<PathBuf, OpenError> {
    let invalid = |reason: &str| OpenError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let path = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| invalid("it must start with sqlite://"))?;
    if path.is_empty() {
        return Err(invalid("it names no file"));
    }
    if path.contains('?') || path.contains('#') {
        return Err(invalid(
            "query parameters are not supported; use SqliteStore::open_with for options",
        ));
    }
    if path == ":memory:" {
        return Err(invalid("in-memory databases are not supported; use a file"));
    }
    Ok(PathBuf::from(path))
}

impl SqliteStore {
    /// [`EventStore::append`] without its metrics, which [`decider_core::measured_append`]
    /// records around it.
    async fn append_unmeasured(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        let events = writer::prepare(stream, events)?;
        self.shared
            .writer
            .append(stream.clone(), expected, events, None)
            .await
    }
}

impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        decider_core::measured_append(
            "sqlite",
            events.len(),
            self.append_unmeasured(stream, expected, events),
        )
        .await
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamFrom,
        direction: Direction,
        limit: Option<u64>,
    ) -> impl EventStream + use<> {
        reads::read_stream(self.clone(), stream.clone(), from, direction, limit)
    }

    fn read_all(
        &self,
        after: Option<Position>,
        limit: Option<u64>,
        filter: &EventFilter,
    ) -> impl EventStream + use<> {
        reads::read_all(self.clone(), after, limit, filter.clone())
    }

    async fn head_position(&self) -> Result<Option<Position>, StoreError> {
        let head: Option<i64> = self
            .read(|connection| {
                connection
                    .query_row(sql::HEAD_POSITION, [], |row| row.get(0))
                    .map_err(store_error)
            })
            .await?;
        Ok(head.map(|seq| Position::new(seq as u64, seq as u64)))
    }

    fn subscribe_all(
        &self,
        after: Option<Position>,
        filter: &EventFilter,
    ) -> impl Subscription + use<> {
        reads::subscribe_all(self.clone(), after, filter.clone())
    }

    fn subscribe_stream(&self, stream: &StreamId, after: Option<u64>) -> impl Subscription + use<> {
        reads::subscribe_stream(self.clone(), stream.clone(), after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_file() {
        assert_eq!(
            path_of_url("sqlite:///var/app.db").unwrap(),
            PathBuf::from("/var/app.db")
        );
        assert_eq!(
            path_of_url("sqlite://data/app.db").unwrap(),
            PathBuf::from("data/app.db")
        );
        for bad in [
            "postgres://x",
            "sqlite://",
            "sqlite://:memory:",
            "sqlite://a.db?mode=ro",
        ] {
            assert!(
                matches!(path_of_url(bad), Err(OpenError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }
}
