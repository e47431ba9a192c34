//! The projection runner: subscription → bounded buffer → batcher → sink → checkpoint.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use crate::backoff;
use crate::projection::control::{
    ControlAction, ControlRequest, ProjectionControl, RunnerReport, Uncontrolled, runner_id,
};
use crate::projection::dead_letter::DeadLetter;
use crate::projection::lease::{Lease, LeaseGuard, Unleased};
use crate::projection::sink::{Sink, SinkError};
use crate::projection::status::{ProjectionStatus, RunnerState, StatusHandle, lag};
use crate::projection::{PoisonPolicy, Projection, RunnerOptions};
use crate::store::{Direction, EventStore, StoreError, StreamFrom, SubscriptionMessage};
use crate::trace::{Reaction, reaction_span};
use crate::{Position, RecordedEvent, StreamId};

/// Why a projection stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProjectionError {
    /// An event its handler cannot handle, under [`PoisonPolicy::Stop`]. Every event before it
    /// is handled and checkpointed; fix the handler (or dead-letter the event) and run again.
    #[error(
        "projection {projection} stopped at {stream} revision {revision} (event {event_id}, \
         position {position}): {reason}"
    )]
    Poison {
        /// The projection.
        projection: String,
        /// The event's stream.
        stream: StreamId,
        /// The event's revision.
        revision: u64,
        /// The event's id.
        event_id: uuid::Uuid,
        /// The event's position.
        position: Position,
        /// What the handler said.
        reason: String,
    },
    /// Another runner moved the checkpoint. A running runner resumes from the moved checkpoint
    /// (the batch it was applying was not kept by an exactly-once sink); this error is returned
    /// by operations that cannot resume, such as a rebuild.
    #[error(
        "projection {projection}: the checkpoint moved under this runner ({expected:?} → {actual:?}); another runner is active"
    )]
    CheckpointMoved {
        /// The projection.
        projection: String,
        /// Where this runner left it.
        expected: Option<Position>,
        /// Where it was found.
        actual: Option<Position>,
    },
    /// The store failed in a way retrying will not fix.
    #[error("projection {projection}: {error}")]
    Store {
        /// The projection.
        projection: String,
        /// The error.
        error: StoreError,
    },
    /// The sink failed in a way retrying will not fix.
    #[error("projection {projection}: {reason}")]
    Fatal {
        /// The projection.
        projection: String,
        /// Why.
        reason: String,
    },
}

/// The outcome of re-driving dead letters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedriveReport {
    /// Dead letters handled successfully and forgotten.
    pub redriven: Vec<DeadLetter>,
    /// Dead letters that failed again (they stay), with the new error.
    pub failed: Vec<(DeadLetter, String)>,
}

impl RedriveReport {
    /// One line: how many were re-driven, and each that failed again with its error.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} re-driven, {} failed again",
            self.redriven.len(),
            self.failed.len()
        );
        for (letter, error) in &self.failed {
            line.push_str(&format!(
                "; {} revision {}: {error}",
                letter.stream, letter.revision
            ));
        }
        line
    }
}

/// What ends a run under a lease early.
pub(super) enum Halt {
    Shutdown,
    /// A fault that retrying fixes: give the lease up, back off, take it again and resume from
    /// the checkpoint.
    Fault(String),
    Error(ProjectionError),
}

impl From<ProjectionError> for Halt {
    fn from(error: ProjectionError) -> Self {
        Self::Error(error)
    }
}

#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is an event; boxing it would cost an allocation per event"
)]
enum Message {
    Event(RecordedEvent),
    CaughtUp,
    Failed(StoreError),
}

