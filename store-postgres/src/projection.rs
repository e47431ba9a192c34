//! Projections on PostgreSQL: checkpoints and dead letters in the store's schema, a lease held as
//! an advisory lock on a dedicated connection, and [`PgTransactionalSink`], which applies a batch
//! and moves the checkpoint in one transaction — exactly once.

use std::future::Future;
use std::time::SystemTime;

use decider_core::projection::{
    CheckpointError, CheckpointStore, DeadLetter, DeadLetterStore, Lease, LeaseGuard, Sink,
    SinkError,
};
use decider_core::{Position, RecordedEvent, StoreError, StreamId};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::PostgresStore;
use crate::connect::ConnectionSettings;
use crate::error::{from_pg, from_pool};
use crate::sql;

/// Maps a driver error met inside a projection handler: lost connections and the like are
/// retried, anything else stops the projection. Return [`SinkError::Poison`] yourself for an
/// event that can never be handled.
pub fn handle_error(error: tokio_postgres::Error) -> SinkError {
    from_pg(error).into()
}

pub(crate) fn position(transaction: i64, global: i64) -> Position {
    Position::new(transaction as u64, global as u64)
}

pub(crate) fn params(position: Option<Position>) -> (Option<i64>, Option<i64>) {
    match position {
        Some(p) => (Some(p.commit() as i64), Some(p.prepare() as i64)),
        None => (None, None),
    }
}

/// Runs `statement` on `client` (a connection or a transaction).
async fn execute(
    client: &impl deadpool_postgres::GenericClient,
    statement: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let prepared = client.prepare_cached(statement).await.map_err(from_pg)?;
    client.execute(&prepared, params).await.map_err(from_pg)
}

async fn load_checkpoint(
    client: &impl deadpool_postgres::GenericClient,
    queries: &ProjectionQueries,
    projection: &str,
) -> Result<Option<Position>, StoreError> {
    let statement = client
        .prepare_cached(&queries.load_checkpoint)
        .await
        .map_err(from_pg)?;
    let row = client
        .query_opt(&statement, &[&projection])
        .await
        .map_err(from_pg)?;
    Ok(row.map(|row| position(row.get(0), row.get(1))))
}

/// Moves the checkpoint from `expected` to `next` with compare-and-set, inside `client`'s
/// transaction if it has one. A checkpoint never moves backwards.
async fn save_checkpoint(
    client: &impl deadpool_postgres::GenericClient,
    queries: &ProjectionQueries,
    projection: &str,
    expected: Option<Position>,
    next: Position,
) -> Result<(), CheckpointError> {
    let (next_transaction, next_global) = (next.commit() as i64, next.prepare() as i64);
    let changed = match params(expected) {
        (Some(transaction), Some(global)) => {
            execute(
                client,
                &queries.move_checkpoint,
                &[
                    &projection,
                    &transaction,
                    &global,
                    &next_transaction,
                    &next_global,
                ],
            )
            .await?
        }
        _ => {
            execute(
                client,
                &queries.create_checkpoint,
                &[&projection, &next_transaction, &next_global],
            )
            .await?
        }
    };
    if changed == 1 {
        return Ok(());
    }
    Err(CheckpointError::Moved {
        projection: projection.to_owned(),
        expected,
        actual: load_checkpoint(client, queries, projection).await?,
    })
}

/// The projection statements, with the schema filled in.
#[derive(Debug)]
pub(crate) struct ProjectionQueries {
    load_checkpoint: String,
    create_checkpoint: String,
    move_checkpoint: String,
    delete_checkpoint: String,
    record_dead_letter: String,
    list_dead_letters: String,
    delete_dead_letter: String,
}

impl ProjectionQueries {
    pub(crate) fn new(quoted_schema: &str) -> Self {
        let q = |statement: &str| sql::in_schema(statement, quoted_schema);
        Self {
            load_checkpoint: q(sql::LOAD_CHECKPOINT),
            create_checkpoint: q(sql::CREATE_CHECKPOINT),
            move_checkpoint: q(sql::MOVE_CHECKPOINT),
            delete_checkpoint: q(sql::DELETE_CHECKPOINT),
            record_dead_letter: q(sql::RECORD_DEAD_LETTER),
            list_dead_letters: q(sql::LIST_DEAD_LETTERS),
            delete_dead_letter: q(sql::DELETE_DEAD_LETTER),
        }
    }
}

impl PostgresStore {
    fn projection_queries(&self) -> &ProjectionQueries {
        &self.shared.projection_queries
    }

    /// Checkpoints in this store's `checkpoints` table, for a
    /// [`CheckpointedSink`](decider_core::projection::CheckpointedSink).
    pub fn checkpoints(&self) -> PgCheckpoints {
        PgCheckpoints(self.clone())
    }

    /// Dead letters in this store's `dead_letters` table.
    pub fn dead_letters(&self) -> PgDeadLetters {
        PgDeadLetters(self.clone())
    }

