//! Projections on SQLite: checkpoints and dead letters in the store's file, leases in its
//! `leases` table, and [`SqliteTransactionalSink`], which applies a batch and moves the
//! checkpoint in one transaction — exactly once.
//!
//! Everything that writes runs on the store's writer thread, between group commits: SQLite
//! admits one writer per file, and a second write connection of our own would only wait for
//! the first.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use decider_core::projection::{
    CheckpointError, CheckpointStore, DeadLetter, DeadLetterStore, Lease, LeaseGuard, Sink,
    SinkError,
};
use decider_core::{Position, RecordedEvent, StoreError, StreamId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::store_error;
use crate::writer::micros_since_epoch;
use crate::{SqliteStore, sql};

/// Maps an SQLite error met inside a projection handler: a lock held past the busy timeout is
/// retried, anything else stops the projection. Return [`SinkError::Poison`] yourself for an
/// event that can never be handled.
pub fn handle_error(error: rusqlite::Error) -> SinkError {
    store_error(error).into()
}

// Positions are two u64 parts; SQLite integers are i64. The bits are kept as they are (a
// lossless round trip), since checkpoints are only compared for equality here.
fn to_sql(part: u64) -> i64 {
    part as i64
}

fn from_sql(commit: i64, prepare: i64) -> Position {
    Position::new(commit as u64, prepare as u64)
}

fn load_checkpoint(
    connection: &Connection,
    projection: &str,
) -> Result<Option<Position>, StoreError> {
    connection
        .prepare_cached(sql::LOAD_CHECKPOINT)
        .and_then(|mut statement| {
            statement
                .query_row([projection], |row| Ok(from_sql(row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(store_error)
}

/// Moves the checkpoint from `expected` to `next` with compare-and-set, inside the caller's
/// transaction if it has one. A checkpoint never moves backwards.
fn save_checkpoint(
    connection: &Connection,
    projection: &str,
    expected: Option<Position>,
    next: Position,
) -> Result<(), CheckpointError> {
    let (next_commit, next_prepare) = (to_sql(next.commit()), to_sql(next.prepare()));
    let changed = match expected {
        // Never backwards, even from the right place (compared here, on the unsigned parts).
        Some(expected) if next <= expected => Ok(0),
        Some(expected) => {
            connection
                .prepare_cached(sql::MOVE_CHECKPOINT)
                .and_then(|mut statement| {
                    statement.execute(params![
                        projection,
                        to_sql(expected.commit()),
                        to_sql(expected.prepare()),
                        next_commit,
                        next_prepare
                    ])
                })
        }
        None => connection
            .prepare_cached(sql::CREATE_CHECKPOINT)
            .and_then(|mut statement| {
                statement.execute(params![projection, next_commit, next_prepare])
            }),
    }
    .map_err(store_error)?;
    if changed == 1 {
        return Ok(());
    }
    Err(CheckpointError::Moved {
        projection: projection.to_owned(),
        expected,
        actual: load_checkpoint(connection, projection)?,
    })
}

fn delete_checkpoint(connection: &Connection, projection: &str) -> Result<(), StoreError> {
    connection
        .prepare_cached(sql::DELETE_CHECKPOINT)
        .and_then(|mut statement| statement.execute([projection]))
        .map(|_| ())
        .map_err(store_error)
}

fn record_dead_letter(connection: &Connection, letter: &DeadLetter) -> Result<(), StoreError> {
    connection
        .prepare_cached(sql::RECORD_DEAD_LETTER)
        .and_then(|mut statement| {
            statement.execute(params![
                letter.projection,
                letter.event_id.as_bytes().as_slice(),
                letter.stream.as_str(),
                to_sql(letter.revision),
                to_sql(letter.position.commit()),
                to_sql(letter.position.prepare()),
                letter.reason,
                micros_since_epoch(letter.failed_at),
            ])
        })
        .map(|_| ())
        .map_err(store_error)
}

fn delete_dead_letter(
    connection: &Connection,
    projection: &str,
    event_id: Uuid,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(sql::DELETE_DEAD_LETTER)
        .and_then(|mut statement| {
            statement.execute(params![projection, event_id.as_bytes().as_slice()])
        })
        .map(|_| ())
        .map_err(store_error)
}

fn immediate(connection: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)
}

fn commit(transaction: Transaction<'_>) -> Result<(), StoreError> {
    transaction.commit().map_err(store_error)
}

impl SqliteStore {
    /// Checkpoints in this file's `checkpoints` table, for a
    /// [`CheckpointedSink`](decider_core::projection::CheckpointedSink).
    pub fn checkpoints(&self) -> SqliteCheckpoints {
        SqliteCheckpoints(self.clone())
    }

    /// Dead letters in this file's `dead_letters` table.
    pub fn dead_letters(&self) -> SqliteDeadLetters {
        SqliteDeadLetters(self.clone())
    }

    /// Leases in this file's `leases` table: one active runner per projection across every
    /// process that opens the file.
    pub fn leases(&self) -> SqliteLeases {
        SqliteLeases {
            store: self.clone(),
            heartbeat: Duration::from_secs(1),
            expiry: Duration::from_secs(5),
        }
    }
}

/// Projection checkpoints in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteCheckpoints(SqliteStore);

impl CheckpointStore for SqliteCheckpoints {
    async fn load(&self, projection: &str) -> Result<Option<Position>, StoreError> {
        let projection = projection.to_owned();
        self.0
            .read(move |connection| load_checkpoint(connection, &projection))
            .await
    }

    async fn save(
        &self,
        projection: &str,
        expected: Option<Position>,
        next: Position,
    ) -> Result<(), CheckpointError> {
        let projection = projection.to_owned();
        self.0
            .write(move |connection| save_checkpoint(connection, &projection, expected, next))
            .await?
    }

    async fn reset(&self, projection: &str) -> Result<(), StoreError> {
        let projection = projection.to_owned();
        self.0
            .write(move |connection| delete_checkpoint(connection, &projection))
            .await?
    }
}

/// Dead letters in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteDeadLetters(SqliteStore);

impl DeadLetterStore for SqliteDeadLetters {
    async fn record(&self, letter: DeadLetter) -> Result<(), StoreError> {
        self.0
            .write(move |connection| record_dead_letter(connection, &letter))
            .await?
    }

    async fn list(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let projection = projection.to_owned();
        self.0
            .read(move |connection| list_dead_letters(connection, &projection))
            .await
    }

    async fn remove(&self, projection: &str, event_id: Uuid) -> Result<(), StoreError> {
        let projection = projection.to_owned();
        self.0
            .write(move |connection| delete_dead_letter(connection, &projection, event_id))
            .await?
    }
}

fn list_dead_letters(
    connection: &Connection,
    projection: &str,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut statement = connection
        .prepare_cached(sql::LIST_DEAD_LETTERS)
        .map_err(store_error)?;
    let rows = statement
        .query_map([projection], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, i64>(6)?,
            ))
        })
        .map_err(store_error)?;
    rows.map(|row| {
        let (id, stream, revision, commit, prepare, reason, failed_at) =
            row.map_err(store_error)?;
        let bad = |what: &str| StoreError::backend(format!("dead letter of {projection}: {what}"));
        Ok(DeadLetter {
            projection: projection.to_owned(),
            event_id: Uuid::from_slice(&id).map_err(|_| bad("invalid event id"))?,
            stream: StreamId::new(stream).map_err(|_| bad("invalid stream id"))?,
            revision: revision as u64,
            position: from_sql(commit, prepare),
            reason,
            failed_at: SystemTime::UNIX_EPOCH
                + Duration::from_micros(u64::try_from(failed_at).unwrap_or(0)),
        })
    })
    .collect()
}

/// Leases as rows of the `leases` table: a holder writes its owner id and an expiry, renews the
/// expiry with a heartbeat, and deletes the row when it lets go. A lease whose holder died
/// expires and is taken by the next runner — at once, when the holder was a process on the same
/// machine that is provably gone (its pid has no process, or one started at another time); a
/// holder that cannot renew (or finds another owner) reports the lease lost.
///
/// Expiries are compared on the wall clocks of the processes sharing the file: keep them in
/// step (NTP), and keep `expiry` well above the heartbeat plus any clock skew.
#[derive(Debug, Clone)]
pub struct SqliteLeases {
    store: SqliteStore,
    heartbeat: Duration,
    expiry: Duration,
}

impl SqliteLeases {
    /// The same leases renewed every `heartbeat` and expiring `expiry` after the last renewal
    /// (defaults 1 s and 5 s). A waiting runner also looks every `heartbeat`.
    pub fn with_timing(mut self, heartbeat: Duration, expiry: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.expiry = expiry;
        self
    }
}

fn millis_since_epoch() -> i64 {
    micros_since_epoch(SystemTime::now()) / 1_000
}

fn expiry_millis(expiry: Duration) -> i64 {
    i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX)
}

/// Lets go of a lease when its guard is dropped.
struct Held {
    store: SqliteStore,
    projection: String,
    owner: String,
    heartbeat: tokio::task::AbortHandle,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.heartbeat.abort();
        let (projection, owner) = (self.projection.clone(), self.owner.clone());
        // Queued, not awaited (a drop cannot wait): the writer deletes the row soon. If the
        // store is gone already, the row simply expires.
        let released = self.store.shared.writer.submit(Box::new(move |connection| {
            let deleted = connection
                .prepare_cached(sql::RELEASE_LEASE)
                .and_then(|mut statement| statement.execute([&projection, &owner]));
            if let Err(error) = deleted {
                tracing::warn!(projection, %error, "cannot release a lease; it will expire");
            }
        }));
        if released.is_err() {
            tracing::debug!(projection = self.projection, "lease left to expire");
        }
    }
}

