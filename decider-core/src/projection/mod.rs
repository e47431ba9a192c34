//! Projections: read models, integrations and sagas that follow the log.
//!
//! A [`Projection`] is a name and an event filter. A [`ProjectionRunner`] subscribes to the
//! store from the projection's checkpoint and moves events through
//! `subscription → bounded buffer → batcher → sink → checkpoint`:
//!
//! - **Backpressure.** The buffer holds at most [`RunnerOptions::buffer`] events that are read
//!   but not yet checkpointed; while it is full the subscription is not polled, so no further page
//!   is fetched. A slow sink slows its reader; memory does not grow.
//! - **Batches** hold up to [`RunnerOptions::max_batch`] events, or what arrived within
//!   [`RunnerOptions::max_linger`].
//! - **Sinks own atomicity.** [`CheckpointedSink`] runs an [`EventHandler`] then saves the
//!   checkpoint (at least once); `decider-store-postgres`'s `PgTransactionalSink` does both in
//!   one transaction (exactly once).
//! - **Faults are weather.** A lost lease, a lost connection (of the subscription, the sink, the
//!   checkpoint store or the lease), a database restart, a sink's retryable error: the runner
//!   drops the batch in hand uncommitted, backs off (capped exponential, jittered), takes its
//!   lease again and resumes from its checkpoint, reporting
//!   [`RunnerState::Reconnecting`] meanwhile. It never gives up on those.
//! - **Failures** are what retrying cannot fix. A poison event (a handler error that retrying
//!   cannot fix) follows the [`PoisonPolicy`]: `Stop` (the default; the runner halts and reports
//!   the event) or `DeadLetter` (kept with the error; the runner moves on;
//!   [`ProjectionRunner::redrive_dead_letters`] tries them again later). A sink's fatal error
//!   stops the runner.
//! - **Operations.** [`ProjectionRunner::rebuild`] resets the read model and the checkpoint;
//!   [`ProjectionRunner::status`] tells the checkpoint, head, lag, rate, batch latency and state;
//!   the lag is measured every [`RunnerOptions::status_interval`] in every state, also while
//!   another process holds the lease.
//! - **One active consumer** per projection through a [`Lease`].
//! - **Sagas** run as projections whose handler sends commands ([`SagaHandler`]); a process, a
//!   saga with state, is driven step by step by a [`ProcessHandler`].
//!
//! ```
//! use decider_core::projection::*;
//! use decider_core::{EventData, EventFilter, EventStore, ExpectedVersion, RecordedEvent, StreamId};
//! use decider_store_memory::MemoryStore;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! /// Counts deposits (an upsert would be idempotent; a counter in memory is rebuilt anyway).
//! #[derive(Default)]
//! struct Deposits(AtomicUsize);
//! impl EventHandler for Deposits {
//!     async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
//!         self.0.fetch_add(batch.len(), Ordering::SeqCst);
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let stream = StreamId::new("account-1").unwrap();
//! let deposit = || EventData::json("Deposited", r#"{"amount":5}"#);
//! store.append(&stream, ExpectedVersion::Any, vec![deposit(), deposit()]).await.unwrap();
//!
//! let sink = CheckpointedSink::new(Deposits::default(), MemoryCheckpoints::default(), MemoryDeadLetters::default());
//! let projection = Projection::new("deposits").with_filter(EventFilter::all().with_event_types(["Deposited"]));
//! let runner = ProjectionRunner::new(store, projection, sink);
//! let status = runner.status_handle();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = async { runner.run(async { stopped.await.ok(); }).await };
//! let watching = async {
//!     while status.get().handled < 2 { tokio::time::sleep(std::time::Duration::from_millis(5)).await; }
//!     stop.send(()).unwrap();
//! };
//! let (result, ()) = tokio::join!(running, watching);
//! result.unwrap();
//! assert_eq!(runner.sink().handler().0.load(Ordering::SeqCst), 2);
//! # });
//! ```

mod blue_green;
mod checkpoint;
mod control;
mod dead_letter;
mod lease;
mod partition;
mod partitioned;
mod runner;
mod saga;
mod sink;
mod status;