    /// Leases held as advisory locks on dedicated connections, so that one runner per projection
    /// is active across processes. Needs the connection settings the store was made with.
    pub fn leases(&self) -> Result<PgLeases, StoreError> {
        let settings = self.shared.settings.clone().ok_or_else(|| {
            StoreError::InvalidInput(
                "leases need a dedicated connection; build the store with connect() or give \
                 with_pool() the connection settings"
                    .to_owned(),
            )
        })?;
        Ok(PgLeases {
            settings,
            schema: self.shared.schema.clone(),
        })
    }
}

/// Projection checkpoints in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgCheckpoints(PostgresStore);

impl CheckpointStore for PgCheckpoints {
    async fn load(&self, projection: &str) -> Result<Option<Position>, StoreError> {
        let client = self.0.shared.pool.get().await.map_err(from_pool)?;
        load_checkpoint(&client, self.0.projection_queries(), projection).await
    }

    async fn save(
        &self,
        projection: &str,
        expected: Option<Position>,
        next: Position,
    ) -> Result<(), CheckpointError> {
        let client = self.0.shared.pool.get().await.map_err(from_pool)?;
        save_checkpoint(
            &client,
            self.0.projection_queries(),
            projection,
            expected,
            next,
        )
        .await
    }

    async fn reset(&self, projection: &str) -> Result<(), StoreError> {
        let client = self.0.shared.pool.get().await.map_err(from_pool)?;
        execute(
            &client,
            &self.0.projection_queries().delete_checkpoint,
            &[&projection],
        )
        .await?;
        Ok(())
    }
}

/// Dead letters in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgDeadLetters(PostgresStore);

async fn record_dead_letter(
    client: &impl deadpool_postgres::GenericClient,
    queries: &ProjectionQueries,
    letter: &DeadLetter,
) -> Result<(), StoreError> {
    let (transaction, global) = (
        letter.position.commit() as i64,
        letter.position.prepare() as i64,
    );
    execute(
        client,
        &queries.record_dead_letter,
        &[
            &letter.projection,
            &letter.event_id,
            &letter.stream.as_str(),
            &(letter.revision as i64),
            &transaction,
            &global,
            &letter.reason,
        ],
    )
    .await?;
    Ok(())
}

impl DeadLetterStore for PgDeadLetters {
    async fn record(&self, letter: DeadLetter) -> Result<(), StoreError> {
        let client = self.0.shared.pool.get().await.map_err(from_pool)?;
        record_dead_letter(&client, self.0.projection_queries(), &letter).await
    }

    async fn list(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let client = self.0.shared.pool.get().await.map_err(from_pool)?;
        let rows = client
            .query(
                &self.0.projection_queries().list_dead_letters,
                &[&projection],
            )
            .await
            .map_err(from_pg)?;
        rows.iter()
            .map(|row| {
                let stream: &str = row.get(1);
                Ok(DeadLetter {
                    projection: projection.to_owned(),
                    event_id: row.get(0),
                    stream: StreamId::new(stream).map_err(|e| {
                        StoreError::backend_caused_by(format!("stored stream id: {e}"), e)
                    })?,
                    revision: row.get::<_, i64>(2) as u64,
                    position: position(row.get(3), row.get(4)),
                    reason: row.get(5),
                    failed_at: row.get::<_, SystemTime>(6),
                })
            })
            .collect()
    }

    async fn remove(&self, projection: &str, event_id: Uuid) -> Result<(), StoreError> {
        let client = self.0.shared.pool.get().await.map_err(from_pool)?;
        execute(
            &client,
            &self.0.projection_queries().delete_dead_letter,
            &[&projection, &event_id],
        )
        .await?;
        Ok(())
    }
}

/// Leases as PostgreSQL advisory locks, each held on a connection of its own: when the holder's
/// process dies or its connection drops, PostgreSQL releases the lock and the next runner takes
/// over.
#[derive(Debug, Clone)]
pub struct PgLeases {
    settings: ConnectionSettings,
    schema: String,
}

impl PgLeases {
    /// A connection of its own for the lease of `projection`, and the signal that it closed
    /// (which releases the lock).
    async fn lease_connection(
        &self,
        projection: &str,
    ) -> Result<(tokio_postgres::Client, watch::Receiver<bool>), StoreError> {
        let name = self
            .settings
            .config()
            .get_application_name()
            .unwrap_or_default();
        let (client, connection) = self
            .settings
            .named(&format!("{name}:lease:{projection}"))
            .connect()
            .await?;
        let (lost, watch_lost) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "the lease connection failed");
            }
            // Closed, for whatever reason: the lock is gone with it.
            let _ = lost.send(true);
        });
        Ok((client, watch_lost))
    }

    fn key(&self, projection: &str) -> String {
        format!("{}:{projection}", self.schema)
    }
}