/// Takes `projection`'s lease for `owner` if it is free, expired, already `owner`'s, or held by
/// a process proven dead (see [`crate::owner`]: a holder killed on this machine need not be
/// waited for). Returns whether it is `owner`'s now.
fn take_lease(
    connection: &Connection,
    projection: &str,
    owner: &str,
    expiry: i64,
) -> Result<bool, StoreError> {
    let now = millis_since_epoch();
    let until = now.saturating_add(expiry);
    let taken = connection
        .prepare_cached(sql::TAKE_LEASE)
        .and_then(|mut statement| statement.execute(params![projection, owner, until, now]))
        .map_err(store_error)?;
    if taken == 1 {
        return Ok(true);
    }
    let holder: Option<String> = connection
        .prepare_cached(sql::LEASE_OWNER)
        .and_then(|mut statement| {
            statement
                .query_row([projection], |row| row.get(0))
                .optional()
        })
        .map_err(store_error)?;
    let Some(holder) = holder.filter(|holder| crate::owner::is_provably_dead(holder)) else {
        return Ok(false);
    };
    let taken = connection
        .prepare_cached(sql::TAKE_LEASE_FROM)
        .and_then(|mut statement| statement.execute(params![projection, holder, owner, until]))
        .map_err(store_error)?;
    if taken == 1 {
        tracing::info!(
            projection,
            holder,
            "lease taken from a holder whose process is gone"
        );
    }
    Ok(taken == 1)
}

