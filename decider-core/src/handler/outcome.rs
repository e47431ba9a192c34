//! What a command did, or why it was not carried out.

use crate::{CodecError, Position, StoreError, StreamId};

/// What a handled command did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome<E> {
    /// The events the command produced; for a replayed command, the events it produced the first
    /// time. Empty when the decider accepted the command with no change.
    pub events: Vec<E>,
    /// The stream's last revision after the command (for a replay: the revision of the last event
    /// the original command wrote); `None` when the stream still has no event.
    pub last_revision: Option<u64>,
    /// Global position of the last event written, if any was.
    pub position: Option<Position>,
    /// Whether this outcome is the original one of an earlier command with the same idempotency
    /// key, returned without deciding again.
    pub replayed: bool,
}

/// Why a command was not carried out: the error of [`CommandHandler::handle`](crate::CommandHandler::handle).
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// The decider refused the command.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// The stream is terminal ([`Decider::is_terminal`](crate::Decider::is_terminal)) and takes no more commands.
    #[error("stream {stream} is terminal and takes no more commands")]
    Terminal {
        /// The terminal stream.
        stream: StreamId,
    },
    /// The store failed or refused; after the retries are spent, a conflict is returned as
    /// [`StoreError::WrongExpectedVersion`] (or [`StoreError::ConditionFailed`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event could not be encoded, or a stored one decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl<E> CommandError<E> {
    /// Whether the command lost every optimistic-concurrency race it was allowed to retry: of
    /// its stream, or of its append condition (a [`DecisionHandler`](crate::dcb::DecisionHandler)'s).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_wrong_expected_version() || e.is_condition_failed())
    }

    /// Whether sending the same command again (with the same idempotency key) may succeed.
    pub fn is_retryable(&self) -> bool {
        self.is_conflict() || matches!(self, Self::Store(e) if e.is_retryable())
    }
}