/// The reading half: a task pulling the subscription into a channel, one permit per event.
struct Source {
    messages: mpsc::UnboundedReceiver<Message>,
    /// One permit per event the buffer may hold; an event's permit comes back when it is
    /// checkpointed.
    room: Arc<Semaphore>,
    /// Events read from the subscription and not yet checkpointed.
    held: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs one [`Projection`]: follows the store from the sink's checkpoint, hands batches to the
/// sink, and keeps going — catching up, then live — until told to stop.
///
/// ```no_run
/// # use decider_core::projection::*;
/// # use decider_core::{EventFilter, RecordedEvent};
/// # use decider_store_memory::MemoryStore;
/// # struct Counter;
/// # impl EventHandler for Counter {
/// #     async fn handle(&self, _: &[RecordedEvent]) -> Result<(), SinkError> { Ok(()) }
/// # }
/// # async fn example(store: MemoryStore, stop: tokio::sync::oneshot::Receiver<()>) -> Result<(), ProjectionError> {
/// let sink = CheckpointedSink::new(Counter, MemoryCheckpoints::default(), MemoryDeadLetters::default());
/// let projection = Projection::new("deposits")
///     .with_filter(EventFilter::all().with_event_types(["Deposited"]));
/// let runner = ProjectionRunner::new(store, projection, sink);
/// let status = runner.status_handle(); // readable from any task while it runs
/// runner.run(async { stop.await.ok(); }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ProjectionRunner<S, K, L = Unleased, C = Uncontrolled> {
    store: S,
    sink: K,
    lease: L,
    control: C,
    /// This runner's name in the control plane's reports.
    runner_id: String,
    projection: Projection,
    options: RunnerOptions,
    status: StatusHandle,
}

impl<S, K> ProjectionRunner<S, K, Unleased, Uncontrolled> {
    /// A runner of `projection` over `store` into `sink`, with default options, no lease and
    /// no control plane.
    pub fn new(store: S, projection: Projection, sink: K) -> Self {
        let status = StatusHandle::new(projection.name());
        Self {
            store,
            sink,
            lease: Unleased,
            control: Uncontrolled,
            runner_id: runner_id(),
            projection,
            options: RunnerOptions::default(),
            status,
        }
    }
}

impl<S, K, L, C> ProjectionRunner<S, K, L, C> {
    /// The same runner with other options.
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// The same runner taking `lease` before it runs, so that only one runner of the projection
    /// is ever active.
    pub fn with_lease<L2: Lease>(self, lease: L2) -> ProjectionRunner<S, K, L2, C> {
        ProjectionRunner {
            store: self.store,
            sink: self.sink,
            lease,
            control: self.control,
            runner_id: self.runner_id,
            projection: self.projection,
            options: self.options,
            status: self.status,
        }
    }

    /// The same runner reporting to `control` and taking operators' requests from it (see
    /// [`ProjectionControl`]): its status every [`RunnerOptions::status_interval`], and, while
    /// it holds the lease, the rebuilds and re-drives asked of its projection.
    ///
    /// ```
    /// # use decider_core::projection::*;
    /// # use decider_store_memory::MemoryStore;
    /// # use std::sync::Arc;
    /// # struct Counter;
    /// # impl EventHandler for Counter {
    /// #     async fn handle(&self, _: &[decider_core::RecordedEvent]) -> Result<(), SinkError> { Ok(()) }
    /// # }
    /// let control = Arc::new(MemoryControl::default());
    /// let sink = CheckpointedSink::new(Counter, MemoryCheckpoints::default(), MemoryDeadLetters::default());
    /// let runner = ProjectionRunner::new(MemoryStore::new(), Projection::new("counter"), sink)
    ///     .with_control(control.clone());
    /// // An operator, elsewhere: `control.request("counter", ControlAction::Rebuild)`.
    /// # let _ = runner;
    /// ```
    pub fn with_control<C2: ProjectionControl>(self, control: C2) -> ProjectionRunner<S, K, L, C2> {
        ProjectionRunner {
            store: self.store,
            sink: self.sink,
            lease: self.lease,
            control,
            runner_id: self.runner_id,
            projection: self.projection,
            options: self.options,
            status: self.status,
        }
    }

    /// The current status.
    pub fn status(&self) -> ProjectionStatus {
        self.status.get()
    }

    /// A handle that reads the status from any task, also while [`run`](Self::run) runs.
    pub fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }

    /// The sink.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// The projection.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// The options.
    pub fn options(&self) -> &RunnerOptions {
        &self.options
    }

    pub(super) fn lease(&self) -> &L {
        &self.lease
    }

    pub(super) fn control(&self) -> &C {
        &self.control
    }

    /// A partition given up after a fault, not taken back by this process: its status shows it
    /// waiting for its lease here (another process may hold it now), no longer the fault.
    pub(super) fn fault_passed(&self) {
        self.status.update(|status| {
            if matches!(status.state, RunnerState::Reconnecting { .. }) {
                status.state = RunnerState::WaitingForLease;
            }
        });
    }
}