impl SqliteLeases {
    /// Takes the lease of `projection` for a new owner if it is free (or its holder is gone);
    /// the owner if it did.
    async fn take(&self, projection: &str) -> Result<Option<String>, StoreError> {
        let owner = crate::owner::new_owner();
        let expiry = expiry_millis(self.expiry);
        let (name, who) = (projection.to_owned(), owner.clone());
        let taken = self
            .store
            .write(move |connection| take_lease(connection, &name, &who, expiry))
            .await??;
        Ok(taken.then_some(owner))
    }

    /// The guard of a lease just taken, with its heartbeat.
    fn hold(&self, projection: &str, owner: String) -> LeaseGuard {
        tracing::info!(projection, "lease acquired");
        let (lost, watch_lost) = watch::channel(false);
        let heartbeat = tokio::spawn(renew(
            self.store.clone(),
            projection.to_owned(),
            owner.clone(),
            self.heartbeat,
            expiry_millis(self.expiry),
            lost,
        ));
        LeaseGuard::new(
            watch_lost,
            Held {
                store: self.store.clone(),
                projection: projection.to_owned(),
                owner,
                heartbeat: heartbeat.abort_handle(),
            },
        )
    }
}

impl Lease for SqliteLeases {
    async fn acquire(&self, projection: &str) -> Result<LeaseGuard, StoreError> {
        loop {
            if let Some(owner) = self.take(projection).await? {
                return Ok(self.hold(projection, owner));
            }
            tokio::time::sleep(self.heartbeat).await;
        }
    }

    async fn try_acquire(&self, projection: &str) -> Result<Option<LeaseGuard>, StoreError> {
        Ok(self
            .take(projection)
            .await?
            .map(|owner| self.hold(projection, owner)))
    }
}

/// The heartbeat: renews the lease until it is lost (another owner holds it, or it could not be
/// renewed before it expired), then says so.
async fn renew(
    store: SqliteStore,
    projection: String,
    owner: String,
    heartbeat: Duration,
    expiry: i64,
    lost: watch::Sender<bool>,
) {
    let mut held_until = millis_since_epoch().saturating_add(expiry);
    loop {
        tokio::time::sleep(heartbeat).await;
        let (name, who) = (projection.clone(), owner.clone());
        let renewed = store
            .write(move |connection| {
                let until = millis_since_epoch().saturating_add(expiry);
                connection
                    .prepare_cached(sql::RENEW_LEASE)
                    .and_then(|mut statement| statement.execute(params![name, who, until]))
                    .map(|changed| (changed, until))
                    .map_err(store_error)
            })
            .await
            .and_then(|renewed| renewed);
        match renewed {
            Ok((1, until)) => held_until = until,
            Ok(_) => {
                tracing::warn!(projection, "lease lost: another runner holds it");
                let _ = lost.send(true);
                return;
            }
            Err(error) if millis_since_epoch() < held_until => {
                tracing::debug!(projection, %error, "lease renewal failed; trying again");
            }
            Err(error) => {
                tracing::warn!(projection, %error, "lease lost: not renewed before it expired");
                let _ = lost.send(true);
                return;
            }
        }
    }
}

