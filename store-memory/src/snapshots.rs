//! Snapshots in memory: the latest snapshot of each stream, for tests and embedded use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use decider_core::{Snapshot, SnapshotStore, StoreError, StreamId};

/// A [`SnapshotStore`] held in memory. Clones share the same snapshots.
///
/// ```
/// use decider_core::{Snapshot, SnapshotStore, StreamId};
/// use decider_store_memory::MemorySnapshotStore;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let snapshots = MemorySnapshotStore::new();
/// let stream = StreamId::new("account-1")?;
/// let at = |revision| Snapshot {
///     stream: stream.clone(),
///     revision,
///     state_version: 1,
///     payload: revision.to_string().into(),
/// };
/// snapshots.save(at(9)).await?;
/// snapshots.save(at(4)).await?; // older: ignored
/// assert_eq!(snapshots.load(&stream).await?.map(|s| s.revision), Some(9));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemorySnapshotStore {
    snapshots: Arc<Mutex<HashMap<StreamId, Snapshot>>>,
}

impl MemorySnapshotStore {
    /// An empty snapshot store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of streams with a snapshot.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no stream has a snapshot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes every snapshot.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<StreamId, Snapshot>> {
        // Every mutation is a single map operation: a poisoned map is still consistent.
        self.snapshots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SnapshotStore for MemorySnapshotStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut snapshots = self.lock();
        let newer = snapshots
            .get(&snapshot.stream)
            .is_none_or(|stored| stored.revision < snapshot.revision);
        if newer {
            snapshots.insert(snapshot.stream.clone(), snapshot);
        }
        Ok(())
    }

    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.lock().get(stream).cloned())
    }
}
