//! The projection runner on the memory store: crashes between handler and checkpoint,
//! backpressure, poison events under each policy, re-drive, rebuild, leases, shutdown, sagas.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decider_core::projection::*;
use decider_core::{
    AppendResult, CommandHandler, Decider, Direction, EventData, EventFilter, EventStore,
    EventStream, ExpectedVersion, JsonCodec, Position, RecordedEvent, Saga, StoreError, StreamFrom,
    StreamId, Subscription, SubscriptionMessage,
};
use decider_store_memory::MemoryStore;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);

/// An idempotent read model: per stream, the last revision seen and how often each event was
/// handled (so that a test can tell "the same result" from "handled exactly once").
#[derive(Default)]
struct Model {
    last_revision: Mutex<BTreeMap<String, u64>>,
    handled: Mutex<HashMap<uuid::Uuid, u32>>,
    /// Fail with poison on events of this type while set.
    broken_type: Mutex<Option<String>>,
    /// Fail retryably this many more times.
    flaky: AtomicU64,
    /// Sleep this long per batch.
    slow: Mutex<Duration>,
    /// Set when a batch starts.
    started: AtomicBool,
}

impl Model {
    fn read_model(&self) -> BTreeMap<String, u64> {
        self.last_revision.lock().unwrap().clone()
    }
    fn counts(&self) -> HashMap<uuid::Uuid, u32> {
        self.handled.lock().unwrap().clone()
    }
}

impl EventHandler for Model {
    async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
        self.started.store(true, Ordering::SeqCst);
        let slow = *self.slow.lock().unwrap();
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        if self
            .flaky
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError::Retryable("flaky".into()));
        }
        let broken = self.broken_type.lock().unwrap().clone();
        for (index, event) in batch.iter().enumerate() {
            if broken.as_deref() == Some(event.event_type.as_str()) {
                return Err(SinkError::Poison {
                    index,
                    reason: format!("cannot handle {}", event.event_type),
                });
            }
            self.last_revision
                .lock()
                .unwrap()
                .insert(event.stream.to_string(), event.revision);
            *self.handled.lock().unwrap().entry(event.id).or_default() += 1;
        }
        Ok(())
    }

    async fn reset(&self) -> Result<(), SinkError> {
        self.last_revision.lock().unwrap().clear();
        self.handled.lock().unwrap().clear();
        Ok(())
    }
}

type TestSink = CheckpointedSink<Arc<Model>, Arc<MemoryCheckpoints>, Arc<MemoryDeadLetters>>;

fn sink(model: &Arc<Model>, checkpoints: &Arc<MemoryCheckpoints>) -> TestSink {
    CheckpointedSink::new(
        model.clone(),
        checkpoints.clone(),
        Arc::new(MemoryDeadLetters::default()),
    )
}