/// A handler of event batches that writes its read model in the transaction it is given, in the
/// store's file.
///
/// It is blocking code: it runs on the store's writer thread, with the write lock held, so it
/// should do only its writes (no network calls, no waiting).
pub trait SqliteTransactionalHandler: Send + Sync + 'static {
    /// Applies `batch` (in order) inside `transaction`. The sink writes the checkpoint in the
    /// same transaction and commits: the batch is applied exactly once.
    fn handle(
        &self,
        transaction: &Transaction<'_>,
        batch: &[RecordedEvent],
    ) -> Result<(), SinkError>;

    /// Empties the read model inside `transaction`, for a rebuild. The default does nothing.
    fn reset(&self, _transaction: &Transaction<'_>) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A shared handler: keep an `Arc` to inspect it while the runner feeds it.
impl<T: SqliteTransactionalHandler> SqliteTransactionalHandler for Arc<T> {
    fn handle(
        &self,
        transaction: &Transaction<'_>,
        batch: &[RecordedEvent],
    ) -> Result<(), SinkError> {
        (**self).handle(transaction, batch)
    }

    fn reset(&self, transaction: &Transaction<'_>) -> Result<(), SinkError> {
        (**self).reset(transaction)
    }
}

/// The exactly-once sink: the handler's writes, the checkpoint (compare-and-set against the
/// previous position) and any dead letter commit together, or not at all.
#[derive(Debug)]
pub struct SqliteTransactionalSink<H> {
    store: SqliteStore,
    handler: Arc<H>,
}

impl<H> SqliteTransactionalSink<H> {
    /// A sink running `handler` in transactions on `store`'s writer, keeping checkpoints and
    /// dead letters in its file.
    pub fn new(store: SqliteStore, handler: H) -> Self {
        Self {
            store,
            handler: Arc::new(handler),
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

impl<H: SqliteTransactionalHandler> Sink for SqliteTransactionalSink<H> {
    async fn checkpoint(&self, projection: &str) -> Result<Option<Position>, SinkError> {
        Ok(self.store.checkpoints().load(projection).await?)
    }

    async fn apply(
        &self,
        projection: &str,
        batch: &[RecordedEvent],
        previous: Option<Position>,
    ) -> Result<(), SinkError> {
        let Some(last) = batch.last().map(|event| event.position) else {
            return Ok(());
        };
        let (handler, batch, projection) =
            (self.handler.clone(), batch.to_vec(), projection.to_owned());
        self.store
            .write(move |connection| {
                let transaction = immediate(connection)?;
                handler.handle(&transaction, &batch)?;
                match save_checkpoint(&transaction, &projection, previous, last) {
                    Ok(()) => {}
                    // An earlier attempt of this very batch committed and only its reply was
                    // lost: the batch is applied, once. (This transaction rolls back when
                    // dropped.)
                    Err(CheckpointError::Moved { actual, .. }) if actual == Some(last) => {
                        return Ok(());
                    }
                    Err(error) => return Err(SinkError::from(error)),
                }
                Ok(commit(transaction)?)
            })
            .await?
    }

    async fn dead_letter(
        &self,
        projection: &str,
        event: &RecordedEvent,
        reason: &str,
        previous: Option<Position>,
    ) -> Result<(), SinkError> {
        let letter = DeadLetter::new(projection, event, reason);
        let position = event.position;
        self.store
            .write(move |connection| {
                let transaction = immediate(connection)?;
                record_dead_letter(&transaction, &letter)?;
                save_checkpoint(&transaction, &letter.projection, previous, position)?;
                Ok(commit(transaction)?)
            })
            .await?
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, SinkError> {
        Ok(self.store.dead_letters().list(projection).await?)
    }

    async fn redrive(&self, projection: &str, event: &RecordedEvent) -> Result<(), SinkError> {
        let (handler, event, projection) =
            (self.handler.clone(), event.clone(), projection.to_owned());
        self.store
            .write(move |connection| {
                let transaction = immediate(connection)?;
                handler.handle(&transaction, std::slice::from_ref(&event))?;
                delete_dead_letter(&transaction, &projection, event.id)?;
                Ok(commit(transaction)?)
            })
            .await?
    }

    async fn reset(&self, projection: &str) -> Result<(), SinkError> {
        let (handler, projection) = (self.handler.clone(), projection.to_owned());
        self.store
            .write(move |connection| {
                let transaction = immediate(connection)?;
                handler.reset(&transaction)?;
                delete_checkpoint(&transaction, &projection)?;
                Ok(commit(transaction)?)
            })
            .await?
    }
}