use std::time::Duration;

pub use blue_green::{BlueGreen, Switch, version_name, version_number};
pub use checkpoint::{CheckpointError, CheckpointStore, MemoryCheckpoints};
pub use control::{
    ControlAction, ControlRequest, MemoryControl, ProjectionControl, ReportedState, RequestDone,
    RunnerReport, Uncontrolled, runner_id,
};
pub use dead_letter::{DeadLetter, DeadLetterStore, MemoryDeadLetters};
pub use lease::{Lease, LeaseGuard, LocalLeases, Unleased};
pub use partition::{Partition, PartitionError, stream_hash};
pub use partitioned::{ClaimOptions, PartitionedRunner};
pub use runner::{ProjectionError, ProjectionRunner, RedriveReport};
pub use saga::{ProcessHandler, SagaHandler};
pub use sink::{CheckpointedSink, EventHandler, Sink, SinkError};
pub use status::{ProjectionStatus, RunnerState, StatusHandle};

use crate::store::EventFilter;

/// `text` with U+0000 replaced: errors are kept as text by stores (dead letters, reports) and
/// PostgreSQL's `text` cannot hold U+0000, yet an error may quote an event's bytes.
pub(crate) fn storable_text(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// A named follower of the log: the name keys its checkpoint, lease and dead letters; the filter
/// says which events it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    name: String,
    filter: EventFilter,
}

impl Projection {
    /// A projection of every event.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            filter: EventFilter::all(),
        }
    }

    /// The same projection of only the events `filter` passes (by type and/or category).
    pub fn with_filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its filter.
    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }

    /// The projection of one of its partitions: named `<name>[<index>/<count>]` (so that it has
    /// its own checkpoint, lease and dead letters), passing only the events of the partition's
    /// streams. See [`PartitionedRunner`].
    ///
    /// ```
    /// use decider_core::projection::{Partition, Projection};
    ///
    /// let part = Projection::new("balances").partition(Partition::new(1, 4).unwrap());
    /// assert_eq!(part.name(), "balances[1/4]");
    /// ```
    pub fn partition(&self, partition: Partition) -> Self {
        Self {
            name: format!("{}[{partition}]", self.name),
            filter: self.filter.clone().with_partition(partition),
        }
    }

    /// The partition of this projection, among `count`, that holds `stream`'s events: the one
    /// whose checkpoint a read-your-writes wait on `stream` watches. With `count` 1 it is this
    /// projection itself.
    pub fn partition_for(
        &self,
        stream: &crate::StreamId,
        count: u32,
    ) -> Result<Self, PartitionError> {
        let partition = Partition::of(stream, count)?;
        Ok(if count == 1 {
            self.clone()
        } else {
            self.partition(partition)
        })
    }
}

/// What the runner does with an event its handler cannot handle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PoisonPolicy {
    /// Halt and report the event, its stream and revision, and the error. Events before it are
    /// handled and checkpointed.
    #[default]
    Stop,
    /// Keep the event and the error as a dead letter and move on.
    DeadLetter,
}

/// How a runner reads, batches and retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerOptions {
    /// Events read and not yet checkpointed, at most. Default 1,024.
    pub buffer: usize,
    /// Events per batch, at most. Default 256.
    pub max_batch: usize,
    /// How long a batch waits for more events once it has one. Default 10 ms.
    pub max_linger: Duration,
    /// What to do with a poison event. Default [`PoisonPolicy::Stop`].
    pub poison: PoisonPolicy,
    /// Backoff after a first fault (a lost connection or lease, a retryable sink error);
    /// doubles with every fault in a row up to `retry_max`, and is drawn from the upper half of
    /// that bound. Default 50 ms.
    pub retry_base: Duration,
    /// Longest backoff. Default 5 s.
    pub retry_max: Duration,
    /// How often the lag is measured (a head read and a one-event read). Default 1 s.
    pub status_interval: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            buffer: 1_024,
            max_batch: 256,
            max_linger: Duration::from_millis(10),
            poison: PoisonPolicy::Stop,
            retry_base: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            status_interval: Duration::from_secs(1),
        }
    }
}