impl<S, K, L, C> ProjectionRunner<S, K, L, C>
where
    S: EventStore + Clone,
    K: Sink,
    L: Lease,
    C: ProjectionControl,
{
    pub(super) fn name(&self) -> &str {
        self.projection.name()
    }

    /// Runs until `shutdown` resolves (then finishes the batch in hand, checkpoints it and
    /// returns `Ok`), or until an error that retrying cannot fix.
    ///
    /// Faults are weather: a lost lease, a lost connection of the subscription, the sink, the
    /// checkpoint store or the lease, a database restart. On one, the runner drops the batch in
    /// hand uncommitted, backs off (capped exponential, jittered), takes its lease again and
    /// resumes from its checkpoint; [`status`](Self::status) says
    /// [`Reconnecting`](RunnerState::Reconnecting) meanwhile. Only a poison event under
    /// [`PoisonPolicy::Stop`] and a sink's fatal error end the run with an error.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProjectionError> {
        let mut shutdown = pin!(shutdown);
        let outcome = tokio::select! {
            outcome = self.run_leases(&mut shutdown) => outcome,
            never = self.measure_lag_periodically() => match never {},
        };
        let outcome = match outcome {
            Ok(()) => {
                self.status.set_state(RunnerState::Stopped);
                Ok(())
            }
            Err(error) => {
                tracing::error!(projection = self.name(), %error, "projection stopped");
                self.status.set_state(RunnerState::Failed {
                    error: error.to_string(),
                });
                Err(error)
            }
        };
        // So that an operator sees at once that it stopped, rather than a report going stale.
        self.report().await;
        outcome
    }

    /// Runs under `lease`, already taken (by a [`PartitionedRunner`](super::PartitionedRunner)'s
    /// claim), until shut down, failed, or a fault; measures the lag meanwhile, and reports how
    /// it ended. A fault is recorded in `faults`; the caller backs off and claims again.
    pub(super) async fn run_claimed(
        &self,
        mut lease: LeaseGuard,
        shutdown: &mut Pin<&mut (impl Future<Output = ()> + Send)>,
        faults: &mut Faults,
    ) -> Result<(), Halt> {
        let outcome = tokio::select! {
            outcome = self.run_leased(&mut lease, shutdown, faults) => outcome,
            never = self.measure_lag_periodically() => match never {},
        };
        // Given up before the report, so that another runner may take over at once.
        drop(lease);
        match &outcome {
            Ok(()) | Err(Halt::Shutdown) => self.status.set_state(RunnerState::Stopped),
            Err(Halt::Error(error)) => {
                tracing::error!(projection = self.name(), %error, "projection stopped");
                self.status.set_state(RunnerState::Failed {
                    error: error.to_string(),
                });
            }
            Err(Halt::Fault(fault)) => {
                tracing::warn!(projection = self.name(), %fault, "fault; giving the partition up");
                faults.record(fault.clone());
                self.status.set_state(faults.state());
            }
        }
        self.report().await;
        outcome
    }

    /// Takes the lease and runs under it, again after every fault, until shut down or failed.
    async fn run_leases(
        &self,
        shutdown: &mut Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<(), ProjectionError> {
        let mut faults = Faults::default();
        loop {
            self.status.set_state(RunnerState::WaitingForLease);
            let acquired = tokio::select! {
                lease = self.lease.acquire(self.name()) => lease,
                () = shutdown.as_mut() => return Ok(()),
            };
            let fault = match acquired {
                Ok(mut lease) => match self.run_leased(&mut lease, shutdown, &mut faults).await {
                    Ok(()) | Err(Halt::Shutdown) => return Ok(()),
                    Err(Halt::Error(error)) => return Err(error),
                    Err(Halt::Fault(fault)) => fault,
                },
                Err(error) if error.is_retryable() => format!("cannot take the lease: {error}"),
                Err(error) => return Err(self.store_error(error)),
            };
            // The lease goes first (dropped above), so another runner may take over meanwhile.
            tracing::warn!(projection = self.name(), %fault, attempts = faults.attempts + 1, "fault; reconnecting");
            faults.record(fault);
            self.status.set_state(faults.state());
            let delay = faults.backoff(self.options.retry_base, self.options.retry_max);
            if self.pause(shutdown, delay).await.is_err() {
                return Ok(());
            }
        }
    }

    async fn run_leased(
        &self,
        lease: &mut LeaseGuard,
        shutdown: &mut Pin<&mut (impl Future<Output = ()> + Send)>,
        faults: &mut Faults,
    ) -> Result<(), Halt> {
        // Operators' requests are looked for at the pace of the status reports; the first look
        // is at once, for what was asked while no runner held the lease.
        let mut requests = tokio::time::interval(self.options.status_interval);
        requests.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unrecorded = Unrecorded::default();
        loop {
            let mut checkpoint = match self.sink.checkpoint(self.name()).await {
                Ok(checkpoint) => checkpoint,
                Err(error) => return Err(self.refusal(error)),
            };
            self.status.update(|status| {
                status.checkpoint = checkpoint;
                status.in_flight = 0;
                status.state = RunnerState::CatchingUp;
            });
            let mut source = self.start_source(checkpoint);
            let resume = loop {
                let first = tokio::select! {
                    biased;
                    () = shutdown.as_mut() => return Err(Halt::Shutdown),
                    () = lease.lost() => return Err(Halt::Fault("the lease was lost".to_owned())),
                    _ = requests.tick() => {
                        match self.serve_requests(&mut unrecorded).await {
                            Some(rebuild) => break Resume::Rebuild(rebuild),
                            None => continue,
                        }
                    }
                    message = source.messages.recv() => message,
                };
                let mut batch = Vec::new();
                let mut caught_up = false;
                let mut failure = None;
                match first {
                    Some(Message::Event(event)) => batch.push(event),
                    Some(Message::CaughtUp) => caught_up = true,
                    Some(Message::Failed(error)) => failure = Some(error),
                    None => failure = Some(StoreError::unavailable("subscription ended")),
                }
                if !batch.is_empty() {
                    self.fill(&mut source, &mut batch, &mut caught_up, &mut failure)
                        .await;
                    if lease.is_lost() {
                        return Err(Halt::Fault("the lease was lost".to_owned()));
                    }
                    match self.apply(&batch, checkpoint).await {
                        Ok(applied) => checkpoint = applied,
                        Err(Halt::Error(ProjectionError::CheckpointMoved {
                            expected,
                            actual,
                            ..
                        })) => {
                            break Resume::CheckpointMoved { expected, actual };
                        }
                        Err(halt) => return Err(halt),
                    }
                    faults.clear();
                    source.room.add_permits(batch.len());
                    let held = source.held.fetch_sub(batch.len(), Ordering::SeqCst) - batch.len();
                    self.status.update(|s| s.in_flight = held);
                }
                if caught_up {
                    faults.clear();
                    self.status.set_state(RunnerState::Live);
                    // Everything the subscription had is handled and checkpointed: no lag now
                    // (the next measurement tells what has been appended since).
                    self.status.caught_up();
                }
                if let Some(error) = failure {
                    // Everything the source delivered is handled; resume from the checkpoint.
                    return Err(if error.is_retryable() {
                        Halt::Fault(format!("the subscription failed: {error}"))
                    } else {
                        Halt::Error(self.store_error(error))
                    });
                }
            };
            // Nothing is read while the read model is reset, nor after a restart of the reads.
            drop(source);
            match resume {
                Resume::CheckpointMoved { expected, actual } => {
                    // Another runner (one whose lease had just been lost, finishing its last
                    // batch) moved the checkpoint; nothing of this batch was kept by an
                    // exactly-once sink. Carry on from where it left off.
                    tracing::warn!(
                        projection = self.name(),
                        ?expected,
                        ?actual,
                        "the checkpoint moved under this runner; resuming from it"
                    );
                }
                Resume::Rebuild(request) => {
                    let result =
                        match self.reset_read_model().await {
                            Ok(()) => {
                                // Before the request is done, so that no report after it shows the
                                // state from before the reset.
                                self.status.update(|status| {
                                    status.state = RunnerState::CatchingUp;
                                    status.lag = None;
                                });
                                Ok("read model emptied and checkpoint forgotten; replaying the log"
                                .to_owned())
                            }
                            // The request stays pending: the next holder of the lease (this runner,
                            // once reconnected) carries it out.
                            Err(SinkError::Retryable(reason)) => return Err(Halt::Fault(reason)),
                            Err(other) => Err(format!("the reset failed: {other}")),
                        };
                    unrecorded
                        .complete(&self.control, &self.runner_id, request.id, result)
                        .await;
                }
            }
        }
    }

    /// Looks for operators' requests: carries out the re-drives at once, and returns the
    /// first rebuild, which the caller carries out with its reads stopped.
    async fn serve_requests(&self, unrecorded: &mut Unrecorded) -> Option<ControlRequest> {
        let pending = match self.control.pending(self.name()).await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::debug!(projection = self.name(), %error, "cannot look for requests");
                return None;
            }
        };
        for request in pending {
            if unrecorded
                .retry(&self.control, &self.runner_id, request.id)
                .await
            {
                continue;
            }
            tracing::info!(projection = self.name(), id = request.id, action = %request.action, "carrying out an operator's request");
            match request.action {
                ControlAction::Rebuild if self.projection.filter().partition.is_some() => {
                    // A sink's reset empties the whole read model: the other partitions would
                    // lose their rows and keep their checkpoints.
                    let refused = format!(
                        "{} is one partition of a projection, and a partition cannot be rebuilt \
                         alone (its reset would empty every partition's read model): build a new \
                         version beside it (BlueGreen), or stop the runners and call \
                         PartitionedRunner::rebuild",
                        self.name()
                    );
                    unrecorded
                        .complete(&self.control, &self.runner_id, request.id, Err(refused))
                        .await;
                }
                ControlAction::Rebuild => return Some(request),
                ControlAction::RedriveDeadLetters => {
                    let result = match self.redrive_dead_letters().await {
                        Ok(report) => Ok(report.summary()),
                        Err(error) => Err(error.to_string()),
                    };
                    unrecorded
                        .complete(&self.control, &self.runner_id, request.id, result)
                        .await;
                }
            }
        }
        None
    }

    /// Adds to `batch` what arrives within the linger time, up to the batch size.
    async fn fill(
        &self,
        source: &mut Source,
        batch: &mut Vec<RecordedEvent>,
        caught_up: &mut bool,
        failure: &mut Option<StoreError>,
    ) {
        let deadline = tokio::time::Instant::now() + self.options.max_linger;
        while batch.len() < self.options.max_batch {
            match tokio::time::timeout_at(deadline, source.messages.recv()).await {
                Ok(Some(Message::Event(event))) => batch.push(event),
                Ok(Some(Message::CaughtUp)) => {
                    // Live from here: hand over what is there rather than wait for more.
                    *caught_up = true;
                    return;
                }
                Ok(Some(Message::Failed(error))) => {
                    *failure = Some(error);
                    return;
                }
                Ok(None) => {
                    *failure = Some(StoreError::unavailable("subscription ended"));
                    return;
                }
                Err(_) => return,
            }
        }
    }

    fn start_source(&self, after: Option<Position>) -> Source {
        // A buffer of 0 could never hold the next event.
        let room = Arc::new(Semaphore::new(self.options.buffer.max(1)));
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (sender, messages) = mpsc::unbounded_channel();
        let subscription = self.store.subscribe_all(after, self.projection.filter());
        let task = tokio::spawn({
            let (room, held) = (room.clone(), held.clone());
            async move {
                let mut subscription = pin!(subscription);
                let mut has_room = false;
                loop {
                    // Room is taken *before* the subscription is polled: while the buffer is
                    // full the subscription is not asked for the next event, so no further page
                    // is fetched.
                    if !has_room {
                        match room.acquire().await {
                            Ok(permit) => permit.forget(),
                            Err(_) => return,
                        }
                        has_room = true;
                    }
                    let message = match subscription.next().await {
                        Some(Ok(SubscriptionMessage::Event(event))) => {
                            has_room = false;
                            held.fetch_add(1, Ordering::SeqCst);
                            Message::Event(event)
                        }
                        Some(Ok(SubscriptionMessage::CaughtUp)) => Message::CaughtUp,
                        Some(Err(error)) => Message::Failed(error),
                        None => return,
                    };
                    let last = matches!(message, Message::Failed(_));
                    if sender.send(message).is_err() || last {
                        return;
                    }
                }
            }
        });
        Source {
            messages,
            room,
            held,
            task,
        }
    }

    /// Applies `batch`, following the poison policy for events the sink refuses; returns the
    /// new checkpoint.
    async fn apply(
        &self,
        batch: &[RecordedEvent],
        mut checkpoint: Option<Position>,
    ) -> Result<Option<Position>, Halt> {
        let started = Instant::now();
        let span = tracing::info_span!(
            "projection_batch",
            projection = self.name(),
            events = batch.len(),
            first = ?batch.first().map(|e| e.position),
        );
        // `batch[..start]` is handled and checkpointed; `batch[start..end]` is tried next.
        let (mut start, mut end) = (0, batch.len());
        while start < batch.len() {
            let window = &batch[start..end];
            let applied = self
                .call_sink(self.sink.apply(self.name(), window, checkpoint))
                .instrument(span.clone())
                .await;
            match applied {
                Ok(()) => {
                    trace_applied(&span, window);
                    checkpoint = window.last().map(|e| e.position).or(checkpoint);
                    start = end;
                    end = batch.len();
                }
                Err(Refusal::Halt(halt)) => return Err(halt),
                // Apply what comes before the poison first; it may hold another one.
                Err(Refusal::Poison { index, .. }) if index > 0 && index < window.len() => {
                    end = start + index;
                }
                Err(Refusal::Poison { index: 0, reason }) => {
                    checkpoint = Some(self.on_poison(&window[0], &reason, checkpoint).await?);
                    start += 1;
                    end = batch.len();
                }
                Err(Refusal::Poison { index, .. }) => {
                    return Err(self.fatal(format!(
                        "the sink named event {index} of a batch of {} as poison",
                        window.len()
                    )));
                }
            }
        }
        if let Some(last) = checkpoint {
            let last_recorded_at = batch.last().map(|event| event.recorded_at);
            self.status
                .batch_done(batch.len(), last, started.elapsed(), last_recorded_at);
        }
        Ok(checkpoint)
    }

    /// Stops on `event`, or dead-letters it and returns its position as the new checkpoint.
    async fn on_poison(
        &self,
        event: &RecordedEvent,
        reason: &str,
        checkpoint: Option<Position>,
    ) -> Result<Position, Halt> {
        match self.options.poison {
            PoisonPolicy::Stop => Err(Halt::Error(ProjectionError::Poison {
                projection: self.name().to_owned(),
                stream: event.stream.clone(),
                revision: event.revision,
                event_id: event.id,
                position: event.position,
                reason: reason.to_owned(),
            })),
            PoisonPolicy::DeadLetter => {
                tracing::warn!(
                    projection = self.name(),
                    stream = %event.stream,
                    revision = event.revision,
                    reason,
                    "dead-lettering an event"
                );
                match self
                    .call_sink(
                        self.sink
                            .dead_letter(self.name(), event, reason, checkpoint),
                    )
                    .await
                {
                    Ok(()) => {
                        crate::telemetry::projection_dead_letter(self.name());
                        Ok(event.position)
                    }
                    Err(Refusal::Halt(halt)) => Err(halt),
                    Err(Refusal::Poison { reason, .. }) => {
                        Err(self.fatal(format!("cannot dead-letter an event: {reason}")))
                    }
                }
            }
        }
    }

    /// Calls the sink, telling why a call did not succeed.
    async fn call_sink<F>(&self, call: F) -> Result<(), Refusal>
    where
        F: Future<Output = Result<(), SinkError>>,
    {
        match call.await {
            Ok(()) => Ok(()),
            Err(SinkError::Poison { index, reason }) => Err(Refusal::Poison { index, reason }),
            Err(other) => Err(Refusal::Halt(self.refusal(other))),
        }
    }

    /// What a sink's error, other than poison, means for the run.
    fn refusal(&self, error: SinkError) -> Halt {
        match error {
            SinkError::Retryable(reason) => Halt::Fault(reason),
            SinkError::CheckpointMoved { expected, actual } => {
                Halt::Error(ProjectionError::CheckpointMoved {
                    projection: self.name().to_owned(),
                    expected,
                    actual,
                })
            }
            SinkError::Poison { reason, .. } | SinkError::Fatal(reason) => self.fatal(reason),
        }
    }

    async fn pause(
        &self,
        shutdown: &mut Pin<&mut (impl Future<Output = ()> + Send)>,
        delay: Duration,
    ) -> Result<(), Halt> {
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = shutdown.as_mut() => Err(Halt::Shutdown),
        }
    }

    /// Measures the lag every [`RunnerOptions::status_interval`], whatever the runner does.
    async fn measure_lag_periodically(&self) -> std::convert::Infallible {
        let mut ticks = tokio::time::interval(self.options.status_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = self.measure_lag().await {
                tracing::debug!(projection = self.name(), %error, "cannot measure the lag");
            }
            self.report().await;
        }
    }

    /// Tells the control plane the current status. A report that fails is only logged: the
    /// next one, an interval later, replaces it.
    async fn report(&self) {
        let report = RunnerReport::of(
            &self.status.get(),
            &self.runner_id,
            self.options.status_interval,
        );
        if let Err(error) = self.control.report(&report).await {
            tracing::debug!(projection = self.name(), %error, "cannot report the status");
        }
    }

    /// Reads the head and the first event the projection has yet to handle, after the
    /// checkpoint it holds (or, while another runner may hold the lease, the sink's).
    async fn measure_lag(&self) -> Result<(), String> {
        let status = self.status.get();
        let from_sink = !matches!(status.state, RunnerState::CatchingUp | RunnerState::Live);
        let checkpoint = if from_sink {
            self.sink
                .checkpoint(self.name())
                .await
                .map_err(|error| error.to_string())?
        } else {
            status.checkpoint
        };
        let head = self
            .store
            .head_position()
            .await
            .map_err(|error| error.to_string())?;
        let mut pending = pin!(
            self.store
                .read_all(checkpoint, Some(1), self.projection.filter())
        );
        let pending = match pending.next().await {
            Some(Ok(event)) => Some(event.position),
            Some(Err(error)) => return Err(error.to_string()),
            None => None,
        };
        self.status
            .measured(checkpoint, from_sink, head, lag(pending, head));
        Ok(())
    }

    fn fatal(&self, reason: String) -> Halt {
        Halt::Error(ProjectionError::Fatal {
            projection: self.name().to_owned(),
            reason,
        })
    }

    pub(super) fn store_error(&self, error: StoreError) -> ProjectionError {
        ProjectionError::Store {
            projection: self.name().to_owned(),
            error,
        }
    }

    /// Empties the read model (the sink's reset hook) and forgets the checkpoint, so that the
    /// next [`run`](Self::run) replays the log from the start. Takes the lease first: it waits
    /// while a runner of the projection is active.
    pub async fn rebuild(&self) -> Result<(), ProjectionError> {
        let _lease = self
            .lease
            .acquire(self.name())
            .await
            .map_err(|error| self.store_error(error))?;
        self.reset_read_model()
            .await
            .map_err(|error| self.handle_error(error))
    }

    /// [`reset_read_model`](Self::reset_read_model) for a [`PartitionedRunner`](super::PartitionedRunner)
    /// that holds the lease.
    pub(super) async fn reset_leased(&self) -> Result<(), ProjectionError> {
        self.reset_read_model()
            .await
            .map_err(|error| self.handle_error(error))
    }

    /// The sink's reset hook and the checkpoint's reset, for a caller that holds the lease.
    async fn reset_read_model(&self) -> Result<(), SinkError> {
        tracing::info!(projection = self.name(), "rebuilding");
        self.sink.reset(self.name()).await?;
        self.status.set_checkpoint(None);
        Ok(())
    }

    /// The checkpoint, as the sink keeps it (whichever process runs the projection): the
    /// position a read-your-writes wait compares with a write's.
    pub async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
        self.sink
            .checkpoint(self.name())
            .await
            .map_err(|error| self.handle_error(error))
    }

    /// The events this projection gave up on under [`PoisonPolicy::DeadLetter`].
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, ProjectionError> {
        self.sink
            .dead_letters(self.name())
            .await
            .map_err(|error| self.handle_error(error))
    }

    /// Hands every dead letter to the sink again (after the handler is fixed); those that succeed
    /// are forgotten, the others stay.
    pub async fn redrive_dead_letters(&self) -> Result<RedriveReport, ProjectionError> {
        let mut report = RedriveReport::default();
        for letter in self.dead_letters().await? {
            let event = self.load_event(&letter).await?;
            match self.sink.redrive(self.name(), &event).await {
                Ok(()) => report.redriven.push(letter),
                Err(error) => report.failed.push((letter, error.to_string())),
            }
        }
        Ok(report)
    }

    async fn load_event(&self, letter: &DeadLetter) -> Result<RecordedEvent, ProjectionError> {
        let mut read = pin!(self.store.read_stream(
            &letter.stream,
            StreamFrom::Revision(letter.revision),
            Direction::Forward,
            Some(1),
        ));
        match read.next().await {
            Some(Ok(event)) if event.id == letter.event_id => Ok(event),
            Some(Err(error)) => Err(self.store_error(error)),
            _ => Err(ProjectionError::Fatal {
                projection: self.name().to_owned(),
                reason: format!(
                    "dead-lettered event {} is no longer at {} revision {}",
                    letter.event_id, letter.stream, letter.revision
                ),
            }),
        }
    }

    fn handle_error(&self, error: SinkError) -> ProjectionError {
        match error {
            SinkError::CheckpointMoved { expected, actual } => ProjectionError::CheckpointMoved {
                projection: self.name().to_owned(),
                expected,
                actual,
            },
            other => ProjectionError::Fatal {
                projection: self.name().to_owned(),
                reason: other.to_string(),
            },
        }
    }
}

