//! Sinks: where a projection's batches go, and who owns their atomicity.
//!
//! A [`Sink`] applies a batch and moves the checkpoint past it. [`CheckpointedSink`] runs a user
//! [`EventHandler`] and then saves the checkpoint: at least once, since a crash between the two
//! replays the batch, so its handler must be idempotent. `decider-store-postgres` adds a sink that
//! does both in one transaction: exactly once.

use std::future::Future;

use crate::projection::checkpoint::{CheckpointError, CheckpointStore};
use crate::projection::dead_letter::{DeadLetter, DeadLetterStore};
use crate::store::StoreError;
use crate::{Position, RecordedEvent};

/// Why a batch was not handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// A passing failure (a database unavailable, a timeout): the runner retries the same batch
    /// with backoff.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The event at `index` of the batch cannot be handled, however often it is tried: the
    /// runner applies the events before it, then follows its poison policy.
    #[error("event {index} of the batch cannot be handled: {reason}")]
    Poison {
        /// Index of the event in the batch.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The checkpoint is not where this runner left it: another runner is active.
    #[error("the checkpoint moved: expected {expected:?}, found {actual:?}")]
    CheckpointMoved {
        /// Where this runner left it.
        expected: Option<Position>,
        /// Where it is.
        actual: Option<Position>,
    },
    /// Anything else that stops the projection.
    #[error("{0}")]
    Fatal(String),
}

impl From<StoreError> for SinkError {
    fn from(error: StoreError) -> Self {
        if error.is_retryable() {
            Self::Retryable(error.to_string())
        } else {
            Self::Fatal(error.to_string())
        }
    }
}

impl From<CheckpointError> for SinkError {
    fn from(error: CheckpointError) -> Self {
        match error {
            CheckpointError::Moved {
                expected, actual, ..
            } => Self::CheckpointMoved { expected, actual },
            CheckpointError::Store(error) => error.into(),
        }
    }
}

/// What a projection runner hands batches to.
pub trait Sink: Send + Sync + 'static {
    /// The position of the last event `projection` handled; `None` before the first.
    fn checkpoint(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<Position>, SinkError>> + Send;

    /// Handles `batch` (never empty, in order) and moves the checkpoint from `previous` to the
    /// position of its last event.
    fn apply(
        &self,
        projection: &str,
        batch: &[RecordedEvent],
        previous: Option<Position>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Keeps `event` as a dead letter with `reason` and moves the checkpoint from `previous`
    /// past it.
    fn dead_letter(
        &self,
        projection: &str,
        event: &RecordedEvent,
        reason: &str,
        previous: Option<Position>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The dead letters of `projection`.
    fn dead_letters(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, SinkError>> + Send;

    /// Handles one dead-lettered `event` again, out of order, and forgets its dead letter if it
    /// succeeds. The checkpoint does not move.
    fn redrive(
        &self,
        projection: &str,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Empties the read model (a user hook) and forgets the checkpoint, for a rebuild.
    fn reset(&self, projection: &str) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// A shared sink: the partitions of a projection share one.
impl<T: Sink> Sink for std::sync::Arc<T> {
    fn checkpoint(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<Position>, SinkError>> + Send {
        (**self).checkpoint(projection)
    }

    fn apply(
        &self,
        projection: &str,
        batch: &[RecordedEvent],
        previous: Option<Position>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).apply(projection, batch, previous)
    }

    fn dead_letter(
        &self,
        projection: &str,
        event: &RecordedEvent,
        reason: &str,
        previous: Option<Position>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).dead_letter(projection, event, reason, previous)
    }

    fn dead_letters(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, SinkError>> + Send {
        (**self).dead_letters(projection)
    }

    fn redrive(
        &self,
        projection: &str,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).redrive(projection, event)
    }

    fn reset(&self, projection: &str) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).reset(projection)
    }
}

/// A user's handler of event batches, for a [`CheckpointedSink`].
///
/// Delivery is at least once: after a crash between handling and checkpointing, a batch is
/// handled again, so `handle` must be idempotent (an upsert, not an increment).
pub trait EventHandler: Send + Sync + 'static {
    /// Handles a batch, in order.
    fn handle(&self, batch: &[RecordedEvent])
    -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Empties the read model, for a rebuild. The default does nothing.
    fn reset(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

/// A shared handler: keep an `Arc` of the read model to query it while the runner feeds it.
impl<T: EventHandler> EventHandler for std::sync::Arc<T> {
    fn handle(
        &self,
        batch: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).handle(batch)
    }

    fn reset(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).reset()
    }
}

/// An [`EventHandler`] plus a [`CheckpointStore`] and a [`DeadLetterStore`]: the handler runs
/// first, then the checkpoint is saved — at least once.
#[derive(Debug)]
pub struct CheckpointedSink<H, C, L> {
    handler: H,
    checkpoints: C,
    dead_letters: L,
}

impl<H, C, L> CheckpointedSink<H, C, L> {
    /// A sink over `handler` keeping its checkpoints in `checkpoints` and its dead letters in
    /// `dead_letters`.
    pub fn new(handler: H, checkpoints: C, dead_letters: L) -> Self {
        Self {
            handler,
            checkpoints,
            dead_letters,
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

impl<H: EventHandler, C: CheckpointStore, L: DeadLetterStore> Sink for CheckpointedSink<H, C, L> {
    async fn checkpoint(&self, projection: &str) -> Result<Option<Position>, SinkError> {
        Ok(self.checkpoints.load(projection).await?)
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
        self.handler.handle(batch).await?;
        Ok(self
            .checkpoints
            .save(projection, previous, last.position)
            .await?)
    }

    async fn dead_letter(
        &self,
        projection: &str,
        event: &RecordedEvent,
        reason: &str,
        previous: Option<Position>,
    ) -> Result<(), SinkError> {
        self.dead_letters
            .record(DeadLetter::new(projection, event, reason))
            .await?;
        Ok(self
            .checkpoints
            .save(projection, previous, event.position)
            .await?)
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, SinkError> {
        Ok(self.dead_letters.list(projection).await?)
    }

    async fn redrive(&self, projection: &str, event: &RecordedEvent) -> Result<(), SinkError> {
        self.handler.handle(std::slice::from_ref(event)).await?;
        Ok(self.dead_letters.remove(projection, event.id).await?)
    }

    async fn reset(&self, projection: &str) -> Result<(), SinkError> {
        self.handler.reset().await?;
        Ok(self.checkpoints.reset(projection).await?)
    }
}
