//! Inspection reads for operators' tools: listing streams.

use decider_core::{StoreCatalog, StoreError, StreamId, StreamSummary};

use crate::{SqliteStore, store_error};

impl StoreCatalog for SqliteStore {
    async fn list_streams(
        &self,
        prefix: &str,
        limit: u64,
    ) -> Result<Vec<StreamSummary>, StoreError> {
        let prefix = prefix.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, i64, i64)> = self
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(
                        "SELECT stream_id, count(*), max(revision) FROM events \
                         WHERE substr(stream_id, 1, length(?1)) = ?1 \
                         GROUP BY stream_id ORDER BY stream_id LIMIT ?2",
                    )
                    .map_err(store_error)?;
                let rows = statement
                    .query_map(rusqlite::params![prefix, limit], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .map_err(store_error)?;
                rows.collect::<Result<_, _>>().map_err(store_error)
            })
            .await?;
        rows.into_iter()
            .map(|(stream, events, last_revision)| {
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