/// Why a runner stops its reads and starts them over from the sink's checkpoint.
enum Resume {
    /// The checkpoint moved under the runner.
    CheckpointMoved {
        expected: Option<Position>,
        actual: Option<Position>,
    },
    /// An operator asked for a rebuild.
    Rebuild(ControlRequest),
}

/// Requests this runner carried out but could not mark done (the control plane failed): they
/// are marked again rather than carried out again while they show as pending.
#[derive(Debug, Default)]
struct Unrecorded(std::collections::HashMap<u64, Result<String, String>>);

impl Unrecorded {
    async fn complete(
        &mut self,
        control: &impl ProjectionControl,
        runner: &str,
        id: u64,
        result: Result<String, String>,
    ) {
        let result = result
            .map(|text| super::storable_text(&text))
            .map_err(|text| super::storable_text(&text));
        if let Err(error) = control.complete(id, runner, result.clone()).await {
            tracing::warn!(id, %error, "cannot mark an operator's request done; will again");
            self.0.insert(id, result);
        }
    }

    /// Whether request `id` was carried out already (and tries to mark it done again).
    async fn retry(&mut self, control: &impl ProjectionControl, runner: &str, id: u64) -> bool {
        let Some(result) = self.0.remove(&id) else {
            return false;
        };
        self.complete(control, runner, id, result).await;
        true
    }
}

