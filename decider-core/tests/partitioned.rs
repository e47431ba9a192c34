//! The partitioned runner on the memory store: partitions spread over "processes" (runners
//! sharing one lease table), each event handled once and in its stream's order, takeover when a
//! process stops, per-partition checkpoints for read-your-writes.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decider_core::projection::*;
use decider_core::{EventData, EventStore, ExpectedVersion, RecordedEvent, StreamId};
use decider_store_memory::MemoryStore;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);

/// Every revision handled, per stream, in the order handled; and which partition's batch
/// brought it (from the stream, since a batch is one partition's).
#[derive(Default)]
struct Log(Mutex<HashMap<String, Vec<u64>>>);

impl Log {
    fn handled(&self) -> usize {
        self.0.lock().unwrap().values().map(Vec::len).sum()
    }

    /// Each stream's revisions were handled once each, in order: 0, 1, 2, …
    fn assert_once_in_order(&self, streams: usize, per_stream: u64) {
        let log = self.0.lock().unwrap();
        assert_eq!(log.len(), streams);
        for (stream, revisions) in log.iter() {
            let expected: Vec<u64> = (0..per_stream).collect();
            assert_eq!(revisions, &expected, "{stream}");
        }
    }
}

impl EventHandler for Log {
    async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
        let mut log = self.0.lock().unwrap();
        for event in batch {
            log.entry(event.stream.to_string())
                .or_default()
                .push(event.revision);
        }
        Ok(())
    }

    /// Empties the whole log, as a read model's reset empties its tables: it cannot tell
    /// partitions apart.
    async fn reset(&self) -> Result<(), SinkError> {
        self.0.lock().unwrap().clear();
        Ok(())
    }
}

type Shared = CheckpointedSink<Arc<Log>, Arc<MemoryCheckpoints>, MemoryDeadLetters>;

