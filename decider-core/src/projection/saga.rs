//! Sagas as projections: each event the saga reacts to becomes commands, sent through a
//! [`CommandHandler`] with the event's id in the idempotency key, so that a redelivered event
//! (at-least-once delivery, a retried batch) never sends a command twice in effect.
//!
//! [`SagaHandler`] runs a stateless [`Saga`]; [`ProcessHandler`] runs a [`Process`], a saga with
//! state, step by step, recording each answer on the process's own stream.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tracing::Instrument;

use crate::codec::{Codec, JsonCodec};
use crate::decider::{Decider, fold_from};
use crate::metadata::Metadata;
use crate::projection::sink::{EventHandler, SinkError};
use crate::saga::{Process, ProcessStep, Refused, Saga};
use crate::store::EventStore;
use crate::trace::{Reaction, reaction_span};
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
///
/// Each event is handled in a `saga_event` span (fields `stream`, `revision`, and for an event
/// with a [trace context](crate::TraceParent) `trace_id`, `span_id`, `parent_id`): the span
/// continues the event's trace, and the commands carry that trace with the span as parent.
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
            let span = reaction_span!("saga_event", recorded);
            let reaction = Reaction::begin(&span, recorded);
            self.react(index, recorded, reaction)
                .instrument(span)
                .await?;
        }
        Ok(())
    }
}

