//! Projections on SQLite: the exactly-once sink, checkpoints that never move backwards, dead
//! letters, rebuilds, snapshots, and one active runner per projection across stores on one file
//! (as across processes) through table leases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use decider_core::projection::{
    CheckpointError, CheckpointStore, ControlAction, Lease, PoisonPolicy, Projection,
    ProjectionControl, ProjectionError, ProjectionRunner, ReportedState, RunnerOptions,
    RunnerReport, RunnerState, Sink, SinkError,
};
use decider_core::{
    EventData, EventFilter, EventStore, ExpectedVersion, Position, RecordedEvent, Snapshot,
    SnapshotStore, StreamId,
};
use decider_store_sqlite::{
    SqliteStore, SqliteTransactionalHandler, SqliteTransactionalSink, handle_error,
};
use futures::TryStreamExt;
use rusqlite::Transaction;
use support::{TempDatabase, remove_database};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(30);

/// Counts every delivery of every event in a table — deliberately *not* idempotent, so that an
/// event applied twice shows as a count of 2.
struct Counter {
    broken_type: std::sync::Mutex<Option<String>>,
}

impl Counter {
    async fn new(store: &SqliteStore) -> Arc<Self> {
        store
            .write(|connection| {
                connection.execute_batch(
                    "CREATE TABLE IF NOT EXISTS counted (event_id BLOB PRIMARY KEY, n INTEGER NOT NULL)",
                )
            })
            .await
            .unwrap()
            .unwrap();
        Arc::new(Self {
            broken_type: std::sync::Mutex::new(None),
        })
    }
}

impl SqliteTransactionalHandler for Counter {
    fn handle(
        &self,
        transaction: &Transaction<'_>,
        batch: &[RecordedEvent],
    ) -> Result<(), SinkError> {
        let broken = self.broken_type.lock().unwrap().clone();
        if let Some(index) = batch
            .iter()
            .position(|e| Some(&e.event_type) == broken.as_ref())
        {
            return Err(SinkError::Poison {
                index,
                reason: "broken".into(),
            });
        }
        let mut count = transaction
            .prepare_cached(
                "INSERT INTO counted (event_id, n) VALUES (?1, 1) \
                 ON CONFLICT (event_id) DO UPDATE SET n = n + 1",
            )
            .map_err(handle_error)?;
        for event in batch {
            count
                .execute([event.id.as_bytes().as_slice()])
                .map_err(handle_error)?;
        }
        Ok(())
    }

    fn reset(&self, transaction: &Transaction<'_>) -> Result<(), SinkError> {
        transaction
            .execute_batch("DELETE FROM counted")
            .map_err(handle_error)
    }
}

async fn counts(store: &SqliteStore) -> BTreeMap<Vec<u8>, i64> {
    store
        .write(|connection| {
            let mut statement = connection.prepare("SELECT event_id, n FROM counted")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<BTreeMap<_, _>, _>>()
        })
        .await
        .unwrap()
        .unwrap()
}

