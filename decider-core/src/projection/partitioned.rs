//! The partitioned runner: one projection split into partitions (see [`Partition`]), each with its
//! own checkpoint and lease, claimed by runners in any number of processes.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::try_join_all;

use crate::backoff;
use crate::projection::control::{ProjectionControl, Uncontrolled};
use crate::projection::lease::{Lease, LeaseGuard, Unleased};
use crate::projection::partition::{Partition, PartitionError};
use crate::projection::runner::{Faults, Halt};
use crate::projection::sink::Sink;
use crate::projection::status::{ProjectionStatus, StatusHandle};
use crate::projection::{Projection, ProjectionError, ProjectionRunner, RunnerOptions};
use crate::store::{EventStore, StoreError};
use crate::{Position, StreamId};

/// How a process claims partitions.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimOptions {
    /// Partitions this process runs at once, at most. Default: all of them.
    ///
    /// Every process claims free partitions up to its limit, so with `P` processes of limit
    /// `L` and `N` partitions: the work spreads over the processes when `L × P ≥ N`, and the
    /// others take over a dead process's partitions only if they have room for them
    /// (`L × (P − 1) ≥ N` survives the loss of one). Processes that start together spread the
    /// partitions between them evenly even with the default limit, since a process waits
    /// longer before each further claim; a process that starts when every partition is held
    /// waits as a standby.
    pub limit: usize,
    /// How often a process without its full share looks for a free partition (jittered), and
    /// the pause between one claim of a process and its next at start. Default 1 s.
    pub claim_interval: Duration,
}

impl Default for ClaimOptions {
    fn default() -> Self {
        Self {
            limit: usize::MAX,
            claim_interval: Duration::from_secs(1),
        }
    }
}

/// Runs a [`Projection`] as `count` partitions: a stream's events go to one partition (by a
/// stable hash of its id, [`Partition::of`]) and stay in order there; each partition is a
/// projection of its own, named `<name>[<index>/<count>]`, with its checkpoint, lease and dead
/// letters, run by a [`ProjectionRunner`] once this process has claimed it.
///
/// Runners in many processes share the partitions: each claims free ones (a lease taken only
/// if free, [`Lease::try_acquire`]) up to [`ClaimOptions::limit`], and looks again every
/// [`ClaimOptions::claim_interval`]. When a process dies, or loses a lease, its partitions come
/// free and the others take them over from their checkpoints. A sink that is exactly once per
/// projection (PostgreSQL's or SQLite's transactional sink) is exactly once per partition.
///
/// With `count` 1 the one partition is the projection itself (same name, same checkpoint), so
/// a projection can start unpartitioned and be partitioned later. Changing the count changes
/// every partition's name and filter: do it as a rebuild into a new version (the checkpoints of
/// the old count do not apply to the new one).
///
/// ```
/// use decider_core::projection::*;
/// use decider_core::{EventData, EventStore, ExpectedVersion, RecordedEvent, StreamId};
/// use decider_store_memory::MemoryStore;
/// use std::sync::Mutex;
///
/// #[derive(Default)]
/// struct Seen(Mutex<Vec<String>>);
/// impl EventHandler for Seen {
///     async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
///         self.0.lock().unwrap().extend(batch.iter().map(|e| e.stream.to_string()));
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// for n in 0..8 {
///     let stream = StreamId::new(format!("account-{n}")).unwrap();
///     store.append(&stream, ExpectedVersion::Any, vec![EventData::json("Opened", "{}")]).await.unwrap();
/// }
/// let sink = CheckpointedSink::new(Seen::default(), MemoryCheckpoints::default(), MemoryDeadLetters::default());
/// let runner = PartitionedRunner::new(store, Projection::new("accounts"), 4, sink)
///     .unwrap()
///     .with_lease(LocalLeases::default());
/// let statuses = runner.status_handles();
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let running = async { runner.run(async { stopped.await.ok(); }).await };
/// let watching = async {
///     while statuses.iter().map(|s| s.get().handled).sum::<u64>() < 8 {
///         tokio::time::sleep(std::time::Duration::from_millis(5)).await;
///     }
///     stop.send(()).unwrap();
/// };
/// let (result, ()) = tokio::join!(running, watching);
/// result.unwrap();
/// assert_eq!(runner.sink().handler().0.lock().unwrap().len(), 8);
/// # });
/// ```
#[derive(Debug)]
pub struct PartitionedRunner<S, K, L = Unleased, C = Uncontrolled> {
    projection: Projection,
    count: u32,
    sink: Arc<K>,
    runners: Vec<ProjectionRunner<S, Arc<K>, L, C>>,
    /// Which partitions a slot of this process holds (or is trying to take).
    held: Vec<AtomicBool>,
    claims: ClaimOptions,
    /// Where this process starts looking for a free partition, so that processes do not all
    /// try the same one first.
    offset: usize,
}