async fn fill(store: &MemoryStore, streams: usize, events: usize) {
    for s in 0..streams {
        let stream = StreamId::new(format!("account-{s}")).unwrap();
        let batch = (0..events)
            .map(|n| EventData::json("Deposited", format!(r#"{{"n":{n}}}"#)))
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, batch)
            .await
            .unwrap();
    }
}

/// A "process": a partitioned runner over the shared store, checkpoints, log and leases.
fn process(
    store: &MemoryStore,
    log: &Arc<Log>,
    checkpoints: &Arc<MemoryCheckpoints>,
    leases: &LocalLeases,
    limit: usize,
) -> PartitionedRunner<MemoryStore, Shared, LocalLeases> {
    let sink = CheckpointedSink::new(
        log.clone(),
        checkpoints.clone(),
        MemoryDeadLetters::default(),
    );
    PartitionedRunner::new(store.clone(), Projection::new("balances"), 4, sink)
        .unwrap()
        .with_lease(leases.clone())
        .with_claims(ClaimOptions {
            limit,
            claim_interval: Duration::from_millis(40),
        })
}

async fn until(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not in time"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_share_the_partitions_and_the_survivor_takes_over_with_each_event_once_in_order()
{
    let store = MemoryStore::new();
    fill(&store, 40, 5).await;
    let (log, checkpoints, leases) = (
        Arc::new(Log::default()),
        Arc::new(MemoryCheckpoints::default()),
        LocalLeases::default(),
    );
    let first = process(&store, &log, &checkpoints, &leases, 4);
    let second = process(&store, &log, &checkpoints, &leases, 4);
    let (stop_first, first_stopped) = oneshot::channel::<()>();
    let (stop_second, second_stopped) = oneshot::channel::<()>();
    let scenario = async {
        until("the first 200 events", || log.handled() == 200).await;
        until("every partition claimed", || {
            first.held() + second.held() == 4
        })
        .await;
        // Started together, they took turns (two each, unless a slow machine delays a turn).
        assert!(
            first.held() >= 1 && second.held() >= 1,
            "{} and {}",
            first.held(),
            second.held()
        );
        stop_first.send(()).unwrap();
        until("the first gone", || first.held() == 0).await;
        fill(&store, 40, 5).await;
        until("the survivor holds all", || second.held() == 4).await;
        until("the next 200 events", || log.handled() == 400).await;
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
    log.assert_once_in_order(40, 10);
    // Every partition kept its own checkpoint.
    for partition in second.partitions() {
        assert!(
            checkpoints.load(partition.name()).await.unwrap().is_some(),
            "{}",
            partition.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_at_its_limit_leaves_the_rest_to_a_standby() {
    let store = MemoryStore::new();
    fill(&store, 16, 2).await;
    let (log, checkpoints, leases) = (
        Arc::new(Log::default()),
        Arc::new(MemoryCheckpoints::default()),
        LocalLeases::default(),
    );
    let limited = process(&store, &log, &checkpoints, &leases, 1);
    let other = process(&store, &log, &checkpoints, &leases, 4);
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = futures::FutureExt::shared(async {
        stopped.await.ok();
    });
    let scenario = async {
        until("every event", || log.handled() == 32).await;
        assert_eq!((limited.held(), other.held()), (1, 3));
        stop.send(()).unwrap();
    };
    let (a, b, ()) = tokio::join!(
        limited.run(stopped.clone()),
        other.run(stopped.clone()),
        scenario
    );
    a.unwrap();
    b.unwrap();
    log.assert_once_in_order(16, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_waits_on_the_partition_of_the_stream() {
    let store = MemoryStore::new();
    let (log, checkpoints) = (
        Arc::new(Log::default()),
        Arc::new(MemoryCheckpoints::default()),
    );
    let runner = process(&store, &log, &checkpoints, &LocalLeases::default(), 4);
    let names: Vec<_> = runner.partitions().map(|p| p.name().to_owned()).collect();
    assert_eq!(
        names,
        [
            "balances[0/4]",
            "balances[1/4]",
            "balances[2/4]",
            "balances[3/4]"
        ]
    );
    // account-1 is in partition 3 of 4 (see `stream_hash`); account-3 in partition 0.
    let (one, zero) = (
        StreamId::new("account-1").unwrap(),
        StreamId::new("account-3").unwrap(),
    );
    assert_eq!(runner.partition_for(&one).name(), "balances[3/4]");
    let zero_partition = runner.partition_for(&zero).name().to_owned();
    assert_ne!(zero_partition, "balances[3/4]");

    // Only partition 3 runs (its lease is the only one free): account-1's write is seen there,
    // account-0's partition stays behind.
    let leases = LocalLeases::default();
    let mut blocked = Vec::new();
    for name in names.iter().filter(|name| *name != "balances[3/4]") {
        blocked.push(leases.try_acquire(name).await.unwrap().unwrap());
    }
    let runner = process(&store, &log, &checkpoints, &leases, 4);
    let written = store
        .append(
            &one,
            ExpectedVersion::Any,
            vec![EventData::json("Deposited", "{}")],
        )
        .await
        .unwrap();
    store
        .append(
            &zero,
            ExpectedVersion::Any,
            vec![EventData::json("Deposited", "{}")],
        )
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let scenario = async {
        tokio::time::timeout(WAIT, async {
            while runner.checkpoint_for(&one).await.unwrap() < Some(written.position) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(runner.checkpoint_for(&zero).await.unwrap(), None);
        assert_eq!(runner.held(), 1);
        stop.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(
        runner.run(async {
            stopped.await.ok();
        }),
        scenario
    );
    result.unwrap();
    drop(blocked);
}

#[test]
fn one_partition_is_the_projection_itself_and_none_is_refused() {
    let sink = || {
        CheckpointedSink::new(
            Arc::new(Log::default()),
            MemoryCheckpoints::default(),
            MemoryDeadLetters::default(),
        )
    };
    let single =
        PartitionedRunner::new(MemoryStore::new(), Projection::new("balances"), 1, sink()).unwrap();
    let names: Vec<_> = single.partitions().map(Projection::name).collect();
    assert_eq!(names, ["balances"]);
    assert_eq!(
        PartitionedRunner::new(MemoryStore::new(), Projection::new("balances"), 0, sink()).err(),
        Some(PartitionError::NoPartitions)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_rebuild_switches_readers_only_once_the_new_version_caught_up() {
    let store = MemoryStore::new();
    fill(&store, 20, 10).await;
    let control = Arc::new(MemoryControl::default());
    let versions = BlueGreen::new("balances", control.clone())
        .with_timings(Duration::from_millis(10), Duration::from_millis(20));
    let base = Projection::new("ignored");
    let checkpoints = Arc::new(MemoryCheckpoints::default());
    let (old_log, new_log) = (Arc::new(Log::default()), Arc::new(Log::default()));
    let old = ProjectionRunner::new(
        store.clone(),
        versions.projection(&base, 1),
        CheckpointedSink::new(
            old_log.clone(),
            checkpoints.clone(),
            MemoryDeadLetters::default(),
        ),
    );
    // The new version has another partition count: a rebuild is how a count changes.
    let new_sink = Arc::new(CheckpointedSink::new(
        new_log.clone(),
        checkpoints.clone(),
        MemoryDeadLetters::default(),
    ));
    let new = PartitionedRunner::new(
        store.clone(),
        versions.projection(&base, 2),
        2,
        new_sink.clone(),
    )
    .unwrap()
    .with_lease(LocalLeases::default());
    let partitions: Vec<Projection> = new.partitions().cloned().collect();
    assert_eq!(partitions[0].name(), "balances@v2[0/2]");

    let dropped = Mutex::new(None);
    let (stop, stopped) = oneshot::channel::<()>();
    let switching = async {
        until("the old version live", || old_log.handled() == 200).await;
        let switch = versions
            .switch_when_caught_up(&store, &new_sink, &partitions, 2, |from| {
                *dropped.lock().unwrap() = Some(from);
                async { Ok(()) }
            })
            .await
            .unwrap();
        assert_eq!(switch, Switch::Switched { from: 1, to: 2 });
        // Switching again to the same version does nothing.
        let again = versions
            .switch_when_caught_up(&store, &new_sink, &partitions, 2, |_| async {
                panic!("dropped twice")
            })
            .await
            .unwrap();
        assert_eq!(again, Switch::AlreadyActive { active: 2 });
        fill(&store, 20, 1).await;
        until("the new version follows", || new_log.handled() == 220).await;
        stop.send(()).unwrap();
    };
    // A reader: whichever version is active is complete (every one of the first 200 events).
    let reading = async {
        loop {
            let active = versions.active().await.unwrap();
            let handled = if active == 1 {
                old_log.handled()
            } else {
                new_log.handled()
            };
            if old_log.handled() == 200 || active == 2 {
                assert!(
                    handled >= 200,
                    "version {active} read half-built: {handled}"
                );
            }
            if active == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let (old_run, new_run, (), ()) = tokio::join!(
        old.run(versions.superseded(1)),
        new.run(async {
            stopped.await.ok();
        }),
        switching,
        reading
    );
    // The old version's runner stopped by itself once superseded.
    old_run.unwrap();
    new_run.unwrap();
    assert_eq!(*dropped.lock().unwrap(), Some(1));
    assert_eq!(
        control.active_version("balances").await.unwrap().as_deref(),
        Some("v2")
    );
    new_log.assert_once_in_order(20, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_never_rebuilt_alone_and_a_whole_rebuild_replays_every_partition() {
    let store = MemoryStore::new();
    fill(&store, 16, 3).await;
    let (log, checkpoints, leases) = (
        Arc::new(Log::default()),
        Arc::new(MemoryCheckpoints::default()),
        LocalLeases::default(),
    );
    let control = Arc::new(MemoryControl::default());
    let runner = process(&store, &log, &checkpoints, &leases, 4).with_control(control.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let scenario = async {
        until("every event", || log.handled() == 48).await;
        // An operator asks for one partition's rebuild: its reset would empty the others' rows
        // too (and leave their checkpoints), so the runner refuses it.
        let id = control
            .request("balances[1/4]", ControlAction::Rebuild)
            .await
            .unwrap();
        let done = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(done) = control.request_status(id).await.unwrap().unwrap().done {
                    return done;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let refused = done.result.unwrap_err();
        assert!(refused.contains("cannot be rebuilt alone"), "{refused}");
        assert_eq!(log.handled(), 48, "nothing was emptied");
        stop.send(()).unwrap();
    };
    let (ran, ()) = tokio::join!(
        runner.run(async {
            stopped.await.ok();
        }),
        scenario
    );
    ran.unwrap();
    // The whole projection's rebuild, its runners stopped: everything emptied, every
    // partition's checkpoint forgotten; the next run replays every partition.
    runner.rebuild().await.unwrap();
    assert_eq!(log.handled(), 0);
    for partition in runner.partitions() {
        assert_eq!(checkpoints.load(partition.name()).await.unwrap(), None);
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let (ran, ()) = tokio::join!(
        runner.run(async {
            stopped.await.ok();
        }),
        async {
            until("every event again", || log.handled() == 48).await;
            stop.send(()).unwrap();
        }
    );
    ran.unwrap();
    log.assert_once_in_order(16, 3);
}

// --- a partitioned saga ---------------------------------------------------------------------

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum OrderEvent {
    Placed { order: u32, items: u32 },
}

#[derive(Debug, Clone, PartialEq)]
struct Reserve {
    order: u32,
    items: u32,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum StockEvent {
    Reserved { order: u32, items: u32 },
}

/// A stock: the items reserved from it.
struct Stock;

impl decider_core::Decider for Stock {
    type Command = Reserve;
    type Event = StockEvent;
    type State = u32;
    type Error = String;
    fn initial_state(&self) -> u32 {
        0
    }
    fn decide(&self, command: &Reserve, _: &u32) -> Result<Vec<StockEvent>, String> {
        Ok(vec![StockEvent::Reserved {
            order: command.order,
            items: command.items,
        }])
    }
    fn evolve(&self, reserved: u32, StockEvent::Reserved { items, .. }: &StockEvent) -> u32 {
        reserved + items
    }
}

/// Reserves an order's items, from one of three stocks (so partitions race on them).
struct Fulfilment;

impl decider_core::Saga for Fulfilment {
    type Event = OrderEvent;
    type Command = Reserve;
    fn react(&self, OrderEvent::Placed { order, items }: &OrderEvent) -> Vec<Reserve> {
        vec![Reserve {
            order: *order,
            items: *items,
        }]
    }
}

fn stock(order: u32) -> StreamId {
    StreamId::new(format!("stock-{}", order % 3)).unwrap()
}

async fn place(store: &MemoryStore, orders: std::ops::Range<u32>) {
    for order in orders {
        let placed = EventData::json("Placed", format!(r#"{{"order":{order},"items":2}}"#));
        store
            .append(
                &StreamId::new(format!("order-{order}")).unwrap(),
                ExpectedVersion::NoStream,
                vec![placed],
            )
            .await
            .unwrap();
    }
}

async fn reserved(store: &MemoryStore) -> u32 {
    let stocks = decider_core::CommandHandler::new(Stock, store.clone());
    let mut total = 0;
    for n in 0..3 {
        total += stocks.load(&stock(n)).await.unwrap().state;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_runs_partitioned_in_two_processes_and_sends_each_command_once_in_effect() {
    let store = MemoryStore::new();
    place(&store, 0..40).await;
    let (checkpoints, leases) = (
        Arc::new(MemoryCheckpoints::default()),
        LocalLeases::default(),
    );
    let process = || {
        let saga = SagaHandler::new(
            Fulfilment,
            decider_core::JsonCodec::<OrderEvent>::new(),
            decider_core::CommandHandler::new(Stock, store.clone()),
            |command: &Reserve| stock(command.order),
        );
        PartitionedRunner::new(
            store.clone(),
            Projection::new("fulfilment")
                .with_filter(decider_core::EventFilter::all().with_categories(["order"])),
            4,
            CheckpointedSink::new(saga, checkpoints.clone(), MemoryDeadLetters::default()),
        )
        .unwrap()
        .with_lease(leases.clone())
        .with_claims(ClaimOptions {
            limit: 4,
            claim_interval: Duration::from_millis(40),
        })
    };
    let (first, second) = (process(), process());
    let (stop_first, first_stopped) = oneshot::channel::<()>();
    let (stop_second, second_stopped) = oneshot::channel::<()>();
    let until_reserved = |items: u32| {
        let store = store.clone();
        async move {
            tokio::time::timeout(WAIT, async {
                while reserved(&store).await < items {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{items} items reserved: not in time"));
        }
    };
    let scenario = async {
        until_reserved(80).await;
        // The first stops mid-stream: the second takes its partitions over from their
        // checkpoints; an event handled again sends its command again under the same
        // idempotency key, which changes nothing.
        stop_first.send(()).unwrap();
        place(&store, 40..80).await;
        until_reserved(160).await;
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
    assert_eq!(
        reserved(&store).await,
        160,
        "80 orders × 2 items, each reserved once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_of_another_partition_count_refuses_to_run() {
    let store = MemoryStore::new();
    fill(&store, 8, 2).await;
    let (log, checkpoints, leases) = (
        Arc::new(Log::default()),
        Arc::new(MemoryCheckpoints::default()),
        LocalLeases::default(),
    );
    let control = Arc::new(MemoryControl::default());
    let four = process(&store, &log, &checkpoints, &leases, 4).with_control(control.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let (ran, ()) = tokio::join!(
        four.run(async {
            stopped.await.ok();
        }),
        async {
            until("every event", || log.handled() == 16).await;
            stop.send(()).unwrap();
        }
    );
    ran.unwrap();
    assert_eq!(control.partition_count("balances").await.unwrap(), Some(4));
    // Two partitions of the same projection would be other names, checkpoints and leases: each
    // would handle every event again.
    let two = PartitionedRunner::new(
        store.clone(),
        Projection::new("balances"),
        2,
        CheckpointedSink::new(
            log.clone(),
            checkpoints.clone(),
            MemoryDeadLetters::default(),
        ),
    )
    .unwrap()
    .with_lease(leases.clone())
    .with_control(control.clone());
    let refused = two.run(std::future::pending()).await.unwrap_err();
    assert!(
        refused.to_string().contains("runs as 4 partitions"),
        "{refused}"
    );
    assert_eq!(log.handled(), 16, "nothing handled twice");
}
