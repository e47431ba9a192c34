//! The index that serves reads by partition: one per partition count, built in the background
//! the first time this store reads by that count, or ahead by
//! [`PostgresStore::ensure_partition_index`].
//!
//! A read never waits for a build. `CREATE INDEX CONCURRENTLY` waits for every transaction
//! and statement that was running when it started, and a long one (another application's, or a
//! lease waited for server-side) makes it wait for as long: a read that waited with it would
//! stall a projection. Until the index exists the page query is the same, and right, only
//! slower (the planner takes the index up as soon as it is valid).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use decider_core::StoreError;

use crate::PostgresStore;
use crate::error::{from_pg, from_pool};
use crate::sql;

/// How long after a failed build (or one another process was making) a read starts another.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The page queries of the partition counts read so far, and where their indexes are.
#[derive(Debug, Default)]
pub(crate) struct PartitionPages(std::sync::Mutex<HashMap<u32, Page>>);

#[derive(Debug)]
struct Page {
    query: String,
    index: Index,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    /// A build of this process is running.
    Building,
    /// Valid: nothing more to do.
    Built,
    /// Not built yet: a build starts at the first read after this instant.
    Missing { retry_at: Instant },
}

impl PartitionPages {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Page>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, count: u32, index: Index) {
        if let Some(page) = self.lock().get_mut(&count) {
            page.index = index;
        }
    }
}

impl PostgresStore {
    /// The page query of a partition of `count`; starts building its index in the background
    /// if it is missing (and no build of this process runs).
    pub(crate) fn partition_page(&self, count: u32) -> String {
        let mut pages = self.shared.partition_pages.lock();
        let page = pages.entry(count).or_insert_with(|| Page {
            query: sql::in_schema(&sql::read_partition_page(count), &self.quoted_schema()),
            index: Index::Missing {
                retry_at: Instant::now(),
            },
        });
        let query = page.query.clone();
        if matches!(page.index, Index::Missing { retry_at } if retry_at <= Instant::now()) {
            page.index = Index::Building;
            let store = self.clone();
            tokio::spawn(async move {
                let index = match store.build_partition_index(count).await {
                    Ok(true) => Index::Built,
                    Ok(false) => {
                        tracing::debug!(count, "another process builds the index of partitions");
                        Index::Missing {
                            retry_at: Instant::now() + RETRY_AFTER,
                        }
                    }
                    Err(error) => {
                        tracing::warn!(count, %error, "cannot build the index of partitions; reading without it");
                        Index::Missing {
                            retry_at: Instant::now() + RETRY_AFTER,
                        }
                    }
                };
                store.shared.partition_pages.set(count, index);
            });
        }
        query
    }

    /// Builds the index that serves reads by partition of `count` partitions, unless it
    /// exists, and waits until it is valid (also while another process builds it): for a
    /// deployment step or a benchmark that wants the index before the first partitioned read.
    /// The first such read builds it by itself otherwise, in the background.
    ///
    /// `CREATE INDEX CONCURRENTLY` waits for every transaction running when it starts: a long
    /// one delays this as long.
    pub async fn ensure_partition_index(&self, count: u32) -> Result<(), StoreError> {
        let mut pause = Duration::from_millis(50);
        while !self.build_partition_index(count).await? {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        self.shared.partition_pages.set(count, Index::Built);
        Ok(())
    }

    /// Builds the index of `count` partitions if it is missing, under the build lock; `false`
    /// if another process holds the lock (it is building one).
    async fn build_partition_index(&self, count: u32) -> Result<bool, StoreError> {
        let client = self.shared.pool.get().await.map_err(from_pool)?;
        let schema = &self.shared.schema;
        let locked: bool = client
            .query_one(sql::TRY_LOCK_PARTITION_INDEX, &[schema])
            .await
            .map_err(from_pg)?
            .get(0);
        if !locked {
            return Ok(false);
        }
        let built = self.build_locked(&client, count).await;
        // The connection goes back to the pool: the lock must not go with it. (If the
        // connection is broken, its session and lock are gone already.)
        if let Err(error) = client
            .query_one(sql::UNLOCK_PARTITION_INDEX, &[schema])
            .await
        {
            tracing::debug!(%error, "cannot unlock the index build; the session ends with it");
        }
        built.map(|()| true)
    }

    async fn build_locked(
        &self,
        client: &deadpool_postgres::Client,
        count: u32,
    ) -> Result<(), StoreError> {
        let quoted = self.quoted_schema();
        let name = format!("events_partitions_{count}");
        let valid = client
            .query_opt(sql::PARTITION_INDEX_VALID, &[&self.shared.schema, &name])
            .await
            .map_err(from_pg)?
            .map(|row| row.get::<_, bool>(0));
        if valid == Some(true) {
            return Ok(());
        }
        if valid == Some(false) {
            // Every build holds the lock, so an invalid index under it is an interrupted
            // build's (a killed process, a lost connection): it would never be used.
            tracing::warn!(
                index = name,
                "dropping an interrupted build of the index of partitions"
            );
            client
                .batch_execute(&sql::in_schema(&sql::drop_partition_index(count), &quoted))
                .await
                .map_err(from_pg)?;
        }
        client
            .batch_execute(&sql::in_schema(&sql::partition_index(count), &quoted))
            .await
            .map_err(from_pg)?;
        // Statistics of the new index's expression: without them the planner takes a
        // partition for a few rows and reads it by a bitmap scan and a sort, every page, which
        // costs the whole partition per page (measured: 27k events/s instead of an ordered
        // index scan's hundreds of thousands).
        client
            .batch_execute(&format!("ANALYZE {quoted}.events"))
            .await
            .map_err(from_pg)?;
        Ok(())
    }

    fn quoted_schema(&self) -> String {
        format!("\"{}\"", self.shared.schema)
    }
}