impl<S: Clone, K> PartitionedRunner<S, K, Unleased, Uncontrolled> {
    /// A runner of `projection` as `count` partitions over `store` into `sink` (shared by the
    /// partitions: it keys checkpoints by the partitions' names), with default options, no
    /// lease and no control plane. Fails if `count` is 0.
    pub fn new(
        store: S,
        projection: Projection,
        count: u32,
        sink: K,
    ) -> Result<Self, PartitionError> {
        let sink = Arc::new(sink);
        let runners = if count == 1 {
            vec![ProjectionRunner::new(
                store,
                projection.clone(),
                sink.clone(),
            )]
        } else {
            Partition::all(count)?
                .into_iter()
                .map(|partition| {
                    ProjectionRunner::new(
                        store.clone(),
                        projection.partition(partition),
                        sink.clone(),
                    )
                })
                .collect()
        };
        let held = runners.iter().map(|_| AtomicBool::new(false)).collect();
        Ok(Self {
            projection,
            count,
            sink,
            runners,
            held,
            claims: ClaimOptions::default(),
            offset: fastrand::usize(..count.max(1) as usize),
        })
    }
}

impl<S, K, L, C> PartitionedRunner<S, K, L, C> {
    /// The same runner with other options for every partition.
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.runners = self
            .runners
            .into_iter()
            .map(|runner| runner.with_options(options.clone()))
            .collect();
        self
    }

    /// The same runner claiming partitions as `claims` says.
    pub fn with_claims(mut self, claims: ClaimOptions) -> Self {
        self.claims = claims;
        self
    }

    /// The same runner taking each partition's lease from `lease` (shared by the partitions,
    /// hence `Clone`): across processes, a lease that outlives its holder's process (PostgreSQL's
    /// or SQLite's) lets the others take over.
    pub fn with_lease<L2: Lease + Clone>(self, lease: L2) -> PartitionedRunner<S, K, L2, C> {
        PartitionedRunner {
            runners: self
                .runners
                .into_iter()
                .map(|runner| runner.with_lease(lease.clone()))
                .collect(),
            projection: self.projection,
            count: self.count,
            sink: self.sink,
            held: self.held,
            claims: self.claims,
            offset: self.offset,
        }
    }

    /// The same runner reporting each partition to `control` (see
    /// [`ProjectionRunner::with_control`]); operators' requests are made per partition.
    pub fn with_control<C2: ProjectionControl + Clone>(
        self,
        control: C2,
    ) -> PartitionedRunner<S, K, L, C2> {
        PartitionedRunner {
            runners: self
                .runners
                .into_iter()
                .map(|runner| runner.with_control(control.clone()))
                .collect(),
            projection: self.projection,
            count: self.count,
            sink: self.sink,
            held: self.held,
            claims: self.claims,
            offset: self.offset,
        }
    }

    /// The projection, as declared (not partitioned).
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// How many partitions it has.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The projections of the partitions, in order.
    pub fn partitions(&self) -> impl ExactSizeIterator<Item = &Projection> {
        self.runners.iter().map(ProjectionRunner::projection)
    }

    /// The projection of the partition that holds `stream`'s events: its name keys the
    /// checkpoint a read-your-writes wait on a write to `stream` watches.
    pub fn partition_for(&self, stream: &StreamId) -> &Projection {
        self.runners[self.index_of(stream)].projection()
    }

    fn index_of(&self, stream: &StreamId) -> usize {
        Partition::of(stream, self.count).map_or(0, |p| p.index() as usize)
    }

    /// The sink, shared by the partitions.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// Each partition's status as this process sees it, in order. A partition another process
    /// holds shows as waiting for its lease here.
    pub fn statuses(&self) -> Vec<ProjectionStatus> {
        self.runners.iter().map(ProjectionRunner::status).collect()
    }

    /// Handles on each partition's status, in order, readable from any task.
    pub fn status_handles(&self) -> Vec<StatusHandle> {
        self.runners
            .iter()
            .map(ProjectionRunner::status_handle)
            .collect()
    }

    /// How many partitions this process holds now.
    pub fn held(&self) -> usize {
        self.held
            .iter()
            .filter(|held| held.load(Ordering::SeqCst))
            .count()
    }
}