impl Lease for PgLeases {
    async fn acquire(&self, projection: &str) -> Result<LeaseGuard, StoreError> {
        let (client, lost) = self.lease_connection(projection).await?;
        // Waited for server-side (so that the lock goes to a waiter the moment it is free), a
        // second at a time: `CREATE INDEX CONCURRENTLY` (the partition indexes) waits for every
        // running statement, and one waiting for as long as the holder lives would hold the
        // build up for good.
        client
            .batch_execute(sql::LEASE_WAIT)
            .await
            .map_err(from_pg)?;
        let key = self.key(projection);
        loop {
            match client.execute(sql::ACQUIRE_LEASE, &[&key]).await {
                Ok(_) => break,
                Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {}
                Err(error) => return Err(from_pg(error)),
            }
        }
        tracing::info!(projection, "lease acquired");
        Ok(LeaseGuard::new(lost, client))
    }

    async fn try_acquire(&self, projection: &str) -> Result<Option<LeaseGuard>, StoreError> {
        let (client, lost) = self.lease_connection(projection).await?;
        let taken: bool = client
            .query_one(sql::TRY_ACQUIRE_LEASE, &[&self.key(projection)])
            .await
            .map_err(from_pg)?
            .get(0);
        if !taken {
            // Dropping the client closes the connection.
            return Ok(None);
        }
        tracing::info!(projection, "lease acquired");
        Ok(Some(LeaseGuard::new(lost, client)))
    }
}

/// A handler of event batches that writes its read model in the transaction it is given.
pub trait TransactionalHandler: Send + Sync + 'static {
    /// Applies `batch` (in order) inside `transaction`. The runner writes the checkpoint in the
    /// same transaction and commits: the batch is applied exactly once.
    fn handle(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        batch: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Empties the read model inside `transaction`, for a rebuild. The default does nothing.
    fn reset(
        &self,
        _transaction: &tokio_postgres::Transaction<'_>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

/// A shared handler: keep an `Arc` to inspect it while the runner feeds it.
impl<T: TransactionalHandler> TransactionalHandler for std::sync::Arc<T> {
    fn handle(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        batch: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).handle(transaction, batch)
    }

    fn reset(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).reset(transaction)
    }
}

/// The exactly-once sink: the handler's writes, the checkpoint (compare-and-set against the
/// previous position) and any dead letter commit together, or not at all.
#[derive(Debug)]
pub struct PgTransactionalSink<H> {
    store: PostgresStore,
    handler: H,
}

impl<H> PgTransactionalSink<H> {
    /// A sink running `handler` in transactions on `store`'s pool, keeping checkpoints and dead
    /// letters in its schema.
    pub fn new(store: PostgresStore, handler: H) -> Self {
        Self { store, handler }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

impl<H: TransactionalHandler> Sink for PgTransactionalSink<H> {
    async fn checkpoint(&self, projection: &str) -> Result<Option<Position>, SinkError> {
        Ok(self.store.checkpoints().load(projection).await?)
    }

    async fn apply(
        &self,
        projection: &str,
        batch: &[RecordedEvent],
        previous: Option<Position>,
    ) -> Result<(), SinkError> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let queries = self.store.projection_queries();
        let mut client = self.store.shared.pool.get().await.map_err(from_pool)?;
        let transaction = client.transaction().await.map_err(handle_error)?;
        self.handler.handle(&transaction, batch).await?;
        match save_checkpoint(&transaction, queries, projection, previous, last.position).await {
            Ok(()) => {}
            // An earlier attempt of this very batch committed and only its reply was lost: the
            // batch is applied, once. (This transaction rolls back when dropped.)
            Err(CheckpointError::Moved { actual, .. }) if actual == Some(last.position) => {
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        }
        transaction.commit().await.map_err(handle_error)
    }

    async fn dead_letter(
        &self,
        projection: &str,
        event: &RecordedEvent,
        reason: &str,
        previous: Option<Position>,
    ) -> Result<(), SinkError> {
        let queries = self.store.projection_queries();
        let mut client = self.store.shared.pool.get().await.map_err(from_pool)?;
        let transaction = client.transaction().await.map_err(handle_error)?;
        record_dead_letter(
            &transaction,
            queries,
            &DeadLetter::new(projection, event, reason),
        )
        .await?;
        save_checkpoint(&transaction, queries, projection, previous, event.position).await?;
        transaction.commit().await.map_err(handle_error)
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, SinkError> {
        Ok(self.store.dead_letters().list(projection).await?)
    }

    async fn redrive(&self, projection: &str, event: &RecordedEvent) -> Result<(), SinkError> {
        let queries = self.store.projection_queries();
        let mut client = self.store.shared.pool.get().await.map_err(from_pool)?;
        let transaction = client.transaction().await.map_err(handle_error)?;
        self.handler
            .handle(&transaction, std::slice::from_ref(event))
            .await?;
        execute(
            &transaction,
            &queries.delete_dead_letter,
            &[&projection, &event.id],
        )
        .await?;
        transaction.commit().await.map_err(handle_error)
    }

    async fn reset(&self, projection: &str) -> Result<(), SinkError> {
        let queries = self.store.projection_queries();
        let mut client = self.store.shared.pool.get().await.map_err(from_pool)?;
        let transaction = client.transaction().await.map_err(handle_error)?;
        self.handler.reset(&transaction).await?;
        execute(&transaction, &queries.delete_checkpoint, &[&projection]).await?;
        transaction.commit().await.map_err(handle_error)
    }
}