/// Faults in a row, with no progress in between: what the runner reports while it recovers,
/// and how long it backs off.
#[derive(Debug, Default)]
pub(super) struct Faults {
    since: Option<SystemTime>,
    attempts: u32,
    last_error: String,
}

impl Faults {
    pub(super) fn record(&mut self, error: String) {
        self.since.get_or_insert_with(SystemTime::now);
        self.attempts = self.attempts.saturating_add(1);
        self.last_error = error;
    }

    /// Progress: the next fault starts a new run of faults.
    fn clear(&mut self) {
        if self.attempts > 0 {
            tracing::info!(attempts = self.attempts, "recovered");
        }
        *self = Self::default();
    }

    pub(super) fn state(&self) -> RunnerState {
        RunnerState::Reconnecting {
            since: self.since.unwrap_or_else(SystemTime::now),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
        }
    }

    /// The pause before the next attempt: `base` doubled per fault up to `max`, then drawn from
    /// its upper half ("equal jitter"), so that runners that lost their database together do
    /// not all come back at the same instant, yet none retries at once.
    pub(super) fn backoff(&self, base: Duration, max: Duration) -> Duration {
        backoff::equal_jitter(backoff::capped(base, self.attempts.saturating_sub(1), max))
    }
}

/// Why a sink call did not succeed, after retries.
enum Refusal {
    Poison { index: usize, reason: String },
    Halt(Halt),
}

