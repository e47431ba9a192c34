//! Inspection reads for operators' tools: listing streams, and whether the schema was ever
//! migrated. Built per call: they are rare, and the statements are cheap to format.

use decider_core::{StoreCatalog, StoreError, StreamId, StreamSummary};

use crate::PostgresStore;
use crate::error::{from_pg, from_pool};

impl PostgresStore {
    /// Whether the store's schema holds the decider tables ([`migrate`](Self::migrate) has run
    /// on it). Tools that must not create a schema (the `decider` CLI) ask this first, so that a
    /// mistyped `--schema` is told apart from an empty store.
    pub async fn is_migrated(&self) -> Result<bool, StoreError> {
        let client = self.shared.pool.get().await.map_err(from_pool)?;
        let row = client
            .query_one(
                "SELECT to_regclass(format('%I.schema_migrations', $1::text)) IS NOT NULL \
                 AND to_regclass(format('%I.events', $1::text)) IS NOT NULL",
                &[&self.shared.schema],
            )
            .await
            .map_err(from_pg)?;
        Ok(row.get(0))
    }
}

impl StoreCatalog for PostgresStore {
    async fn list_streams(
        &self,
        prefix: &str,
        limit: u64,
    ) -> Result<Vec<StreamSummary>, StoreError> {
        let statement = format!(
            "SELECT stream_id, count(*), max(revision) FROM \"{}\".events \
             WHERE starts_with(stream_id, $1) GROUP BY stream_id ORDER BY stream_id LIMIT $2",
            self.shared.schema
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.shared.pool.get().await.map_err(from_pool)?;
        let rows = client
            .query(&statement, &[&prefix, &limit])
            .await
            .map_err(from_pg)?;
        rows.iter()
            .map(|row| {
                let stream: String = row.get(0);
                let events: i64 = row.get(1);
                let last_revision: i64 = row.get(2);
                Ok(StreamSummary {
                    stream: StreamId::new(stream).map_err(|e| {
                        StoreError::backend(format!("the store holds an invalid stream id: {e}"))
                    })?,
                    events: events as u64,
                    last_revision: last_revision as u64,
                })
            })
            .collect()
    }
}
