//! Projections on PostgreSQL: the exactly-once sink through crashes, checkpoints that never move
//! backwards, dead letters, rebuilds, and one active runner per projection across "processes".
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use decider_core::projection::{
    CheckpointError, CheckpointStore, ControlAction, DeadLetterStore, PoisonPolicy, Projection,
    ProjectionControl, ProjectionError, ProjectionRunner, ReportedState, RunnerOptions,
    RunnerState, SinkError,
};
use decider_core::{
    EventData, EventFilter, EventStore, ExpectedVersion, Position, RecordedEvent, StreamId,
};
use decider_store_postgres::{
    PgTransactionalSink, PostgresStore, TransactionalHandler, handle_error,
};
use support::{drop_store, fresh_store, raw_client};
use tokio::sync::oneshot;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Counts every delivery of every event in a table — deliberately *not* idempotent, so that an
/// event applied twice shows as a count of 2.
struct Counter {
    schema: String,
    /// Fail (poison) on events of this type while set.
    broken_type: std::sync::Mutex<Option<String>>,
    /// Hold the transaction open after writing, until cleared.
    stall: AtomicBool,
}

impl Counter {
    async fn new(store: &PostgresStore) -> Arc<Self> {
        let client = store.pool().get().await.unwrap();
        client
            .batch_execute(&format!(
                "CREATE TABLE \"{}\".counted (event_id uuid PRIMARY KEY, stream_id text, n int NOT NULL)",
                store.schema()
            ))
            .await
            .unwrap();
        Arc::new(Self {
            schema: store.schema().to_owned(),
            broken_type: std::sync::Mutex::new(None),
            stall: AtomicBool::new(false),
        })
    }
}

