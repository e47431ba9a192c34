//! The transfer process manager: runs each requested transfer's steps against the accounts.
//!
//! It is a projection over the requests of transfers. For each, it loads the transfer, asks
//! [`next_step`] what comes next, sends that account command, records the outcome on the
//! transfer, and goes on until the transfer waits for nothing; the checkpoint moves past the
//! request only then. Delivery is at least once (a crash between two steps redelivers the
//! batch), so every command carries an idempotency key of the transfer id and the step: a step
//! that already happened is answered from the stream, never done twice.
//!
//! Two managers must not drive one transfer at the same time (one could record a refused debit
//! while the other's retry of it succeeds); the application runs one per store, behind a lease
//! where the store has them.

use std::sync::Arc;

use decider_core::projection::{EventHandler, SinkError};
use decider_core::{CommandError, CommandHandler, EventStore, Metadata, RecordedEvent, fold_from};
use futures::{StreamExt, TryStreamExt};

use crate::account::Account;
use crate::transfer::{
    NextStep, StepOutcome, Transfer, TransferCommand, TransferError, TransferId, TransferState,
    next_step,
};

/// How many transfers one manager drives at once.
const CONCURRENT_TRANSFERS: usize = 32;

/// The process manager; an [`EventHandler`] for a runner over the transfers' `Requested` events.
#[derive(Debug)]
pub struct TransferProcess<S: EventStore> {
    accounts: Arc<CommandHandler<Account, S>>,
    transfers: Arc<CommandHandler<Transfer, S>>,
}

impl<S: EventStore> TransferProcess<S> {
    /// A manager sending its commands through these handlers.
    pub fn new(
        accounts: Arc<CommandHandler<Account, S>>,
        transfers: Arc<CommandHandler<Transfer, S>>,
    ) -> Self {
        Self {
            accounts,
            transfers,
        }
    }

    /// Takes `transfer` through every step it waits for.
    async fn drive(&self, transfer: TransferId, cause: &RecordedEvent) -> Result<(), Halt> {
        let stream = transfer.stream();
        let mut state = self.load(transfer).await?;
        while let Some(NextStep {
            step,
            account,
            command,
        }) = next_step(&state, transfer)
        {
            let key = format!("{transfer}/{step:?}");
            let metadata = |key: String| Metadata::caused_by(cause).with_idempotency_key(key);
            let result = match self
                .accounts
                .handle_with(&account.stream(), command, metadata(key.clone()))
                .await
            {
                Ok(_) => Ok(()),
                Err(CommandError::Rejected(refusal)) => Err(refusal.to_string()),
                Err(CommandError::Terminal { .. }) => Err("the account is closed".to_owned()),
                Err(error) => return Err(Halt::from_handler(error)),
            };
            tracing::debug!(%transfer, ?step, ?result, "transfer step");
            let record = TransferCommand::Record(StepOutcome { step, result });
            state = match self
                .transfers
                .handle_with(&stream, record, metadata(format!("{key}/recorded")))
                .await
            {
                Ok(outcome) if !outcome.replayed => fold_from(&Transfer, state, &outcome.events),
                // Recorded before, or by someone else meanwhile: the stream knows where it is.
                Ok(_) | Err(CommandError::Rejected(TransferError::UnexpectedStep { .. })) => {
                    self.load(transfer).await?
                }
                Err(CommandError::Rejected(bug)) => return Err(Halt::Poison(bug.to_string())),
                Err(error) => return Err(Halt::from_handler(error)),
            };
        }
        Ok(())
    }

    async fn load(&self, transfer: TransferId) -> Result<TransferState, Halt> {
        match self.transfers.load(&transfer.stream()).await {
            Ok(loaded) => Ok(loaded.state),
            Err(error) => Err(Halt::from_handler(error)),
        }
    }
}

/// Why driving a transfer stopped short.
enum Halt {
    Retryable(String),
    Poison(String),
}

impl Halt {
    fn from_handler<E: std::fmt::Display>(error: CommandError<E>) -> Self {
        if error.is_retryable() {
            Self::Retryable(error.to_string())
        } else {
            Self::Poison(error.to_string())
        }
    }
}

impl<S: EventStore> EventHandler for TransferProcess<S> {
    async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
        let transfers: Vec<(usize, TransferId)> = batch
            .iter()
            .enumerate()
            .filter_map(|(index, event)| {
                TransferId::from_stream(&event.stream).map(|transfer| (index, transfer))
            })
            .collect();
        futures::stream::iter(transfers)
            .map(|(index, transfer)| async move {
                self.drive(transfer, &batch[index])
                    .await
                    .map_err(|halt| match halt {
                        Halt::Retryable(reason) => SinkError::Retryable(reason),
                        Halt::Poison(reason) => SinkError::Poison { index, reason },
                    })
            })
            .buffer_unordered(CONCURRENT_TRANSFERS)
            .try_collect()
            .await
    }
}
