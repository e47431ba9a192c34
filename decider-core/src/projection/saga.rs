//! Sagas as projections: each event the saga reacts to becomes commands, sent through a
//! [`CommandHandler`] with the event's id in the idempotency key, so that a redelivered event
//! (at-least-once delivery, a retried batch) never sends a command twice in effect.

use std::fmt;

use crate::codec::Codec;
use crate::decider::Decider;
use crate::metadata::Metadata;
use crate::projection::sink::{EventHandler, SinkError};
use crate::saga::Saga;
use crate::store::EventStore;
use crate::{CommandError, CommandHandler};
use crate::{RecordedEvent, StreamId};

/// An [`EventHandler`] that decodes events for a [`Saga`] and sends the commands it returns.
///
/// `route` names the stream each command goes to. The command's metadata carries the event's
/// correlation id, the event's id as causation id, and `"<event id>/<n>"` as idempotency key
/// for the `n`-th command of the event. A command the decider refuses (or a terminal stream) is
/// an outcome, not a failure: it is logged and the saga moves on — compensation is modelled as
/// more commands, decided by the saga from the events that follow. Store failures are retried;
/// an event that does not decode is poison.
pub struct SagaHandler<G, EC, D: Decider, S, C, R> {
    saga: G,
    codec: EC,
    commands: CommandHandler<D, S, C>,
    route: R,
}

impl<G, EC, D: Decider, S, C, R> fmt::Debug for SagaHandler<G, EC, D, S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaHandler")
            .field("saga", &std::any::type_name::<G>())
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}

impl<G, EC, D: Decider, S, C, R> SagaHandler<G, EC, D, S, C, R> {
    /// A handler running `saga` over events decoded with `codec`, sending commands through
    /// `commands` to the stream `route` names.
    pub fn new(saga: G, codec: EC, commands: CommandHandler<D, S, C>, route: R) -> Self {
        Self {
            saga,
            codec,
            commands,
            route,
        }
    }

    /// The command handler the saga sends through.
    pub fn commands(&self) -> &CommandHandler<D, S, C> {
        &self.commands
    }
}

impl<G, EC, D, S, C, R> EventHandler for SagaHandler<G, EC, D, S, C, R>
where
    G: Saga<Command = D::Command> + Send + Sync + 'static,
    G::Event: Send,
    EC: Codec<G::Event> + 'static,
    D: Decider + Send + Sync + 'static,
    D::Command: Send + Sync,
    D::Event: Send,
    D::State: Send,
    D::Error: fmt::Display + Send,
    S: EventStore,
    C: Codec<D::Event> + 'static,
    R: Fn(&D::Command) -> StreamId + Send + Sync + 'static,
{
    async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
        for (index, recorded) in batch.iter().enumerate() {
            let event = self
                .codec
                .decode(recorded)
                .map_err(|error| SinkError::Poison {
                    index,
                    reason: error.to_string(),
                })?;
            for (n, command) in self.saga.react(&event).into_iter().enumerate() {
                let stream = (self.route)(&command);
                let metadata = Metadata {
                    correlation_id: recorded.metadata.correlation_id,
                    causation_id: Some(recorded.id),
                    idempotency_key: Some(format!("{}/{n}", recorded.id)),
                    ..Metadata::default()
                };
                match self.commands.handle_with(&stream, command, metadata).await {
                    Ok(_) => {}
                    Err(refused @ (CommandError::Rejected(_) | CommandError::Terminal { .. })) => {
                        tracing::info!(%stream, cause = %recorded.id, %refused, "saga command refused");
                    }
                    Err(error) if error.is_retryable() => {
                        return Err(SinkError::Retryable(error.to_string()));
                    }
                    Err(error) => {
                        return Err(SinkError::Poison {
                            index,
                            reason: error.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