impl TransactionalHandler for Counter {
    async fn handle(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
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
        let ids: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
        let streams: Vec<&str> = batch.iter().map(|e| e.stream.as_str()).collect();
        transaction
            .execute(
                &format!(
                    "INSERT INTO \"{}\".counted (event_id, stream_id, n) \
                     SELECT id, stream, 1 FROM unnest($1::uuid[], $2::text[]) AS b(id, stream) \
                     ON CONFLICT (event_id) DO UPDATE SET n = counted.n + 1",
                    self.schema
                ),
                &[&ids, &streams],
            )
            .await
            .map_err(handle_error)?;
        while self.stall.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn reset(&self, transaction: &tokio_postgres::Transaction<'_>) -> Result<(), SinkError> {
        transaction
            .execute(&format!("TRUNCATE \"{}\".counted", self.schema), &[])
            .await
            .map_err(handle_error)?;
        Ok(())
    }
}

async fn counts(store: &PostgresStore) -> BTreeMap<Uuid, i32> {
    let client = store.pool().get().await.unwrap();
    client
        .query(
            &format!("SELECT event_id, n FROM \"{}\".counted", store.schema()),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

async fn fill(
    store: &PostgresStore,
    category: &str,
    streams: usize,
    per_stream: usize,
    event_type: &str,
) {
    for s in 0..streams {
        let stream = StreamId::new(format!("{category}-{s}")).unwrap();
        let events = (0..per_stream)
            .map(|_| EventData::json(event_type, "{}"))
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
}

fn runner(
    store: &PostgresStore,
    counter: &Arc<Counter>,
    options: RunnerOptions,
) -> ProjectionRunner<PostgresStore, PgTransactionalSink<Arc<Counter>>> {
    ProjectionRunner::new(
        store.clone(),
        Projection::new("counter"),
        PgTransactionalSink::new(store.clone(), counter.clone()),
    )
    .with_options(options)
}

/// Runs until `store`'s counted table holds `events` rows (or the runner fails), then stops.
async fn run_until_counted<S, K, L>(
    runner: &ProjectionRunner<S, K, L>,
    store: &PostgresStore,
    events: usize,
) -> Result<(), ProjectionError>
where
    S: EventStore + Clone,
    K: decider_core::projection::Sink,
    L: decider_core::projection::Lease,
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
async fn a_runner_dropped_mid_batch_commits_nothing_of_it_and_no_event_is_counted_twice() {
    let store = fresh_store().await;
    fill(&store, "acct", 10, 30, "Deposited").await;
    let counter = Counter::new(&store).await;
    let options = RunnerOptions {
        max_batch: 50,
        ..RunnerOptions::default()
    };

    // The runner writes a batch and stalls before its commit; then its process "dies".
    counter.stall.store(true, Ordering::SeqCst);
    let crashed = tokio::spawn({
        let runner = runner(&store, &counter, options.clone());
        async move { runner.run(std::future::pending()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    crashed.abort();
    let _ = crashed.await;
    counter.stall.store(false, Ordering::SeqCst);
    assert!(
        counts(&store).await.is_empty(),
        "an uncommitted batch left rows behind"
    );

    let restarted = runner(&store, &counter, options);
    run_until_counted(&restarted, &store, 300).await.unwrap();
    let counts = counts(&store).await;
    assert_eq!(counts.len(), 300);
    assert!(
        counts.values().all(|&n| n == 1),
        "an event was applied twice"
    );
    drop_store(store).await;
}

#[tokio::test]
async fn a_checkpoint_moves_only_from_where_it_was_and_never_backwards() {
    let store = fresh_store().await;
    let checkpoints = store.checkpoints();
    let (p1, p2, p3) = (
        Position::new(10, 1),
        Position::new(10, 2),
        Position::new(11, 3),
    );
    checkpoints.save("p", None, p2).await.unwrap();
    // A second runner that also thinks it starts from nothing is refused.
    let moved = checkpoints.save("p", None, p1).await;
    assert!(
        matches!(moved, Err(CheckpointError::Moved { actual: Some(a), .. }) if a == p2),
        "{moved:?}"
    );
    // Backwards, even from the right place, is refused.
    assert!(checkpoints.save("p", Some(p2), p1).await.is_err());
    // From a stale place is refused.
    assert!(checkpoints.save("p", Some(p1), p3).await.is_err());
    checkpoints.save("p", Some(p2), p3).await.unwrap();
    assert_eq!(checkpoints.load("p").await.unwrap(), Some(p3));
    checkpoints.reset("p").await.unwrap();
    assert_eq!(checkpoints.load("p").await.unwrap(), None);
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_in_the_batch_transaction_and_redriven() {
    let store = fresh_store().await;
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
    let head = store.head_position().await.unwrap();
    assert_eq!(store.checkpoints().load("counter").await.unwrap(), head);

    *counter.broken_type.lock().unwrap() = None;
    let report = runner.redrive_dead_letters().await.unwrap();
    assert_eq!(report.redriven.len(), 1);
    assert!(runner.dead_letters().await.unwrap().is_empty());
    let counts = counts(&store).await;
    assert_eq!(counts.len(), 41);
    assert!(counts.values().all(|&n| n == 1));
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_under_stop_reports_where_it_is() {
    let store = fresh_store().await;
    fill(&store, "acct", 1, 5, "Deposited").await;
    fill(&store, "bad", 1, 1, "Frozen").await;
    let counter = Counter::new(&store).await;
    *counter.broken_type.lock().unwrap() = Some("Frozen".into());
    let runner = runner(&store, &counter, RunnerOptions::default());
    let stopped = run_until_counted(&runner, &store, 6).await;
    match stopped {
        Err(ProjectionError::Poison {
            stream, revision, ..
        }) => {
            assert_eq!((stream.as_str(), revision), ("bad-0", 0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(counts(&store).await.len(), 5);
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_replays_into_an_emptied_read_model_with_the_same_result() {
    let store = fresh_store().await;
    fill(&store, "acct", 5, 20, "Deposited").await;
    let counter = Counter::new(&store).await;
    let runner = runner(&store, &counter, RunnerOptions::default());
    run_until_counted(&runner, &store, 100).await.unwrap();
    let incremental = counts(&store).await;
    runner.rebuild().await.unwrap();
    assert!(counts(&store).await.is_empty());
    run_until_counted(&runner, &store, 100).await.unwrap();
    assert_eq!(counts(&store).await, incremental);
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_active_runner_loses_its_connection_the_other_takes_over_exactly_once() {
    let store = fresh_store().await;
    let category = format!("lease{}", Uuid::new_v4().simple());
    fill(&store, &category, 10, 20, "Deposited").await;
    let counter = Counter::new(&store).await;
    let options = RunnerOptions {
        max_batch: 20,
        ..RunnerOptions::default()
    };
    let projection = Projection::new(format!("leased-{}", Uuid::new_v4().simple()))
        .with_filter(EventFilter::all().with_categories([category.clone()]));
    let make = || {
        ProjectionRunner::new(
            store.clone(),
            projection.clone(),
            PgTransactionalSink::new(store.clone(), counter.clone()),
        )
        .with_options(options.clone())
        .with_lease(store.leases().unwrap())
    };
    let (first, second) = (Arc::new(make()), Arc::new(make()));
    let (stop_first, first_stopped) = oneshot::channel::<()>();
    let first_run = tokio::spawn({
        let first = first.clone();
        async move {
            first
                .run(async {
                    first_stopped.await.ok();
                })
                .await
        }
    });
    tokio::time::timeout(WAIT, async {
        while counts(&store).await.len() < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let (stop_second, second_stopped) = oneshot::channel::<()>();
    let second_run = tokio::spawn({
        let second = second.clone();
        async move {
            second
                .run(async {
                    second_stopped.await.ok();
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        second.status().state,
        RunnerState::WaitingForLease,
        "two runners active"
    );

    // Kill the first runner's lease connection, as if its process died; more events arrive.
    let monitor = raw_client().await;
    let killed: i64 = monitor
        .query_one(
            "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a \
             WHERE a.application_name LIKE $1 AND EXISTS (SELECT 1 FROM pg_locks l \
               WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)",
            // PostgreSQL keeps 63 bytes of a name: the projection's is cut off here.
            &[&format!("decider:{}:lease:%", store.schema())],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        killed, 1,
        "the holder's lease connection, and only it, is killed"
    );
    fill(&store, &category, 10, 10, "Withdrawn").await;

    tokio::time::timeout(WAIT, async {
        while counts(&store).await.len() < 300 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the second runner did not take over");
    // The first runner lost its lease, not its life: once its backoff is over it waits to take
    // over in turn.
    tokio::time::timeout(WAIT, async {
        while first.status().state != RunnerState::WaitingForLease {
            assert!(!first_run.is_finished(), "{:?}", first.status());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the first runner is not waiting: {:?}", first.status()));
    stop_second.send(()).unwrap();
    second_run.await.unwrap().unwrap();
    stop_first.send(()).unwrap();
    first_run.await.unwrap().unwrap();
    let counts = counts(&store).await;
    assert_eq!(counts.len(), 300);
    assert!(
        counts.values().all(|&n| n == 1),
        "an event was applied twice"
    );
    drop_store(store).await;
}

#[tokio::test]
async fn the_control_plane_keeps_reports_and_requests() {
    let store = fresh_store().await;
    decider_tests::control::control_contract(store.control()).await;
    drop_store(store).await;
}

/// Waits until request `id` is done, and returns how.
async fn done(store: &PostgresStore, id: u64) -> Result<String, String> {
    tokio::time::timeout(WAIT, async {
        loop {
            let request = store.control().request_status(id).await.unwrap().unwrap();
            if let Some(done) = request.done {
                return done.result;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the request was not carried out in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_requests_are_carried_out_by_the_runner_holding_the_lease() {
    let store = fresh_store().await;
    fill(&store, "acct", 4, 10, "Deposited").await;
    fill(&store, "bad", 1, 1, "Frozen").await;
    let counter = Counter::new(&store).await;
    *counter.broken_type.lock().unwrap() = Some("Frozen".into());
    let options = RunnerOptions {
        poison: PoisonPolicy::DeadLetter,
        status_interval: Duration::from_millis(100),
        ..RunnerOptions::default()
    };
    let make = || {
        Arc::new(
            runner(&store, &counter, options.clone())
                .with_lease(store.leases().unwrap())
                .with_control(store.control()),
        )
    };
    let (first, second) = (make(), make());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let spawn = |runner: Arc<ProjectionRunner<_, _, _, _>>| {
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            runner
                .run(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        })
    };
    let runs = [spawn(first.clone()), spawn(second.clone())];
    let control = store.control();

    // Both report: one is active, the other waits for the lease.
    let reports = tokio::time::timeout(WAIT, async {
        loop {
            let reports = control.reports().await.unwrap();
            let states: Vec<_> = reports.iter().map(|r| r.state).collect();
            if states.contains(&ReportedState::Live)
                && states.contains(&ReportedState::WaitingForLease)
                && reports.iter().any(|r| r.lag == Some(0))
            {
                return reports;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the runners did not report");
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.projection == "counter"));
    assert_eq!(counts(&store).await.len(), 40, "all but the poison event");

    // A re-drive while the handler is still broken fails again; once fixed it succeeds.
    let id = control
        .request("counter", ControlAction::RedriveDeadLetters)
        .await
        .unwrap();
    let still_broken = done(&store, id).await.unwrap();
    assert!(
        still_broken.starts_with("0 re-driven, 1 failed again; bad-0 revision 0: "),
        "{still_broken}"
    );
    *counter.broken_type.lock().unwrap() = None;
    let id = control
        .request("counter", ControlAction::RedriveDeadLetters)
        .await
        .unwrap();
    assert_eq!(
        done(&store, id).await.unwrap(),
        "1 re-driven, 0 failed again"
    );
    assert!(
        store
            .dead_letters()
            .list("counter")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(counts(&store).await.len(), 41);

    // A rebuild empties the read model and replays it, each event once; events appended during
    // it are projected too.
    let id = control
        .request("counter", ControlAction::Rebuild)
        .await
        .unwrap();
    done(&store, id).await.unwrap();
    fill(&store, "late", 1, 5, "Deposited").await;
    tokio::time::timeout(WAIT, async {
        while counts(&store).await.len() < 46 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the rebuild did not replay the log");
    let counts = counts(&store).await;
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let request = control.request_status(id).await.unwrap().unwrap();
    let carried_by = request.done.unwrap().by;
    let active = [&first, &second]
        .into_iter()
        .filter(|r| r.status().state == RunnerState::Live)
        .count();
    assert_eq!(active, 1, "one runner holds the lease");
    assert!(
        reports
            .iter()
            .any(|r| r.runner == carried_by && r.state == ReportedState::Live),
        "the request was carried out by {carried_by}, not by the active runner: {reports:?}"
    );

    stop.send(true).unwrap();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    let stopped: Vec<_> = control
        .reports()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(
        stopped,
        [ReportedState::Stopped; 2],
        "a stopped runner says so"
    );
    drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_connections_are_killed_a_controlled_runner_reports_again_and_takes_requests() {
    let store = fresh_store().await;
    fill(&store, "acct", 2, 10, "Deposited").await;
    let counter = Counter::new(&store).await;
    let options = RunnerOptions {
        status_interval: Duration::from_millis(100),
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..RunnerOptions::default()
    };
    let runner = runner(&store, &counter, options)
        .with_lease(store.leases().unwrap())
        .with_control(store.control());
    let control = store.control();
    let live_after = |since: std::time::SystemTime| {
        let control = control.clone();
        async move {
            tokio::time::timeout(WAIT, async {
                loop {
                    if let Ok(reports) = control.reports().await
                        && reports
                            .iter()
                            .any(|r| r.state == ReportedState::Live && r.reported_at > since)
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("the runner did not report itself live");
        }
    };
    let operator = async {
        live_after(std::time::SystemTime::UNIX_EPOCH).await;
        // Every connection of the store goes: the pool's, the lease's, the listener's.
        let monitor = raw_client().await;
        let killed = support::terminate_connections_of(&monitor, store.schema()).await;
        assert!(
            killed >= 2,
            "the lease's and a pooled connection at least: {killed}"
        );
        let after_fault = std::time::SystemTime::now();
        fill(&store, "late", 1, 5, "Deposited").await;
        live_after(after_fault).await;
        // Requests are taken again too.
        let id = control
            .request("counter", ControlAction::Rebuild)
            .await
            .unwrap();
        done(&store, id).await.unwrap();
        tokio::time::timeout(WAIT, async {
            while counts(&store).await.len() < 25 {
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
    assert_eq!(counts.len(), 25);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    drop_store(store).await;
}

/// Waits until `done` holds, polling.
async fn until_async<F: std::future::Future<Output = bool>>(what: &str, done: impl Fn() -> F) {
    tokio::time::timeout(WAIT, async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not in time"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_partitions_exactly_once_through_lost_connections_and_a_takeover() {
    use decider_core::projection::{ClaimOptions, PartitionedRunner};

    let first = fresh_store().await;
    // The second "process": its own store on the same schema, its connections named apart so
    // that they can be killed alone.
    let name = format!("second-{}", first.schema());
    let url = format!("{}?application_name={name}", support::database_url());
    let second = PostgresStore::connect_with(
        &url,
        decider_store_postgres::PostgresOptions {
            schema: first.schema().to_owned(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let counter = Counter::new(&first).await;
    let runner = |store: &PostgresStore| {
        PartitionedRunner::new(
            store.clone(),
            Projection::new("counted"),
            4,
            PgTransactionalSink::new(store.clone(), counter.clone()),
        )
        .unwrap()
        .with_lease(store.leases().unwrap())
        .with_claims(ClaimOptions {
            limit: 4,
            claim_interval: Duration::from_millis(100),
        })
        .with_options(RunnerOptions {
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            ..RunnerOptions::default()
        })
    };
    let (a, b) = (runner(&first), runner(&second));
    let total = || async { counts(&first).await.len() };
    let (stop_a, a_stopped) = oneshot::channel::<()>();
    let (stop_b, b_stopped) = oneshot::channel::<()>();
    let monitor = raw_client().await;
    let scenario = async {
        fill(&first, "acct", 40, 5, "Deposited").await;
        until_async("the first 200 events", || async { total().await == 200 }).await;
        assert!(
            a.held() >= 1 && b.held() >= 1,
            "{} and {}",
            a.held(),
            b.held()
        );
        // The second loses every connection (pool, leases): its partitions come free, it
        // claims again, and nothing is counted twice.
        let killed: i64 = monitor
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name LIKE $1 || '%'",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert!(killed >= 1, "the second process's connections were killed");
        fill(&first, "acct", 40, 5, "Deposited").await;
        until_async("the next 200 events", || async { total().await == 400 }).await;
        // A partition the second gave up shows the fault only until its slot claims again:
        // then it is held again (live) or waits for its lease (the first may hold it now).
        until_async("no partition left reconnecting", || async {
            b.statuses()
                .iter()
                .all(|status| !matches!(status.state, RunnerState::Reconnecting { .. }))
        })
        .await;
        // The second stops: the first takes every partition over from its checkpoints.
        stop_b.send(()).unwrap();
        fill(&first, "acct", 40, 5, "Deposited").await;
        until_async("the last 200 events", || async { total().await == 600 }).await;
        assert_eq!(a.held(), 4, "the survivor holds every partition");
        stop_a.send(()).unwrap();
    };
    let (ra, rb, ()) = tokio::join!(
        a.run(async {
            a_stopped.await.ok();
        }),
        b.run(async {
            b_stopped.await.ok();
        }),
        scenario
    );
    ra.unwrap();
    rb.unwrap();
    let counts = counts(&first).await;
    assert!(
        counts.values().all(|&n| n == 1),
        "an event was counted twice: {:?}",
        counts.values().filter(|&&n| n != 1).count()
    );
    drop_store(first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitions_page_is_an_index_scan_and_the_hash_is_the_rust_one() {
    let store = fresh_store().await;
    let ids = [
        "acct-1",
        "account-1",
        "konto-ünïcödé-ß",
        "订单-42",
        "a",
        "x-💡",
    ];
    for id in ids {
        let stream = StreamId::new(id).unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![EventData::json("E", "{}")],
            )
            .await
            .unwrap();
    }
    fill(&store, "acct", 400, 10, "Deposited").await;
    let client = store.pool().get().await.unwrap();
    let schema = store.schema().to_owned();
    for id in ids {
        let hash: i64 = client
            .query_one(
                &format!(
                    "SELECT stream_hash FROM \"{schema}\".events WHERE stream_id = $1 LIMIT 1"
                ),
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        let stream = StreamId::new(id).unwrap();
        assert_eq!(
            hash,
            i64::from(decider_core::projection::stream_hash(&stream)),
            "{id}"
        );
    }
    // The first read of a partition of 4 starts building the index, in the background: the
    // read does not wait for it.
    let partition = decider_core::projection::Partition::new(1, 4).unwrap();
    let filter = EventFilter::all().with_partition(partition);
    let read: Vec<RecordedEvent> =
        futures::TryStreamExt::try_collect(store.read_all(None, Some(10), &filter))
            .await
            .unwrap();
    assert!(read.iter().all(|e| partition.contains(&e.stream)));
    until_async("the index built", || async {
        partition_index(&store, 4).await == Some(true)
    })
    .await;
    client
        .batch_execute(&format!("ANALYZE \"{schema}\".events"))
        .await
        .unwrap();
    // The page query, as the store sends it.
    let plan: Vec<String> = client
        .query(
            &format!(
                "EXPLAIN SELECT stream_id, revision FROM \"{schema}\".events \
                 WHERE ((stream_hash * 4) >> 32) = 1 \
                   AND (transaction_id, global_position) > ('0'::xid8, 0) \
                   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                   AND (cardinality('{{}}'::text[]) = 0 OR event_type = ANY ('{{}}')) \
                   AND (cardinality('{{}}'::text[]) = 0 OR category = ANY ('{{}}')) \
                 ORDER BY transaction_id, global_position LIMIT 256"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("events_partitions_4"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    drop(client);
    drop_store(store).await;
}

/// Whether `events_partitions_<count>` of the store's schema exists, and is valid.
async fn partition_index(store: &PostgresStore, count: u32) -> Option<bool> {
    let client = store.pool().get().await.unwrap();
    client
        .query_opt(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[&store.schema(), &format!("events_partitions_{count}")],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_reading_partitions_at_once_build_one_valid_index_and_repair_an_interrupted_one()
{
    let first = fresh_store().await;
    fill(&first, "acct", 40, 5, "Deposited").await;
    // An interrupted build of the index of 3 partitions: a concurrent build that failed (here
    // on a unique violation) leaves an invalid index of that name behind.
    let client = first.pool().get().await.unwrap();
    let failed = client
        .batch_execute(&format!(
            "CREATE UNIQUE INDEX CONCURRENTLY events_partitions_3 ON \"{}\".events (category)",
            first.schema()
        ))
        .await;
    assert!(failed.is_err());
    drop(client);
    assert_eq!(partition_index(&first, 3).await, Some(false));
    // Four "processes" (stores of their own on the schema) read partitions of 3 and of 5 at
    // once: their first reads race to build the indexes.
    let mut stores = vec![first.clone()];
    for _ in 0..3 {
        let store = PostgresStore::connect_with(
            &support::database_url(),
            decider_store_postgres::PostgresOptions {
                schema: first.schema().to_owned(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        stores.push(store);
    }
    let reads = stores.iter().enumerate().map(|(n, store)| async move {
        for round in 0..200u32 {
            for count in [3, 5] {
                let partition =
                    decider_core::projection::Partition::new((n as u32 + round) % count, count)
                        .unwrap();
                let filter = EventFilter::all().with_partition(partition);
                let read: Vec<RecordedEvent> =
                    futures::TryStreamExt::try_collect(store.read_all(None, None, &filter))
                        .await
                        .unwrap();
                assert!(read.iter().all(|e| partition.contains(&e.stream)));
            }
            if partition_index(store, 3).await == Some(true)
                && partition_index(store, 5).await == Some(true)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    futures::future::join_all(reads).await;
    assert_eq!(partition_index(&first, 3).await, Some(true), "repaired");
    assert_eq!(partition_index(&first, 5).await, Some(true), "built once");
    drop_store(first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_waiting_for_a_lease_does_not_hold_up_the_partition_index() {
    use decider_core::projection::Lease;

    let store = fresh_store().await;
    fill(&store, "acct", 20, 2, "Deposited").await;
    let leases = store.leases().unwrap();
    let held = leases.acquire("busy").await.unwrap();
    // A standby waits for the lease, as long as the holder lives.
    let standby = {
        let leases = store.leases().unwrap();
        tokio::spawn(async move { leases.acquire("busy").await.map(drop) })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // `CREATE INDEX CONCURRENTLY` waits for every running statement: a lease waited for
    // server-side would keep it waiting for good.
    tokio::time::timeout(WAIT, store.ensure_partition_index(3))
        .await
        .expect("the index build waited for the standby")
        .unwrap();
    assert_eq!(partition_index(&store, 3).await, Some(true));
    drop(held);
    tokio::time::timeout(WAIT, standby)
        .await
        .expect("the standby took the lease once it was free")
        .unwrap()
        .unwrap();
    drop_store(store).await;
}