impl<S, K, L, C> PartitionedRunner<S, K, L, C>
where
    S: EventStore + Clone,
    K: Sink,
    L: Lease,
    C: ProjectionControl,
{
    /// Claims partitions and runs them until `shutdown` resolves (each finishes the batch in
    /// hand and checkpoints it) or until a partition fails in a way retrying cannot fix (a
    /// poison event under [`PoisonPolicy::Stop`](super::PoisonPolicy::Stop), a sink's fatal
    /// error): then every partition of this process stops, their leases go to other processes,
    /// and the error is returned.
    ///
    /// Faults are weather, per partition: the partition is given up (its lease released), the
    /// slot backs off and claims again, the same partition or another one that came free.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProjectionError> {
        let shutdown = shutdown.shared();
        if !self.claim_count(shutdown.clone()).await? {
            return Ok(());
        }
        let slots = self.claims.limit.clamp(1, self.runners.len());
        try_join_all((0..slots).map(|slot| self.run_slot(slot, shutdown.clone()))).await?;
        Ok(())
    }

    /// Records this runner's partition count for the projection in the control plane, or
    /// checks it against the one recorded (faults are retried with backoff): `false` if shut
    /// down meanwhile, an error if another count is recorded.
    async fn claim_count(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<bool, ProjectionError> {
        let runner = &self.runners[0];
        let name = self.projection.name();
        let mut shutdown = pin!(shutdown);
        let mut faults = Faults::default();
        loop {
            let claimed = tokio::select! {
                claimed = runner.control().claim_partition_count(name, self.count) => claimed,
                () = shutdown.as_mut() => return Ok(false),
            };
            let pause = match claimed {
                Ok(count) if count == self.count => return Ok(true),
                Ok(recorded) => {
                    return Err(ProjectionError::Fatal {
                        projection: name.to_owned(),
                        reason: format!(
                            "{name} runs as {recorded} partitions (recorded by the control plane), \
                             and this runner has {}: every runner of a projection must use one \
                             count, or two sets of partitions would each handle every event; a \
                             new count is a new version of the read model (BlueGreen)",
                            self.count
                        ),
                    });
                }
                Err(error) if error.is_retryable() => {
                    tracing::warn!(projection = name, %error, "cannot record the partition count");
                    faults.record(format!("cannot record the partition count: {error}"));
                    let options = runner.options();
                    faults.backoff(options.retry_base, options.retry_max)
                }
                Err(error) => return Err(runner.store_error(error)),
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.as_mut() => return Ok(false),
            }
        }
    }

    /// One partition at a time: claims a free one, runs it until a fault, claims again.
    async fn run_slot(
        &self,
        slot: usize,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProjectionError> {
        let mut shutdown = pin!(shutdown);
        let mut faults = Faults::default();
        // The n-th slot of a process makes its first claim n intervals in: processes starting
        // together take one partition each in turn.
        let mut pause = self.claims.claim_interval * slot as u32;
        // The partition this slot last gave up after a fault: it shows the fault until the slot
        // claims again (the slot's backoff is the fault's), then waits for its lease like any
        // other partition this process does not hold.
        let mut faulted: Option<usize> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.as_mut() => return Ok(()),
            }
            let claimed = tokio::select! {
                claimed = self.claim() => claimed,
                () = shutdown.as_mut() => return Ok(()),
            };
            if let Some(given_up) = faulted.take()
                && !matches!(claimed, Ok(Some((index, _))) if index == given_up)
            {
                self.runners[given_up].fault_passed();
            }
            pause = match claimed {
                Ok(Some((index, lease))) => {
                    let outcome = self.runners[index]
                        .run_claimed(lease, &mut shutdown, &mut faults)
                        .await;
                    self.held[index].store(false, Ordering::SeqCst);
                    match outcome {
                        Ok(()) | Err(Halt::Shutdown) => return Ok(()),
                        Err(Halt::Error(error)) => return Err(error),
                        Err(Halt::Fault(_)) => {
                            faulted = Some(index);
                            let options = self.runners[index].options();
                            faults.backoff(options.retry_base, options.retry_max)
                        }
                    }
                }
                Ok(None) => backoff::equal_jitter(self.claims.claim_interval),
                Err(error) if error.is_retryable() => {
                    tracing::warn!(projection = self.projection.name(), %error, "cannot claim a partition");
                    faults.record(format!("cannot claim a partition: {error}"));
                    let options = self.runners[0].options();
                    faults.backoff(options.retry_base, options.retry_max)
                }
                Err(error) => return Err(self.runners[0].store_error(error)),
            };
        }
    }

    /// The first free partition this process does not hold, taken; `None` if every one is
    /// held (here or elsewhere).
    async fn claim(&self) -> Result<Option<(usize, LeaseGuard)>, StoreError> {
        let count = self.runners.len();
        for index in (0..count).map(|n| (self.offset + n) % count) {
            if self.held[index]
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            let runner = &self.runners[index];
            match runner.lease().try_acquire(runner.projection().name()).await {
                Ok(Some(lease)) => {
                    tracing::info!(projection = runner.projection().name(), "partition claimed");
                    return Ok(Some((index, lease)));
                }
                Ok(None) => self.held[index].store(false, Ordering::SeqCst),
                Err(error) => {
                    self.held[index].store(false, Ordering::SeqCst);
                    return Err(error);
                }
            }
        }
        Ok(None)
    }

    /// The checkpoint of the partition that holds `stream`'s events, from the sink: what a
    /// read-your-writes wait for a write to `stream` compares with the write's position, in
    /// any process (the partition may be run by another).
    pub async fn checkpoint_for(
        &self,
        stream: &StreamId,
    ) -> Result<Option<Position>, ProjectionError> {
        self.runners[self.index_of(stream)].checkpoint().await
    }

    /// Rebuilds the projection in place: takes the lease of every partition (in index order,
    /// so that two rebuilds cannot deadlock; each waits until no runner holds it: stop them
    /// first), resets every partition (the sink's reset empties the read model, each
    /// partition's checkpoint is forgotten), and gives the leases back. Runners then replay every
    /// partition from the start; the read model is empty until they have. To rebuild without
    /// that gap, build a new version beside the live one ([`BlueGreen`](super::BlueGreen)).
    ///
    /// Every lease is held until every partition is reset: a sink's reset cannot tell
    /// partitions apart, so a partition that replayed before another's reset would lose its
    /// rows to it while its checkpoint stayed.
    pub async fn rebuild(&self) -> Result<(), ProjectionError> {
        let mut leases = Vec::with_capacity(self.runners.len());
        for runner in &self.runners {
            let lease = runner
                .lease()
                .acquire(runner.projection().name())
                .await
                .map_err(|error| runner.store_error(error))?;
            leases.push(lease);
        }
        for runner in &self.runners {
            runner.reset_leased().await?;
        }
        drop(leases);
        Ok(())
    }
}
