//! Checkpoints: where a projection has got to, saved with compare-and-set so that two runners can
//! never move one backwards.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use crate::Position;
use crate::store::StoreError;

/// Why a checkpoint was not saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint was not where the writer expected: another runner moved it.
    #[error("checkpoint of {projection} is at {actual:?}, not at the expected {expected:?}")]
    Moved {
        /// The projection.
        projection: String,
        /// Where the writer thought it was.
        expected: Option<Position>,
        /// Where it is.
        actual: Option<Position>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores projection checkpoints.
pub trait CheckpointStore: Send + Sync + 'static {
    /// The position of the last event `projection` handled; `None` before the first.
    fn load(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;

    /// Moves the checkpoint of `projection` from `expected` to `next`, refusing with
    /// [`CheckpointError::Moved`] if it is not at `expected`.
    fn save(
        &self,
        projection: &str,
        expected: Option<Position>,
        next: Position,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send;

    /// Forgets the checkpoint of `projection` (for a rebuild).
    fn reset(&self, projection: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Checkpoints held in memory: for tests, and for read models that live in memory themselves
/// (they are rebuilt at start-up anyway).
#[derive(Debug, Default)]
pub struct MemoryCheckpoints(Mutex<HashMap<String, Position>>);

impl MemoryCheckpoints {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Position>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl CheckpointStore for MemoryCheckpoints {
    async fn load(&self, projection: &str) -> Result<Option<Position>, StoreError> {
        Ok(self.lock().get(projection).copied())
    }

    async fn save(
        &self,
        projection: &str,
        expected: Option<Position>,
        next: Position,
    ) -> Result<(), CheckpointError> {
        let mut checkpoints = self.lock();
        let actual = checkpoints.get(projection).copied();
        if actual != expected {
            return Err(CheckpointError::Moved {
                projection: projection.to_owned(),
                expected,
                actual,
            });
        }
        checkpoints.insert(projection.to_owned(), next);
        Ok(())
    }

    async fn reset(&self, projection: &str) -> Result<(), StoreError> {
        self.lock().remove(projection);
        Ok(())
    }
}

impl<T: CheckpointStore> CheckpointStore for std::sync::Arc<T> {
    fn load(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send {
        (**self).load(projection)
    }
    fn save(
        &self,
        projection: &str,
        expected: Option<Position>,
        next: Position,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send {
        (**self).save(projection, expected, next)
    }
    fn reset(&self, projection: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).reset(projection)
    }
}
