//! Dead letters: events a projection could not handle, kept with the reason so that the runner can
//! move on and an operator can re-drive them later.

use std::future::Future;
use std::sync::Mutex;
use std::time::SystemTime;

use uuid::Uuid;

use crate::store::StoreError;
use crate::{Position, RecordedEvent, StreamId};

/// An event a projection gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The projection that failed.
    pub projection: String,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's stream.
    pub stream: StreamId,
    /// The event's revision in its stream.
    pub revision: u64,
    /// The event's global position.
    pub position: Position,
    /// What the handler said.
    pub reason: String,
    /// When it was given up on.
    pub failed_at: SystemTime,
}

impl DeadLetter {
    /// The dead letter of `event` for `projection`; U+0000 in `reason` becomes U+FFFD, so that
    /// every store can keep it.
    pub fn new(projection: &str, event: &RecordedEvent, reason: &str) -> Self {
        Self {
            projection: projection.to_owned(),
            event_id: event.id,
            stream: event.stream.clone(),
            revision: event.revision,
            position: event.position,
            reason: super::storable_text(reason),
            failed_at: SystemTime::now(),
        }
    }
}

/// Stores dead letters.
pub trait DeadLetterStore: Send + Sync + 'static {
    /// Keeps `letter` (once per projection and event).
    fn record(&self, letter: DeadLetter) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The dead letters of `projection`, oldest position first.
    fn list(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send;

    /// Forgets the dead letter of `event_id` for `projection` (after a successful re-drive).
    fn remove(
        &self,
        projection: &str,
        event_id: Uuid,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Dead letters held in memory.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters(Mutex<Vec<DeadLetter>>);

impl MemoryDeadLetters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DeadLetter>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl DeadLetterStore for MemoryDeadLetters {
    async fn record(&self, letter: DeadLetter) -> Result<(), StoreError> {
        let mut letters = self.lock();
        if !letters
            .iter()
            .any(|l| l.projection == letter.projection && l.event_id == letter.event_id)
        {
            letters.push(letter);
        }
        Ok(())
    }

    async fn list(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let mut letters: Vec<_> = self
            .lock()
            .iter()
            .filter(|l| l.projection == projection)
            .cloned()
            .collect();
        letters.sort_by_key(|l| l.position);
        Ok(letters)
    }

    async fn remove(&self, projection: &str, event_id: Uuid) -> Result<(), StoreError> {
        self.lock()
            .retain(|l| !(l.projection == projection && l.event_id == event_id));
        Ok(())
    }
}

impl<T: DeadLetterStore> DeadLetterStore for std::sync::Arc<T> {
    fn record(&self, letter: DeadLetter) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).record(letter)
    }
    fn list(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send {
        (**self).list(projection)
    }
    fn remove(
        &self,
        projection: &str,
        event_id: Uuid,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).remove(projection, event_id)
    }
}