async fn fill(store: &SqliteStore, category: &str, streams: usize, per: usize, event_type: &str) {
    for s in 0..streams {
        let stream = StreamId::new(format!("{category}-{s}")).unwrap();
        let events = (0..per)
            .map(|_| EventData::json(event_type, "{}"))
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
}

fn runner(
    store: &SqliteStore,
    counter: &Arc<Counter>,
    options: RunnerOptions,
) -> ProjectionRunner<SqliteStore, SqliteTransactionalSink<Arc<Counter>>> {
    ProjectionRunner::new(
        store.clone(),
        Projection::new("counter"),
        SqliteTransactionalSink::new(store.clone(), counter.clone()),
    )
    .with_options(options)
}

/// Runs until `store`'s counted table holds `events` rows (or the runner fails), then stops.
async fn run_until_counted<K, L>(
    runner: &ProjectionRunner<SqliteStore, K, L>,
    store: &SqliteStore,
    events: usize,
) -> Result<(), ProjectionError>
where
    K: Sink,
    L: Lease,
{
    let status = runner.status_handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let watch = async {
        tokio::time::timeout(WAIT, async {
            while counts(store).await.len() < events
                && !matches!(status.get().state, RunnerState::Failed { .. })
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the projection did not get there in time");
        let _ = stop.send(());
    };
    let (result, ()) = tokio::join!(
        runner.run(async {
            stopped.await.ok();
        }),
        watch
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transactional_sink_applies_every_event_exactly_once_and_a_lost_reply_is_success() {
    let database = TempDatabase::new("store");
    let store = database.open();
    fill(&store, "acct", 10, 30, "Deposited").await;
    let counter = Counter::new(&store).await;
    let runner = runner(&store, &counter, RunnerOptions::default());
    run_until_counted(&runner, &store, 300).await.unwrap();
    let counted = counts(&store).await;
    assert_eq!(counted.len(), 300);
    assert!(
        counted.values().all(|&n| n == 1),
        "an event was applied twice"
    );
    assert_eq!(
        store.checkpoints().load("counter").await.unwrap(),
        store.head_position().await.unwrap()
    );

    // The same batch again from the same previous position: its first commit's reply was
    // "lost". Success, and nothing counted twice.
    fill(&store, "more", 1, 3, "Deposited").await;
    let sink = SqliteTransactionalSink::new(store.clone(), counter.clone());
    let previous = sink.checkpoint("counter").await.unwrap();
    let batch: Vec<_> = store
        .read_all(previous, None, &EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    sink.apply("counter", &batch, previous).await.unwrap();
    sink.apply("counter", &batch, previous).await.unwrap();
    let counted = counts(&store).await;
    assert_eq!(counted.len(), 303);
    assert!(
        counted.values().all(|&n| n == 1),
        "a repeated batch was applied twice"
    );
    // From a stale position that is not this batch's own: refused, nothing applied.
    let stale = sink.apply("counter", &batch[..1], previous).await;
    assert!(
        matches!(stale, Err(SinkError::CheckpointMoved { .. })),
        "{stale:?}"
    );
    assert!(counts(&store).await.values().all(|&n| n == 1));
    remove_database(store.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_moves_only_from_where_it_was_and_never_backwards() {
    let database = TempDatabase::new("store");
    let store = database.open();
    let checkpoints = store.checkpoints();
    let (p1, p2, p3) = (
        Position::new(10, 1),
        Position::new(10, 2),
        Position::new(11, 3),
    );
    checkpoints.save("p", None, p2).await.unwrap();
    let moved = checkpoints.save("p", None, p1).await;
    assert!(
        matches!(moved, Err(CheckpointError::Moved { actual: Some(a), .. }) if a == p2),
        "{moved:?}"
    );
    // Backwards, even from the right place, is refused.
    assert!(checkpoints.save("p", Some(p2), p1).await.is_err());
    assert!(checkpoints.save("p", Some(p1), p3).await.is_err());
    checkpoints.save("p", Some(p2), p3).await.unwrap();
    assert_eq!(checkpoints.load("p").await.unwrap(), Some(p3));
    checkpoints.reset("p").await.unwrap();
    assert_eq!(checkpoints.load("p").await.unwrap(), None);
    remove_database(store.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_in_the_batch_transaction_and_redriven() {
    let database = TempDatabase::new("store");
    let store = database.open();
    fill(&store, "acct", 2, 10, "Deposited").await;
    fill(&store, "bad", 1, 1, "Frozen").await;
    fill(&store, "acct", 2, 10, "Withdrawn").await;
    let counter = Counter::new(&store).await;
    *counter.broken_type.lock().unwrap() = Some("Frozen".into());
    let options = RunnerOptions {
        poison: PoisonPolicy::DeadLetter,
        ..RunnerOptions::default()
    };
    let runner = runner(&store, &counter, options);
    run_until_counted(&runner, &store, 40).await.unwrap();
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].stream.as_str(), letters[0].revision),
        ("bad-0", 0)
    );
    assert_eq!(
        store.checkpoints().load("counter").await.unwrap(),
        store.head_position().await.unwrap()
    );
    *counter.broken_type.lock().unwrap() = None;
    let report = runner.redrive_dead_letters().await.unwrap();
    assert_eq!(report.redriven.len(), 1);
    assert!(runner.dead_letters().await.unwrap().is_empty());
    let counted = counts(&store).await;
    assert_eq!(counted.len(), 41);
    assert!(counted.values().all(|&n| n == 1));
    remove_database(store.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_replays_into_an_emptied_read_model_with_the_same_result() {
    let database = TempDatabase::new("store");
    let store = database.open();
    fill(&store, "acct", 5, 20, "Deposited").await;
    let counter = Counter::new(&store).await;
    let runner = runner(&store, &counter, RunnerOptions::default());
    run_until_counted(&runner, &store, 100).await.unwrap();
    let incremental = counts(&store).await;
    runner.rebuild().await.unwrap();
    assert!(counts(&store).await.is_empty());
    run_until_counted(&runner, &store, 100).await.unwrap();
    assert_eq!(counts(&store).await, incremental);
    remove_database(store.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_held_by_one_store_at_a_time_and_passes_on_when_dropped() {
    let database = TempDatabase::new("leases");
    let path = database.path().to_owned();
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    let fast = |store: &SqliteStore| {
        store
            .leases()
            .with_timing(Duration::from_millis(50), Duration::from_millis(500))
    };
    let held = fast(&a).acquire("p").await.unwrap();
    let waiting = tokio::spawn({
        let leases = fast(&b);
        async move { leases.acquire("p").await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !waiting.is_finished(),
        "two holders at once (the heartbeat failed to renew?)"
    );
    assert!(!held.is_lost());
    drop(held);
    let taken = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(!taken.is_lost());
    drop((taken, a, b));
    remove_database(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_expires_and_a_holder_that_finds_another_owner_reports_it_lost() {
    let database = TempDatabase::new("lease-expiry");
    let path = database.path().to_owned();
    let store = SqliteStore::open(&path).unwrap();
    let leases = store
        .leases()
        .with_timing(Duration::from_millis(50), Duration::from_millis(400));
    // A holder that died: its row is there, never renewed.
    let dead = rusqlite::Connection::open(&path).unwrap();
    dead.busy_timeout(Duration::from_secs(5)).unwrap();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    dead.execute(
        "INSERT INTO leases (projection, owner, expires_at) VALUES ('p', 'dead', ?1)",
        [now_ms() + 300],
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut guard = tokio::time::timeout(WAIT, leases.acquire("p"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "taken before it expired"
    );
    // Someone else takes the row over: the holder notices at its next heartbeat.
    dead.execute(
        "UPDATE leases SET owner = 'thief', expires_at = ?1 WHERE projection = 'p'",
        [now_ms() + 60_000],
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("the guard did not report the lease lost");
    drop((guard, dead, store));
    remove_database(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_leased_runners_on_one_file_count_every_event_once() {
    let database = TempDatabase::new("runners");
    let path = database.path().to_owned();
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    fill(&a, "acct", 10, 20, "Deposited").await;
    let counter = Counter::new(&a).await;
    let leased = |store: &SqliteStore| {
        runner(store, &counter, RunnerOptions::default()).with_lease(
            store
                .leases()
                .with_timing(Duration::from_millis(50), Duration::from_millis(500)),
        )
    };
    let (first, second) = (leased(&a), leased(&b));
    let (first_status, second_status) = (first.status_handle(), second.status_handle());
    let (stop, stopped) = oneshot::channel::<()>();
    let (stop_second, second_stopped) = oneshot::channel::<()>();
    let first_run = tokio::spawn(async move {
        first
            .run(async {
                stopped.await.ok();
            })
            .await
    });
    // The first has the lease before the second asks.
    tokio::time::timeout(WAIT, async {
        while !matches!(
            first_status.get().state,
            RunnerState::CatchingUp | RunnerState::Live
        ) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let second_run = tokio::spawn(async move {
        second
            .run(async {
                second_stopped.await.ok();
            })
            .await
    });
    tokio::time::timeout(WAIT, async {
        while counts(&a).await.len() < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    // The second's task may not have been polled yet on a loaded machine.
    tokio::time::timeout(WAIT, async {
        while second_status.get().state == RunnerState::Idle {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        second_status.get().state,
        RunnerState::WaitingForLease,
        "both runners are active (first: {:?})",
        first_status.get().state
    );
    // Stop the active one; the other takes over and follows new events.
    let _ = stop.send(());
    first_run.await.unwrap().unwrap();
    fill(&b, "late", 2, 10, "Deposited").await;
    tokio::time::timeout(WAIT, async {
        while counts(&a).await.len() < 220 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let _ = stop_second.send(());
    second_run.await.unwrap().unwrap();
    assert!(
        counts(&a).await.values().all(|&n| n == 1),
        "an event was counted twice"
    );
    drop((a, b));
    remove_database(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_keep_the_newest_per_stream() {
    let database = TempDatabase::new("store");
    let store = database.open();
    let stream = StreamId::new("snap-1").unwrap();
    assert_eq!(store.load(&stream).await.unwrap(), None);
    let at = |revision: u64| Snapshot {
        stream: stream.clone(),
        revision,
        state_version: 2,
        payload: bytes::Bytes::from(format!("{{\"r\":{revision}}}")),
    };
    store.save(at(10)).await.unwrap();
    store.save(at(5)).await.unwrap(); // older: ignored
    assert_eq!(store.load(&stream).await.unwrap(), Some(at(10)));
    store.save(at(20)).await.unwrap();
    assert_eq!(store.load(&stream).await.unwrap(), Some(at(20)));
    remove_database(store.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_keeps_reports_and_requests() {
    let database = TempDatabase::new("control");
    decider_tests::control::control_contract(database.open().control()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_rebuild_is_carried_out_by_the_runner_and_replays_each_event_once() {
    let database = TempDatabase::new("control-rebuild");
    let store = database.open();
    fill(&store, "acct", 4, 10, "Deposited").await;
    let counter = Counter::new(&store).await;
    let options = RunnerOptions {
        status_interval: Duration::from_millis(100),
        ..RunnerOptions::default()
    };
    let runner = runner(&store, &counter, options)
        .with_lease(store.leases())
        .with_control(store.control());
    let control = store.control();
    let operator = async {
        let live = |reports: &[RunnerReport]| {
            reports
                .iter()
                .any(|r| r.state == ReportedState::Live && r.lag == Some(0))
        };
        tokio::time::timeout(WAIT, async {
            while !live(&control.reports().await.unwrap()) || counts(&store).await.len() < 40 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the runner did not report itself live");
        let id = control
            .request("counter", ControlAction::Rebuild)
            .await
            .unwrap();
        let done = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(done) = control.request_status(id).await.unwrap().unwrap().done {
                    return done;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the rebuild was not carried out");
        assert!(done.result.is_ok(), "{done:?}");
        fill(&store, "late", 1, 5, "Deposited").await;
        tokio::time::timeout(WAIT, async {
            while counts(&store).await.len() < 45 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the rebuild did not replay the log");
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let (result, ()) = tokio::join!(
        runner.run(async {
            stopped.await.ok();
        }),
        async {
            operator.await;
            stop.send(()).unwrap();
        }
    );
    result.unwrap();
    let counts = counts(&store).await;
    assert_eq!(counts.len(), 45);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let reports = control.reports().await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].state, ReportedState::Stopped);
    remove_database(store.path());
}
