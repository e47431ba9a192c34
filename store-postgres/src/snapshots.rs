//! The store is also a [`SnapshotStore`]: the latest snapshot of each stream, one row of the
//! `snapshots` table, its state as `jsonb`.

use decider_core::{Snapshot, SnapshotStore, StoreError, StreamId};

use crate::PostgresStore;
use crate::json::{JsonText, ReceivedJson};

/// Snapshots live beside the events, in the store's schema, so that one `migrate` and one pool
/// serve both; [`CommandHandler::with_snapshots`](decider_core::CommandHandler::with_snapshots)
/// takes a clone of the store.
///
/// ```no_run
/// # use decider_core::{CommandHandler, Decider, SnapshotPolicy};
/// # use decider_store_postgres::PostgresStore;
/// # use serde::{Deserialize, Serialize};
/// # struct Account;
/// # #[derive(Serialize, Deserialize)] enum Event { Deposited { amount: u64 } }
/// # impl Decider for Account {
/// #     type Command = u64; type Event = Event; type State = u64; type Error = std::convert::Infallible;
/// #     fn initial_state(&self) -> u64 { 0 }
/// #     fn decide(&self, n: &u64, _: &u64) -> Result<Vec<Event>, Self::Error> { Ok(vec![Event::Deposited { amount: *n }]) }
/// #     fn evolve(&self, s: u64, Event::Deposited { amount }: &Event) -> u64 { s + amount }
/// # }
/// # async fn example() -> Result<(), decider_core::StoreError> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
/// store.migrate().await?;
/// let accounts = CommandHandler::new(Account, store.clone())
///     .with_cache(100_000)
///     .with_snapshots(store, SnapshotPolicy::every(500));
/// # let _ = accounts;
/// # Ok(()) }
/// ```
impl SnapshotStore for PostgresStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let revision = i64::try_from(snapshot.revision).map_err(|_| {
            StoreError::InvalidInput(format!(
                "snapshot of {} at revision {}: revisions above i64::MAX cannot exist here",
                snapshot.stream, snapshot.revision
            ))
        })?;
        let state_version = i32::try_from(snapshot.state_version).map_err(|_| {
            StoreError::InvalidInput(format!(
                "snapshot of {}: state version {} does not fit PostgreSQL's int",
                snapshot.stream, snapshot.state_version
            ))
        })?;
        self.query(
            &self.shared.queries.save_snapshot,
            &[
                &snapshot.stream.as_str(),
                &revision,
                &state_version,
                &JsonText(&snapshot.payload),
            ],
        )
        .await?;
        Ok(())
    }

    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let rows = self
            .query(&self.shared.queries.load_snapshot, &[&stream.as_str()])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let convert = |e: tokio_postgres::Error| {
            StoreError::backend_caused_by(format!("unexpected snapshot row of {stream}: {e}"), e)
        };
        let revision: i64 = row.try_get(0).map_err(convert)?;
        let state_version: i32 = row.try_get(1).map_err(convert)?;
        let ReceivedJson(payload): ReceivedJson = row.try_get(2).map_err(convert)?;
        Ok(Some(Snapshot {
            stream: stream.clone(),
            // Both were written from unsigned values by `save`.
            revision: revision as u64,
            state_version: state_version as u32,
            payload,
        }))
    }
}