impl<G, EC, D, S, C, R> SagaHandler<G, EC, D, S, C, R>
where
    G: Saga<Command = D::Command>,
    EC: Codec<G::Event>,
    D: Decider,
    D::Error: fmt::Display,
    S: EventStore,
    C: Codec<D::Event>,
    R: Fn(&D::Command) -> StreamId,
{
    /// Sends the saga's commands for `recorded`, event `index` of its batch, in its trace.
    async fn react(
        &self,
        index: usize,
        recorded: &RecordedEvent,
        reaction: Option<Reaction>,
    ) -> Result<(), SinkError> {
        let event = self
            .codec
            .decode(recorded)
            .map_err(|error| SinkError::Poison {
                index,
                reason: error.to_string(),
            })?;
        for (n, command) in self.saga.react(&event).into_iter().enumerate() {
            let stream = (self.route)(&command);
            let mut metadata =
                Metadata::caused_by(recorded).with_idempotency_key(format!("{}/{n}", recorded.id));
            metadata.trace_parent = reaction.map(|reaction| reaction.child());
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
        Ok(())
    }
}

/// How many processes a [`ProcessHandler`] drives at once, unless told otherwise.
const DEFAULT_CONCURRENCY: usize = 32;

/// An [`EventHandler`] that drives a [`Process`]: each event of a batch names, by its stream, a
/// process, which is taken through every step it waits for before the batch counts as handled.
///
/// A step goes to its target with the step's [`key`](ProcessStep::key) as idempotency key, and
/// the answer is recorded on the process's stream under `"<key>/recorded"`; the metadata of both
/// carries the triggering event's correlation id and the event's id as causation id, and, when
/// the event is traced, its trace with the `process_event` span that drives the process as
/// parent (the span's fields are those of [`SagaHandler`]'s `saga_event`). Delivery is
/// at least once (a crash between two steps redelivers the batch), and the keys make that
/// harmless: a step taken before is answered from its stream, never taken twice. Give the
/// runner a filter that passes one event per process (its start): a process is driven to its end
/// from there, and the later events of its stream are its own records.
///
/// A refused step is an answer like any other, recorded by [`Process::record`]. Store failures
/// are retried (the batch is handled again). The record of an answer being refused while the
/// process still waits for that step is a bug in the process: poison. Two handlers must not
/// drive one process at the same time (one could record a refusal while the other's retry of
/// the step succeeds): run one per store, behind a lease where the store has them.
pub struct ProcessHandler<
    P,
    S,
    OC = JsonCodec<<<P as Process>::Own as Decider>::Event>,
    TC = JsonCodec<<<P as Process>::Target as Decider>::Event>,
> where
    P: Process,
{
    process: P,
    own: Arc<CommandHandler<P::Own, S, OC>>,
    target: Arc<CommandHandler<P::Target, S, TC>>,
    concurrency: usize,
}

impl<P: Process, S, OC, TC> fmt::Debug for ProcessHandler<P, S, OC, TC> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessHandler")
            .field("process", &std::any::type_name::<P>())
            .field("own", &self.own)
            .field("target", &self.target)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl<P: Process, S, OC, TC> ProcessHandler<P, S, OC, TC> {
    /// A handler driving `process`, recording on its streams through `own` and sending its
    /// steps through `target`; 32 processes at once.
    pub fn new(
        process: P,
        own: Arc<CommandHandler<P::Own, S, OC>>,
        target: Arc<CommandHandler<P::Target, S, TC>>,
    ) -> Self {
        Self {
            process,
            own,
            target,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// The same handler driving up to `processes` processes of a batch at once (at least one).
    pub fn with_concurrency(mut self, processes: usize) -> Self {
        self.concurrency = processes.max(1);
        self
    }

    /// The process.
    pub fn process(&self) -> &P {
        &self.process
    }
}

/// Why driving a process stopped short.
enum Halt {
    Retryable(String),
    Poison(String),
}

impl Halt {
    fn from_handler<E: fmt::Display>(error: CommandError<E>) -> Self {
        if error.is_retryable() {
            Self::Retryable(error.to_string())
        } else {
            Self::Poison(error.to_string())
        }
    }
}

/// The revision of a stream at `version` after `appended` more events.
fn revision_after(version: Option<u64>, appended: usize) -> Option<u64> {
    match (version, appended as u64) {
        (version, 0) => version,
        (None, n) => Some(n - 1),
        (Some(version), n) => Some(version + n),
    }
}

impl<P, S, OC, TC> ProcessHandler<P, S, OC, TC>
where
    P: Process,
    S: EventStore,
    OC: Codec<<P::Own as Decider>::Event>,
    TC: Codec<<P::Target as Decider>::Event>,
    <P::Own as Decider>::Error: fmt::Display,
    <P::Target as Decider>::Error: fmt::Display,
{
    /// Takes the process of stream `process` through every step it waits for.
    async fn drive(
        &self,
        process: &StreamId,
        cause: &RecordedEvent,
        reaction: Option<Reaction>,
    ) -> Result<(), Halt> {
        let metadata = |key: String| Metadata {
            trace_parent: reaction.map(|reaction| reaction.child()),
            ..Metadata::caused_by(cause).with_idempotency_key(key)
        };
        let (mut state, mut version) = self.load(process).await?;
        while let Some(ProcessStep {
            step,
            stream,
            command,
            key,
        }) = self.process.next_step(process, &state)
        {
            let answer = match self
                .target
                .handle_with(&stream, command, metadata(key.clone()))
                .await
            {
                Ok(_) => Ok(()),
                Err(CommandError::Rejected(refusal)) => Err(Refused::Rejected(refusal)),
                Err(CommandError::Terminal { .. }) => Err(Refused::Terminal),
                Err(error) => return Err(Halt::from_handler(error)),
            };
            tracing::debug!(%process, step = %key, %stream, refused = answer.is_err(), "process step");
            let record = self.process.record(step, answer);
            match self
                .own
                .handle_with(process, record, metadata(format!("{key}/recorded")))
                .await
            {
                // Decided on the state this handler holds: the new events follow on from it.
                Ok(outcome)
                    if !outcome.replayed
                        && outcome.last_revision
                            == revision_after(version, outcome.events.len()) =>
                {
                    state = fold_from(self.own.decider(), state, &outcome.events);
                    version = outcome.last_revision;
                }
                // Recorded before, or by someone else meanwhile: the stream knows where it is.
                Ok(_) => (state, version) = self.load(process).await?,
                Err(CommandError::Rejected(refusal)) => {
                    (state, version) = self.load(process).await?;
                    let still_waiting = self
                        .process
                        .next_step(process, &state)
                        .is_some_and(|next| next.key == key);
                    if still_waiting {
                        return Err(Halt::Poison(format!(
                            "the answer to step {key} was refused: {refusal}"
                        )));
                    }
                }
                Err(error) => return Err(Halt::from_handler(error)),
            }
        }
        Ok(())
    }

    async fn load(
        &self,
        process: &StreamId,
    ) -> Result<(<P::Own as Decider>::State, Option<u64>), Halt> {
        match self.own.load(process).await {
            Ok(loaded) => Ok((loaded.state, loaded.last_revision)),
            Err(error) => Err(Halt::from_handler(error)),
        }
    }
}

impl<P, S, OC, TC> EventHandler for ProcessHandler<P, S, OC, TC>
where
    P: Process + Send + Sync + 'static,
    P::Step: Send,
    P::Own: Send + Sync + 'static,
    <P::Own as Decider>::Command: Send + Sync,
    <P::Own as Decider>::Event: Send + Sync,
    <P::Own as Decider>::State: Send + Sync,
    <P::Own as Decider>::Error: fmt::Display + Send,
    P::Target: Send + Sync + 'static,
    <P::Target as Decider>::Command: Send + Sync,
    <P::Target as Decider>::Event: Send + Sync,
    <P::Target as Decider>::State: Send + Sync,
    <P::Target as Decider>::Error: fmt::Display + Send,
    S: EventStore,
    OC: Codec<<P::Own as Decider>::Event> + 'static,
    TC: Codec<<P::Target as Decider>::Event> + 'static,
{
    async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
        // Each process once, from the first of its events in the batch.
        let mut seen = HashSet::new();
        let processes: Vec<usize> = (0..batch.len())
            .filter(|&index| seen.insert(&batch[index].stream))
            .collect();
        futures::stream::iter(processes)
            .map(|index| async move {
                let cause = &batch[index];
                let span = reaction_span!("process_event", cause);
                let reaction = Reaction::begin(&span, cause);
                self.drive(&cause.stream, cause, reaction)
                    .instrument(span)
                    .await
                    .map_err(|halt| match halt {
                        Halt::Retryable(reason) => SinkError::Retryable(reason),
                        Halt::Poison(reason) => SinkError::Poison { index, reason },
                    })
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await
    }
}