async fn fill(store: &impl EventStore, streams: usize, per_stream: usize, event_type: &str) {
    for s in 0..streams {
        let stream = StreamId::new(format!("account-{s}")).unwrap();
        let events = (0..per_stream)
            .map(|n| EventData::json(event_type, format!(r#"{{"n":{n}}}"#)))
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
}

/// Runs `runner` while `check` runs, then stops it; returns what the run returned.
async fn run_during<S, K, L, C>(
    runner: &ProjectionRunner<S, K, L, C>,
    check: impl Future<Output = ()>,
) -> Result<(), ProjectionError>
where
    S: EventStore + Clone,
    K: Sink,
    L: Lease,
    C: ProjectionControl,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let check = async {
        check.await;
        let _ = stop.send(());
    };
    let (result, ()) = tokio::join!(
        runner.run(async {
            stopped.await.ok();
        }),
        check
    );
    result
}

/// Runs `runner` until it has handled `handled` more events, then stops it.
async fn run_until<S, K, L>(
    runner: &ProjectionRunner<S, K, L>,
    handled: u64,
) -> Result<(), ProjectionError>
where
    S: EventStore + Clone,
    K: Sink,
    L: Lease,
{
    let status = runner.status_handle();
    let target = status.get().handled + handled;
    let watch = async move {
        tokio::time::timeout(WAIT, async {
            while status.get().handled < target
                && !matches!(status.get().state, RunnerState::Failed { .. })
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("the projection did not get there in time");
    };
    run_during(runner, watch).await
}

/// A checkpoint store that fails the `nth` save from now, as if the process died right after the
/// handler ran.
#[derive(Default)]
struct CrashingCheckpoints {
    inner: MemoryCheckpoints,
    crash_at: AtomicUsize,
}

impl CheckpointStore for CrashingCheckpoints {
    async fn load(&self, projection: &str) -> Result<Option<Position>, StoreError> {
        self.inner.load(projection).await
    }
    async fn save(
        &self,
        projection: &str,
        expected: Option<Position>,
        next: Position,
    ) -> Result<(), CheckpointError> {
        if self
            .crash_at
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            == Ok(1)
        {
            return Err(CheckpointError::Store(StoreError::backend(
                "crash before the checkpoint",
            )));
        }
        self.inner.save(projection, expected, next).await
    }
    async fn reset(&self, projection: &str) -> Result<(), StoreError> {
        self.inner.reset(projection).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_handler_and_checkpoint_reprocesses_and_an_idempotent_model_is_unchanged() {
    let store = MemoryStore::new();
    fill(&store, 20, 50, "Deposited").await;
    let options = RunnerOptions {
        max_batch: 64,
        ..RunnerOptions::default()
    };

    // Reference: a clean run.
    let clean = Arc::new(Model::default());
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        sink(&clean, &Arc::default()),
    )
    .with_options(options.clone());
    run_until(&runner, 1_000).await.unwrap();

    // The third checkpoint fails after its batch was handled: the runner stops...
    let model = Arc::new(Model::default());
    let checkpoints = Arc::new(CrashingCheckpoints {
        crash_at: AtomicUsize::new(3),
        ..Default::default()
    });
    let crashing = CheckpointedSink::new(
        model.clone(),
        checkpoints.clone(),
        Arc::new(MemoryDeadLetters::default()),
    );
    let runner =
        ProjectionRunner::new(store.clone(), Projection::new("p"), crashing).with_options(options);
    let crashed = run_until(&runner, 1_000).await;
    assert!(
        matches!(crashed, Err(ProjectionError::Fatal { .. })),
        "{crashed:?}"
    );
    let before_restart = model.counts();
    assert!(before_restart.len() < 1_000);
    // ...and a new runner (the restarted process) handles that batch again: at least once.
    run_until(&runner, 1_000 - 128).await.unwrap();
    let counts = model.counts();
    assert_eq!(counts.len(), 1_000, "every event handled");
    let twice = counts.values().filter(|&&n| n == 2).count();
    assert!(
        twice > 0 && twice <= 64,
        "only the crashed batch is handled twice ({twice})"
    );
    assert_eq!(
        model.read_model(),
        clean.read_model(),
        "the idempotent read model is unchanged"
    );
}

/// Wraps a store and counts the events its subscriptions hand out.
#[derive(Clone)]
struct CountingStore {
    inner: MemoryStore,
    delivered: Arc<AtomicU64>,
}

impl EventStore for CountingStore {
    async fn append(
        &self,
        s: &StreamId,
        e: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        self.inner.append(s, e, events).await
    }
    fn read_stream(
        &self,
        s: &StreamId,
        f: StreamFrom,
        d: Direction,
        l: Option<u64>,
    ) -> impl EventStream + use<> {
        self.inner.read_stream(s, f, d, l)
    }
    fn read_all(
        &self,
        a: Option<Position>,
        l: Option<u64>,
        f: &EventFilter,
    ) -> impl EventStream + use<> {
        self.inner.read_all(a, l, f)
    }
    async fn head_position(&self) -> Result<Option<Position>, StoreError> {
        self.inner.head_position().await
    }
    fn subscribe_all(&self, a: Option<Position>, f: &EventFilter) -> impl Subscription + use<> {
        let delivered = self.delivered.clone();
        self.inner.subscribe_all(a, f).inspect(move |message| {
            if let Ok(SubscriptionMessage::Event(_)) = message {
                delivered.fetch_add(1, Ordering::SeqCst);
            }
        })
    }
    fn subscribe_stream(&self, s: &StreamId, a: Option<u64>) -> impl Subscription + use<> {
        self.inner.subscribe_stream(s, a)
    }
}

/// Records, at every batch, how many events the subscription has handed out beyond those
/// already checkpointed.
struct Outstanding {
    delivered: Arc<AtomicU64>,
    checkpointed: AtomicU64,
    most: AtomicU64,
}

impl EventHandler for Outstanding {
    async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
        let outstanding =
            self.delivered.load(Ordering::SeqCst) - self.checkpointed.load(Ordering::SeqCst);
        self.most.fetch_max(outstanding, Ordering::SeqCst);
        // A slow sink: the reader is far faster.
        tokio::time::sleep(Duration::from_micros(300)).await;
        self.checkpointed
            .fetch_add(batch.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_behind_200k_events_never_holds_more_than_the_buffer() {
    let store = CountingStore {
        inner: MemoryStore::new(),
        delivered: Arc::default(),
    };
    for s in 0..200 {
        let stream = StreamId::new(format!("bulk-{s}")).unwrap();
        let events = (0..1_000).map(|_| EventData::json("E", "{}")).collect();
        store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
    }
    let outstanding = Arc::new(Outstanding {
        delivered: store.delivered.clone(),
        checkpointed: AtomicU64::new(0),
        most: AtomicU64::new(0),
    });
    let sink = CheckpointedSink::new(
        outstanding.clone(),
        MemoryCheckpoints::default(),
        MemoryDeadLetters::default(),
    );
    let options = RunnerOptions {
        buffer: 1_024,
        max_batch: 256,
        ..RunnerOptions::default()
    };
    let runner =
        ProjectionRunner::new(store.clone(), Projection::new("slow"), sink).with_options(options);
    let status = runner.status_handle();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let sampler = tokio::spawn({
        let in_flight = in_flight.clone();
        async move {
            loop {
                in_flight.fetch_max(status.get().in_flight, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    run_until(&runner, 200_000).await.unwrap();
    sampler.abort();
    let most = outstanding.most.load(Ordering::SeqCst);
    assert!(
        most <= 1_024,
        "{most} events were read ahead of the checkpoint"
    );
    assert!(
        most >= 512,
        "the buffer was never used ({most}): the test proves nothing"
    );
    assert!(in_flight.load(Ordering::SeqCst) <= 1_024);
    assert_eq!(store.delivered.load(Ordering::SeqCst), 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_under_stop_halts_after_the_events_before_it() {
    let store = MemoryStore::new();
    fill(&store, 1, 10, "Deposited").await;
    let bad = StreamId::new("account-bad").unwrap();
    store
        .append(
            &bad,
            ExpectedVersion::NoStream,
            vec![EventData::json("Frozen", "{}")],
        )
        .await
        .unwrap();
    fill(&store, 1, 5, "Withdrawn").await;

    let model = Arc::new(Model::default());
    *model.broken_type.lock().unwrap() = Some("Frozen".into());
    let checkpoints = Arc::new(MemoryCheckpoints::default());
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        sink(&model, &checkpoints),
    );
    let stopped = run_until(&runner, 16).await;
    match stopped {
        Err(ProjectionError::Poison {
            stream,
            revision,
            reason,
            position,
            ..
        }) => {
            assert_eq!((stream, revision), (bad, 0));
            assert_eq!(reason, "cannot handle Frozen");
            // Everything before it is handled and checkpointed; nothing after it.
            assert_eq!(model.counts().len(), 10);
            let checkpoint = checkpoints.load("p").await.unwrap().unwrap();
            assert!(checkpoint < position);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(runner.status().state, RunnerState::Failed { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_under_dead_letter_is_kept_skipped_and_redriven_later() {
    let store = MemoryStore::new();
    fill(&store, 1, 10, "Deposited").await;
    let bad = StreamId::new("account-bad").unwrap();
    store
        .append(
            &bad,
            ExpectedVersion::NoStream,
            vec![EventData::json("Frozen", "{}")],
        )
        .await
        .unwrap();
    fill(&store, 1, 5, "Withdrawn").await;

    let model = Arc::new(Model::default());
    *model.broken_type.lock().unwrap() = Some("Frozen".into());
    let options = RunnerOptions {
        poison: PoisonPolicy::DeadLetter,
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        sink(&model, &Arc::default()),
    )
    .with_options(options);
    run_until(&runner, 15).await.unwrap();
    assert_eq!(model.counts().len(), 15, "every event but the poison one");
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((&letters[0].stream, letters[0].revision), (&bad, 0));
    assert_eq!(letters[0].reason, "cannot handle Frozen");

    // Still broken: the dead letter stays.
    let report = runner.redrive_dead_letters().await.unwrap();
    assert_eq!((report.redriven.len(), report.failed.len()), (0, 1));
    // Fixed: re-driven once, and forgotten.
    *model.broken_type.lock().unwrap() = None;
    let report = runner.redrive_dead_letters().await.unwrap();
    assert_eq!((report.redriven.len(), report.failed.len()), (1, 0));
    assert!(runner.dead_letters().await.unwrap().is_empty());
    assert_eq!(model.counts().len(), 16);
    assert_eq!(model.read_model()["account-bad"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_until_they_pass() {
    let store = MemoryStore::new();
    fill(&store, 3, 10, "Deposited").await;
    let model = Arc::new(Model {
        flaky: AtomicU64::new(3),
        ..Model::default()
    });
    let options = RunnerOptions {
        retry_base: Duration::from_millis(1),
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(store, Projection::new("p"), sink(&model, &Arc::default()))
        .with_options(options);
    run_until(&runner, 30).await.unwrap();
    assert_eq!(model.counts().len(), 30);
    assert_eq!(model.flaky.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_gives_the_read_model_built_incrementally() {
    let store = MemoryStore::new();
    let model = Arc::new(Model::default());
    let checkpoints = Arc::new(MemoryCheckpoints::default());
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        sink(&model, &checkpoints),
    );
    // Built incrementally: three runs, with appends in between.
    for round in 1..=3 {
        fill(&store, 7, 3, "Deposited").await;
        run_until(&runner, 21).await.unwrap();
        assert_eq!(model.counts().len(), 21 * round);
    }
    let incremental = model.read_model();
    runner.rebuild().await.unwrap();
    assert!(model.read_model().is_empty());
    assert_eq!(checkpoints.load("p").await.unwrap(), None);
    run_until(&runner, 63).await.unwrap();
    assert_eq!(model.read_model(), incremental);
    assert!(model.counts().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_of_one_projection_take_turns_through_the_lease() {
    let store = MemoryStore::new();
    fill(&store, 5, 10, "Deposited").await;
    let model = Arc::new(Model::default());
    let checkpoints = Arc::new(MemoryCheckpoints::default());
    let leases = LocalLeases::default();
    let first = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        sink(&model, &checkpoints),
    )
    .with_lease(leases.clone());
    let second = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        sink(&model, &checkpoints),
    )
    .with_lease(leases.clone());

    let (stop_first, first_stopped) = oneshot::channel::<()>();
    let (stop_second, second_stopped) = oneshot::channel::<()>();
    let second_status = second.status_handle();
    let scenario = async {
        tokio::time::timeout(WAIT, async {
            while first.status().handled < 50 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(second_status.get().state, RunnerState::WaitingForLease);
        fill(&store, 5, 10, "Withdrawn").await;
        stop_first.send(()).unwrap();
        // The second takes over from the first's checkpoint.
        tokio::time::timeout(WAIT, async {
            while model.counts().len() < 100 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap();
        stop_second.send(()).unwrap();
    };
    let (a, b, ()) = tokio::join!(
        first.run(async {
            first_stopped.await.ok();
        }),
        second.run(async {
            second_stopped.await.ok();
        }),
        scenario
    );
    a.unwrap();
    b.unwrap();
    assert!(
        model.counts().values().all(|&n| n == 1),
        "no event handled twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_batch_in_hand_and_checkpoints_it() {
    let store = MemoryStore::new();
    fill(&store, 1, 10, "Deposited").await;
    let model = Arc::new(Model {
        slow: Mutex::new(Duration::from_millis(300)),
        ..Model::default()
    });
    let checkpoints = Arc::new(MemoryCheckpoints::default());
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        sink(&model, &checkpoints),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let stopper = async {
        while !model.started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.send(()).unwrap(); // while the batch is being handled
    };
    let (result, ()) = tokio::join!(
        runner.run(async {
            stopped.await.ok();
        }),
        stopper
    );
    result.unwrap();
    assert_eq!(model.counts().len(), 10);
    let last = store.head_position().await.unwrap();
    assert_eq!(checkpoints.load("p").await.unwrap(), last);
    assert_eq!(runner.status().state, RunnerState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_reports_checkpoint_head_lag_and_live_state() {
    let store = MemoryStore::new();
    fill(&store, 4, 25, "Deposited").await;
    let model = Arc::new(Model::default());
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        sink(&model, &Arc::default()),
    );
    let status = runner.status_handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let check = async {
        tokio::time::timeout(WAIT, async {
            // The head comes from the periodic measurement, which a loaded machine may run
            // after the runner has caught up: wait for it too.
            while status.get().state != RunnerState::Live
                || status.get().handled < 100
                || status.get().head.is_none()
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap();
        let now = status.get();
        assert_eq!(now.checkpoint, Some(Position::new(100, 100)));
        assert_eq!(now.head, Some(Position::new(100, 100)));
        assert_eq!(now.lag, Some(0));
        assert!(now.last_batch_latency.is_some());
        stop.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(
        runner.run(async {
            stopped.await.ok();
        }),
        check
    );
    result.unwrap();
}

// --- sagas --------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
enum OrderEvent {
    Placed { order: u32, items: u32 },
}

#[derive(Debug, Clone, PartialEq)]
enum StockCommand {
    Reserve { order: u32, items: u32 },
}

#[derive(Debug, Serialize, Deserialize)]
enum StockEvent {
    Reserved { order: u32, items: u32 },
}

struct Stock;
impl Decider for Stock {
    type Command = StockCommand;
    type Event = StockEvent;
    type State = u32;
    type Error = String;
    fn initial_state(&self) -> u32 {
        0
    }
    fn decide(
        &self,
        StockCommand::Reserve { order, items }: &StockCommand,
        _: &u32,
    ) -> Result<Vec<StockEvent>, String> {
        Ok(vec![StockEvent::Reserved {
            order: *order,
            items: *items,
        }])
    }
    fn evolve(&self, reserved: u32, StockEvent::Reserved { items, .. }: &StockEvent) -> u32 {
        reserved + items
    }
}

struct Fulfilment;
impl Saga for Fulfilment {
    type Event = OrderEvent;
    type Command = StockCommand;
    fn react(&self, OrderEvent::Placed { order, items }: &OrderEvent) -> Vec<StockCommand> {
        vec![StockCommand::Reserve {
            order: *order,
            items: *items,
        }]
    }
}

#[test]
fn the_fulfilment_saga_reserves_stock_for_a_placed_order() {
    decider_core::testing::saga_spec(Fulfilment)
        .given(OrderEvent::Placed { order: 7, items: 3 })
        .then_commands([StockCommand::Reserve { order: 7, items: 3 }]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_redelivered_from_the_start_sends_each_command_once_in_effect() {
    let store = MemoryStore::new();
    for order in 0..20u32 {
        let stream = StreamId::new(format!("order-{order}")).unwrap();
        let placed = EventData::json("Placed", format!(r#"{{"order":{order},"items":2}}"#));
        store
            .append(&stream, ExpectedVersion::NoStream, vec![placed])
            .await
            .unwrap();
    }
    let stock = StreamId::new("stock-main").unwrap();
    let saga = SagaHandler::new(
        Fulfilment,
        JsonCodec::<OrderEvent>::new(),
        CommandHandler::new(Stock, store.clone()),
        move |_: &StockCommand| stock.clone(),
    );
    let checkpoints = Arc::new(MemoryCheckpoints::default());
    let projection =
        Projection::new("fulfilment").with_filter(EventFilter::all().with_categories(["order"]));
    let runner = ProjectionRunner::new(
        store.clone(),
        projection,
        CheckpointedSink::new(saga, checkpoints.clone(), MemoryDeadLetters::default()),
    );
    run_until(&runner, 20).await.unwrap();
    // Every event delivered again, as after a lost checkpoint.
    checkpoints.reset("fulfilment").await.unwrap();
    run_until(&runner, 20).await.unwrap();

    let reserved = runner
        .sink()
        .handler()
        .commands()
        .load(&StreamId::new("stock-main").unwrap())
        .await
        .unwrap();
    assert_eq!(
        reserved.state, 40,
        "20 orders × 2 items, reserved once each"
    );
    let stock_events: Vec<_> = store
        .read_stream(
            &StreamId::new("stock-main").unwrap(),
            StreamFrom::Start,
            Direction::Forward,
            None,
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(stock_events.len(), 20);
    // Each command names the event that caused it.
    assert!(
        stock_events
            .iter()
            .all(|e| e.metadata.causation_id.is_some())
    );
}

// --- faults are weather -------------------------------------------------------------------

/// A lease that the test can make fail (to be taken) and lose (once held), counting how often
/// it was taken.
#[derive(Default)]
struct FlakyLease {
    /// Refuse this many more acquisitions, as if the lease's database were away.
    refuse: AtomicU64,
    taken: AtomicU64,
    holder: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
}

impl FlakyLease {
    /// Loses the lease held now, as a dropped lease connection would.
    fn lose(&self) {
        if let Some(holder) = self.holder.lock().unwrap().take() {
            holder.send_replace(true);
        }
    }
}

/// What a runner holds of a [`FlakyLease`] (a lease must be `'static`).
struct Flaky(Arc<FlakyLease>);

impl Lease for Flaky {
    async fn acquire(&self, _projection: &str) -> Result<LeaseGuard, StoreError> {
        let this = &self.0;
        if this
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::unavailable("the lease database is away"));
        }
        this.taken.fetch_add(1, Ordering::SeqCst);
        let (holder, lost) = tokio::sync::watch::channel(false);
        *this.holder.lock().unwrap() = Some(holder);
        Ok(LeaseGuard::new(lost, ()))
    }

    async fn try_acquire(&self, projection: &str) -> Result<Option<LeaseGuard>, StoreError> {
        self.acquire(projection).await.map(Some)
    }
}

/// Polls `status` until `done` holds, remembering every state seen on the way.
async fn watch_states(
    status: &StatusHandle,
    done: impl Fn(&ProjectionStatus) -> bool,
) -> Vec<RunnerState> {
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let now = status.get();
            if seen.last() != Some(&now.state) {
                seen.push(now.state.clone());
            }
            assert!(
                !matches!(now.state, RunnerState::Failed { .. }),
                "a fault failed the runner: {seen:?}"
            );
            if done(&now) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not there in time; states seen: {seen:?}"));
    seen
}

fn reconnecting(states: &[RunnerState], because: &str) -> Option<u32> {
    states.iter().find_map(|state| match state {
        RunnerState::Reconnecting {
            attempts,
            last_error,
            ..
        } if last_error.contains(because) => Some(*attempts),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_taken_again_and_the_run_resumes_from_the_checkpoint() {
    let store = MemoryStore::new();
    fill(&store, 4, 25, "Deposited").await;
    let model = Arc::new(Model::default());
    let lease = Arc::new(FlakyLease::default());
    let options = RunnerOptions {
        retry_base: Duration::from_millis(100),
        status_interval: Duration::from_millis(5),
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        sink(&model, &Arc::default()),
    )
    .with_options(options)
    .with_lease(Flaky(lease.clone()));
    let status = runner.status_handle();
    let faults = async {
        watch_states(&status, |s| {
            s.state == RunnerState::Live && s.handled == 100
        })
        .await;
        lease.lose();
        fill(&store, 2, 10, "Withdrawn").await;
        let seen = watch_states(&status, |s| {
            s.state == RunnerState::Live && s.handled == 120 && s.lag == Some(0)
        })
        .await;
        assert_eq!(reconnecting(&seen, "lease"), Some(1), "{seen:?}");
    };
    run_during(&runner, faults).await.unwrap();
    assert_eq!(lease.taken.load(Ordering::SeqCst), 2);
    let counts = model.counts();
    assert_eq!(counts.len(), 120);
    assert!(
        counts.values().all(|&n| n == 1),
        "handled twice: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_taken_is_tried_again_with_growing_backoff() {
    let store = MemoryStore::new();
    fill(&store, 2, 10, "Deposited").await;
    let model = Arc::new(Model::default());
    let lease = Arc::new(FlakyLease {
        refuse: AtomicU64::new(4),
        ..FlakyLease::default()
    });
    let options = RunnerOptions {
        retry_base: Duration::from_millis(10),
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(store, Projection::new("p"), sink(&model, &Arc::default()))
        .with_options(options)
        .with_lease(Flaky(lease.clone()));
    let status = runner.status_handle();
    let started = std::time::Instant::now();
    let check = async {
        let seen = watch_states(&status, |s| s.state == RunnerState::Live && s.handled == 20).await;
        // 5, 10, 20 and 40 ms at least: the lower halves of 10, 20, 40 and 80 ms.
        assert!(started.elapsed() >= Duration::from_millis(75));
        let attempts: Vec<u32> = seen
            .iter()
            .filter_map(|state| match state {
                RunnerState::Reconnecting { attempts, .. } => Some(*attempts),
                _ => None,
            })
            .collect();
        // Each pause is long enough to be seen, the last one (40 ms or more) certainly; a poller
        // starved on a loaded machine may miss a short one in between.
        assert!(attempts.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(attempts.last(), Some(&4), "{seen:?}");
    };
    run_during(&runner, check).await.unwrap();
    assert_eq!(model.counts().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_fails_retryably_is_reported_reconnecting_never_failed() {
    let store = MemoryStore::new();
    fill(&store, 3, 10, "Deposited").await;
    let model = Arc::new(Model {
        flaky: AtomicU64::new(3),
        ..Model::default()
    });
    let options = RunnerOptions {
        retry_base: Duration::from_millis(20),
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(store, Projection::new("p"), sink(&model, &Arc::default()))
        .with_options(options);
    let status = runner.status_handle();
    let check = async {
        let seen = watch_states(&status, |s| s.state == RunnerState::Live && s.handled == 30).await;
        assert!(reconnecting(&seen, "flaky").is_some(), "{seen:?}");
    };
    run_during(&runner, check).await.unwrap();
    assert!(model.counts().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_waiting_for_its_lease_reports_the_true_lag() {
    let store = MemoryStore::new();
    let leases = LocalLeases::default();
    let held = leases.acquire("p").await.unwrap();
    let model = Arc::new(Model::default());
    let checkpoints = Arc::new(MemoryCheckpoints::default());
    let options = RunnerOptions {
        status_interval: Duration::from_millis(5),
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        sink(&model, &checkpoints),
    )
    .with_options(options)
    .with_lease(leases);
    let status = runner.status_handle();
    let check = async {
        fill(&store, 4, 25, "Deposited").await;
        watch_states(&status, |s| s.lag == Some(100)).await;
        assert_eq!(status.get().state, RunnerState::WaitingForLease);
        // The holder (another process, say) handles 40 of them.
        let fortieth = store.read_all(None, Some(40), &EventFilter::all());
        let fortieth = fortieth
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .pop()
            .unwrap();
        checkpoints
            .save("p", None, fortieth.position)
            .await
            .unwrap();
        watch_states(&status, |s| {
            s.lag == Some(60) && s.checkpoint == Some(fortieth.position)
        })
        .await;
        drop(held);
        watch_states(&status, |s| {
            s.state == RunnerState::Live && s.lag == Some(0)
        })
        .await;
        assert_eq!(
            model.counts().len(),
            60,
            "resumed from the holder's checkpoint"
        );
    };
    run_during(&runner, check).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_projection_that_is_caught_up_has_no_lag_whatever_else_is_appended() {
    let store = MemoryStore::new();
    fill(&store, 2, 10, "Deposited").await;
    let model = Arc::new(Model::default());
    let options = RunnerOptions {
        status_interval: Duration::from_millis(5),
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("p").with_filter(EventFilter::all().with_event_types(["Deposited"])),
        sink(&model, &Arc::default()),
    )
    .with_options(options);
    let status = runner.status_handle();
    let check = async {
        watch_states(&status, |s| s.state == RunnerState::Live && s.handled == 20).await;
        fill(&store, 2, 10, "Withdrawn").await;
        watch_states(&status, |s| s.head == Some(Position::new(40, 40))).await;
        assert_eq!(status.get().lag, Some(0), "{:?}", status.get());
    };
    run_during(&runner, check).await.unwrap();
}

/// A payment, a process: requested, then charged to the wallet or declined by it.
struct Payment;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum PaymentEvent {
    Requested { amount: u64 },
    Charged,
    Declined { reason: WalletError },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PaymentState {
    New,
    Charging { amount: u64 },
    Charged,
    Declined(WalletError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PaymentCommand {
    Request { amount: u64 },
    RecordCharge(Result<(), WalletError>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PaymentError {
    #[error("the payment does not wait for a charge")]
    NotCharging,
}

impl Decider for Payment {
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type State = PaymentState;
    type Error = PaymentError;
    fn initial_state(&self) -> PaymentState {
        PaymentState::New
    }
    fn decide(
        &self,
        command: &PaymentCommand,
        state: &PaymentState,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        match (command, state) {
            (PaymentCommand::Request { amount }, PaymentState::New) => {
                Ok(vec![PaymentEvent::Requested { amount: *amount }])
            }
            (PaymentCommand::RecordCharge(answer), PaymentState::Charging { .. }) => {
                Ok(vec![match answer {
                    Ok(()) => PaymentEvent::Charged,
                    Err(reason) => PaymentEvent::Declined {
                        reason: reason.clone(),
                    },
                }])
            }
            _ => Err(PaymentError::NotCharging),
        }
    }
    fn evolve(&self, state: PaymentState, event: &PaymentEvent) -> PaymentState {
        match (state, event) {
            (PaymentState::New, PaymentEvent::Requested { amount }) => {
                PaymentState::Charging { amount: *amount }
            }
            (PaymentState::Charging { .. }, PaymentEvent::Charged) => PaymentState::Charged,
            (PaymentState::Charging { .. }, PaymentEvent::Declined { reason }) => {
                PaymentState::Declined(reason.clone())
            }
            (state, _) => state,
        }
    }
}

/// The wallet payments are charged to; it declines what it cannot pay, and is closed (terminal)
/// once its balance reaches exactly zero.
struct Wallet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum WalletEvent {
    Funded { amount: u64 },
    Charged { payment: String, amount: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
enum WalletError {
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("the wallet is empty and closed")]
    Closed,
}

impl Decider for Wallet {
    type Command = WalletEvent;
    type Event = WalletEvent;
    type State = Option<u64>;
    type Error = WalletError;
    fn initial_state(&self) -> Option<u64> {
        None
    }
    fn decide(
        &self,
        command: &WalletEvent,
        balance: &Option<u64>,
    ) -> Result<Vec<WalletEvent>, WalletError> {
        match command {
            WalletEvent::Charged { amount, .. } if balance.unwrap_or(0) < *amount => {
                Err(WalletError::InsufficientFunds)
            }
            command => Ok(vec![command.clone()]),
        }
    }
    fn evolve(&self, balance: Option<u64>, event: &WalletEvent) -> Option<u64> {
        let balance = balance.unwrap_or(0);
        Some(match event {
            WalletEvent::Funded { amount } => balance + amount,
            WalletEvent::Charged { amount, .. } => balance - amount,
        })
    }
    fn is_terminal(&self, balance: &Option<u64>) -> bool {
        *balance == Some(0)
    }
}

struct Checkout;

impl decider_core::Process for Checkout {
    type Own = Payment;
    type Target = Wallet;
    type Step = ();
    fn next_step(
        &self,
        payment: &StreamId,
        state: &PaymentState,
    ) -> Option<decider_core::ProcessStep<(), WalletEvent>> {
        let PaymentState::Charging { amount } = state else {
            return None;
        };
        Some(decider_core::ProcessStep {
            step: (),
            stream: StreamId::new("wallet-main").unwrap(),
            command: WalletEvent::Charged {
                payment: payment.to_string(),
                amount: *amount,
            },
            key: format!("{payment}/charge"),
        })
    }
    fn record(
        &self,
        (): (),
        answer: Result<(), decider_core::Refused<WalletError>>,
    ) -> PaymentCommand {
        PaymentCommand::RecordCharge(answer.map_err(|refused| match refused {
            decider_core::Refused::Rejected(reason) => reason,
            decider_core::Refused::Terminal => WalletError::Closed,
        }))
    }
}

fn payment(n: u32) -> StreamId {
    StreamId::new(format!("payment-{n}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_takes_each_step_once_and_records_every_answer_even_when_redelivered() {
    let store = MemoryStore::new();
    let payments = Arc::new(CommandHandler::new(Payment, store.clone()));
    let wallets = Arc::new(CommandHandler::new(Wallet, store.clone()));
    let wallet = StreamId::new("wallet-main").unwrap();
    wallets
        .handle(&wallet, WalletEvent::Funded { amount: 25 })
        .await
        .unwrap();
    // Payments of 10 each: two fit, the third is declined, then one empties the wallet and
    // the last finds it closed.
    for (n, amount) in [(0, 10), (1, 10), (2, 10), (3, 5), (4, 1)] {
        payments
            .handle(&payment(n), PaymentCommand::Request { amount })
            .await
            .unwrap();
    }
    // Payment 0's charge was taken before a crash, its answer never recorded.
    let metadata = decider_core::Metadata::default().with_idempotency_key("payment-0/charge");
    let step = decider_core::Process::next_step(
        &Checkout,
        &payment(0),
        &PaymentState::Charging { amount: 10 },
    );
    wallets
        .handle_with(&wallet, step.unwrap().command, metadata)
        .await
        .unwrap();

    let checkpoints = Arc::new(MemoryCheckpoints::default());
    let projection = Projection::new("checkout").with_filter(
        EventFilter::all()
            .with_categories(["payment"])
            .with_event_types(["Requested"]),
    );
    // One payment at a time, so that the order of the charges is the order of the requests.
    let handler =
        ProcessHandler::new(Checkout, payments.clone(), wallets.clone()).with_concurrency(1);
    let runner = ProjectionRunner::new(
        store.clone(),
        projection,
        CheckpointedSink::new(handler, checkpoints.clone(), MemoryDeadLetters::default()),
    )
    .with_options(RunnerOptions {
        max_batch: 1,
        ..RunnerOptions::default()
    });
    run_until(&runner, 5).await.unwrap();
    checkpoints.reset("checkout").await.unwrap();
    run_until(&runner, 5).await.unwrap();

    let state = |n| {
        let payments = payments.clone();
        async move { payments.load(&payment(n)).await.unwrap().state }
    };
    assert_eq!(state(0).await, PaymentState::Charged);
    assert_eq!(state(1).await, PaymentState::Charged);
    assert_eq!(
        state(2).await,
        PaymentState::Declined(WalletError::InsufficientFunds)
    );
    assert_eq!(state(3).await, PaymentState::Charged);
    assert_eq!(state(4).await, PaymentState::Declined(WalletError::Closed));
    let charges: Vec<_> = store
        .read_stream(&wallet, StreamFrom::Start, Direction::Forward, None)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        charges.len(),
        4,
        "funded, then three charges, each once: {charges:?}"
    );
    // Each payment's record names the event that started it and carries the step's key.
    let records: Vec<_> = store
        .read_stream(&payment(2), StreamFrom::Start, Direction::Forward, None)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].metadata.causation_id, Some(records[0].id));
    assert_eq!(
        records[1].metadata.idempotency_key.as_deref(),
        Some("payment-2/charge/recorded")
    );
}

/// A checkout whose records its payments refuse: a bug in the process.
struct BrokenCheckout;

impl decider_core::Process for BrokenCheckout {
    type Own = Payment;
    type Target = Wallet;
    type Step = ();
    fn next_step(
        &self,
        payment: &StreamId,
        state: &PaymentState,
    ) -> Option<decider_core::ProcessStep<(), WalletEvent>> {
        decider_core::Process::next_step(&Checkout, payment, state)
    }
    fn record(&self, (): (), _: Result<(), decider_core::Refused<WalletError>>) -> PaymentCommand {
        PaymentCommand::Request { amount: 1 }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_whose_answer_is_refused_while_it_waits_for_it_is_poison() {
    let store = MemoryStore::new();
    let payments = Arc::new(CommandHandler::new(Payment, store.clone()));
    let wallets = Arc::new(CommandHandler::new(Wallet, store.clone()));
    wallets
        .handle(
            &StreamId::new("wallet-main").unwrap(),
            WalletEvent::Funded { amount: 25 },
        )
        .await
        .unwrap();
    payments
        .handle(&payment(0), PaymentCommand::Request { amount: 10 })
        .await
        .unwrap();
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("checkout").with_filter(EventFilter::all().with_categories(["payment"])),
        CheckpointedSink::new(
            ProcessHandler::new(BrokenCheckout, payments.clone(), wallets),
            MemoryCheckpoints::default(),
            MemoryDeadLetters::default(),
        ),
    );
    let error = run_until(&runner, 1).await.unwrap_err();
    assert!(
        error.to_string().contains("payment-0/charge"),
        "names the step: {error}"
    );
    assert!(matches!(
        runner.status_handle().get().state,
        RunnerState::Failed { .. }
    ));
    assert_eq!(
        payments.load(&payment(0)).await.unwrap().state,
        PaymentState::Charging { amount: 10 }
    );
}

/// A control plane whose `complete` fails the first `failures` times, as a store that is down.
#[derive(Default)]
struct ForgetfulControl {
    inner: MemoryControl,
    failures: AtomicUsize,
}

impl ProjectionControl for ForgetfulControl {
    async fn report(&self, report: &RunnerReport) -> Result<(), StoreError> {
        self.inner.report(report).await
    }
    async fn reports(&self) -> Result<Vec<RunnerReport>, StoreError> {
        self.inner.reports().await
    }
    async fn request(&self, projection: &str, action: ControlAction) -> Result<u64, StoreError> {
        self.inner.request(projection, action).await
    }
    async fn pending(&self, projection: &str) -> Result<Vec<ControlRequest>, StoreError> {
        self.inner.pending(projection).await
    }
    async fn complete(
        &self,
        id: u64,
        runner: &str,
        result: Result<String, String>,
    ) -> Result<(), StoreError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::unavailable("the control plane is down"));
        }
        self.inner.complete(id, runner, result).await
    }
    async fn request_status(&self, id: u64) -> Result<Option<ControlRequest>, StoreError> {
        self.inner.request_status(id).await
    }
}

/// Counts resets of a model.
struct Resets {
    model: Arc<Model>,
    resets: AtomicUsize,
}

impl EventHandler for Resets {
    async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
        self.model.handle(batch).await
    }
    async fn reset(&self) -> Result<(), SinkError> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.model.reset().await
    }
}

async fn wait_done(control: &impl ProjectionControl, id: u64) -> RequestDone {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(done) = control.request_status(id).await.unwrap().unwrap().done {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the request was not carried out in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_requests_are_carried_out_once_even_when_marking_them_done_fails() {
    let store = MemoryStore::new();
    fill(&store, 3, 10, "Deposited").await;
    fill(&store, 1, 1, "Frozen").await;
    let model = Arc::new(Model::default());
    *model.broken_type.lock().unwrap() = Some("Frozen".into());
    let handler = Arc::new(Resets {
        model: model.clone(),
        resets: AtomicUsize::new(0),
    });
    let control = Arc::new(ForgetfulControl::default());
    let options = RunnerOptions {
        poison: PoisonPolicy::DeadLetter,
        status_interval: Duration::from_millis(20),
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("p"),
        CheckpointedSink::new(
            handler.clone(),
            Arc::new(MemoryCheckpoints::default()),
            Arc::new(MemoryDeadLetters::default()),
        ),
    )
    .with_options(options)
    .with_control(control.clone());

    let operator = async {
        tokio::time::timeout(WAIT, async {
            while runner.status().lag != Some(0) || runner.status().state != RunnerState::Live {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(model.counts().len(), 30, "all but the poison event");
        let before = model.read_model();

        // The first two attempts to mark the rebuild done fail: it is still done once.
        control.failures.store(2, Ordering::SeqCst);
        let id = control.request("p", ControlAction::Rebuild).await.unwrap();
        let done = wait_done(&control, id).await;
        assert!(done.result.is_ok(), "{done:?}");
        assert_eq!(done.by.split(':').count(), 3, "host:pid:n, not {}", done.by);
        tokio::time::timeout(WAIT, async {
            while model.counts().len() < 30 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the rebuild did not replay");
        assert_eq!(
            handler.resets.load(Ordering::SeqCst),
            1,
            "rebuilt more than once"
        );
        assert_eq!(
            model.read_model(),
            before,
            "the rebuild has the same result"
        );

        *model.broken_type.lock().unwrap() = None;
        let id = control
            .request("p", ControlAction::RedriveDeadLetters)
            .await
            .unwrap();
        let done = wait_done(&control, id).await;
        assert_eq!(done.result, Ok("1 re-driven, 0 failed again".to_owned()));
    };
    run_during(&runner, operator).await.unwrap();
    assert_eq!(model.counts().len(), 31, "the dead letter re-driven");
    let reports = control.reports().await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].state, ReportedState::Stopped);
    assert_eq!(reports[0].projection, "p");
}
