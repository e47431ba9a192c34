//! The store is also a [`SnapshotStore`]: the latest snapshot of each stream, one row of the
//! `snapshots` table, in the same file as the events.

use bytes::Bytes;
use decider_core::{Snapshot, SnapshotStore, StoreError, StreamId};
use rusqlite::OptionalExtension;

use crate::error::store_error;
use crate::{SqliteStore, sql};

impl SnapshotStore for SqliteStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let revision = i64::try_from(snapshot.revision).map_err(|_| {
            StoreError::InvalidInput(format!(
                "snapshot of {} at revision {}: revisions above i64::MAX cannot exist here",
                snapshot.stream, snapshot.revision
            ))
        })?;
        self.write(move |connection| {
            connection
                .prepare_cached(sql::SAVE_SNAPSHOT)
                .and_then(|mut statement| {
                    statement.execute(rusqlite::params![
                        snapshot.stream.as_str(),
                        revision,
                        snapshot.state_version,
                        snapshot.payload.as_ref(),
                    ])
                })
                .map(|_| ())
                .map_err(store_error)
        })
        .await?
    }

    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let stream = stream.clone();
        self.read(move |connection| {
            let row = connection
                .prepare_cached(sql::LOAD_SNAPSHOT)
                .and_then(|mut statement| {
                    statement
                        .query_row([stream.as_str()], |row| {
                            Ok((
                                row.get::<_, i64>(0)?,
                                row.get::<_, i64>(1)?,
                                row.get::<_, Vec<u8>>(2)?,
                            ))
                        })
                        .optional()
                })
                .map_err(store_error)?;
            let Some((revision, state_version, payload)) = row else {
                return Ok(None);
            };
            let bad =
                || StoreError::backend(format!("snapshot of {stream}: stored values are invalid"));
            Ok(Some(Snapshot {
                revision: u64::try_from(revision).map_err(|_| bad())?,
                state_version: u32::try_from(state_version).map_err(|_| bad())?,
                payload: Bytes::from(payload),
                stream,
            }))
        })
        .await
    }
}