/// Marks each traced event of `applied` with a `projection_event` span in its own trace, inside
/// `batch`: the sink handles a batch at once, so the span says when it was applied, not how
/// long it took. Costs nothing per event when the span is disabled, and nothing for events
/// without a trace context.
fn trace_applied(batch: &tracing::Span, applied: &[RecordedEvent]) {
    for event in applied.iter().filter(|e| e.metadata.trace_parent.is_some()) {
        let span = reaction_span!(parent: batch, "projection_event", event);
        if span.is_disabled() {
            return;
        }
        Reaction::begin(&span, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_fault_up_to_the_cap_and_keeps_to_the_upper_half() {
        let (base, max) = (Duration::from_millis(10), Duration::from_millis(300));
        let mut faults = Faults::default();
        for attempt in 1..=40u32 {
            faults.record(format!("fault {attempt}"));
            let bound = (base * 2u32.pow(attempt.min(10) - 1)).min(max);
            for _ in 0..50 {
                let delay = faults.backoff(base, max);
                assert!(delay <= bound && delay >= bound / 2, "{attempt}: {delay:?}");
            }
        }
        let RunnerState::Reconnecting {
            attempts,
            last_error,
            ..
        } = faults.state()
        else {
            panic!("not reconnecting")
        };
        assert_eq!((attempts, last_error.as_str()), (40, "fault 40"));
        faults.clear();
        faults.record("again".to_owned());
        assert!(
            faults.backoff(base, max) <= base,
            "progress starts the backoff over"
        );
    }
}
