//! The `decider` binary against real stores: PostgreSQL (the database of `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, one schema per test, dropped after) and SQLite
//! files in temporary directories. What is checked is the plain-line output a pipe sees.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use decider_core::projection::{
    CheckpointedSink, DeadLetter, DeadLetterStore, EventHandler, PoisonPolicy, Projection,
    ProjectionControl, ProjectionRunner, ReportedState, RunnerOptions, SinkError,
};
use decider_core::{
    Direction, EventData, EventStore, ExpectedVersion, RecordedEvent, StreamFrom, StreamId,
};
use decider_store_postgres::{PostgresOptions, PostgresStore};
use decider_store_sqlite::SqliteStore;
use futures::StreamExt;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A migrated store in a schema of its own; drop it with `drop_schema` at the end of the test.
async fn postgres(test: &str) -> PostgresStore {
    let schema = format!("cli_{test}_{}", uuid::Uuid::new_v4().simple());
    let options = PostgresOptions {
        schema,
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect_with(&database_url(), options)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no PostgreSQL answers at {} ({e}): start one, or set DATABASE_URL",
                database_url()
            )
        });
    store.migrate().await.unwrap();
    store
}

/// Runs `decider --store URL [--schema S] ARGS` and waits for it.
fn decider(store: &str, schema: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_decider"));
    command.env_remove("DECIDER_STORE").args(["--store", store]);
    if let Some(schema) = schema {
        command.args(["--schema", schema]);
    }
    command.args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "decider failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn failure(output: &Output) -> String {
    assert!(!output.status.success(), "decider succeeded unexpectedly");
    String::from_utf8(output.stderr.clone()).unwrap()
}

async fn append(store: &impl EventStore, stream: &str, events: &[(&str, &str)]) {
    let events = events
        .iter()
        .map(|(kind, payload)| EventData::json(*kind, payload.as_bytes().to_vec()))
        .collect();
    store
        .append(
            &StreamId::new(stream).unwrap(),
            ExpectedVersion::Any,
            events,
        )
        .await
        .unwrap();
}

async fn seed(store: &impl EventStore) {
    append(
        store,
        "account-ada",
        &[
            ("Opened", r#"{"owner":"ada"}"#),
            ("Deposited", r#"{"amount":100}"#),
            ("Deposited", r#"{"amount":5}"#),
        ],
    )
    .await;
    append(store, "account-bob", &[("Opened", r#"{"owner":"bob"}"#)]).await;
    append(store, "transfer-1", &[("Started", r#"{"amount":7}"#)]).await;
}

async fn first_event(store: &impl EventStore, stream: &str) -> RecordedEvent {
    let stream = StreamId::new(stream).unwrap();
    let events = store.read_stream(&stream, StreamFrom::Start, Direction::Forward, Some(1));
    futures::pin_mut!(events);
    events.next().await.unwrap().unwrap()
}

#[tokio::test]
async fn streams_lists_counts_and_last_revisions_filtered_by_prefix() {
    let store = postgres("streams").await;
    seed(&store).await;
    let url = database_url();
    let schema = Some(store.schema());

    let all = stdout(&decider(&url, schema, &["streams"]));
    assert_eq!(
        all,
        "STREAM       EVENTS  LAST_REVISION\n\
         account-ada  3       2\n\
         account-bob  1       0\n\
         transfer-1   1       0\n"
    );
    let accounts = stdout(&decider(
        &url,
        schema,
        &["streams", "--prefix", "account-", "--limit", "1"],
    ));
    assert_eq!(
        accounts,
        "STREAM       EVENTS  LAST_REVISION\n\
         account-ada  3       2\n\
         (first 1 shown; raise --limit for more)\n"
    );
    let none = stdout(&decider(&url, schema, &["streams", "--prefix", "nobody-"]));
    assert_eq!(none, "no streams whose id starts with \"nobody-\"\n");
    store.drop_schema().await.unwrap();
}

#[tokio::test]
async fn read_prints_rows_or_json_lines() {
    let store = postgres("read").await;
    seed(&store).await;
    let url = database_url();
    let schema = Some(store.schema());

    let table = stdout(&decider(&url, schema, &["read", "account-ada"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert_eq!(
        lines[0],
        "STREAM\tREVISION\tPOSITION\tTYPE\tRECORDED_AT\tMETADATA\tPAYLOAD"
    );
    let second: Vec<&str> = lines[2].split('\t').collect();
    assert_eq!(second[0..2], ["account-ada", "1"]);
    assert_eq!(second[3], "Deposited");
    // PostgreSQL stores JSON as jsonb, which writes it back with its own spacing.
    assert_eq!(second[6], r#"{"amount": 100}"#);

    let json = stdout(&decider(&url, schema, &["read", "account-ada", "--json"]));
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["type"], "Deposited");
    assert_eq!(events[1]["payload"]["amount"], 100);
    assert_eq!(events[2]["revision"], 2);
    let first = first_event(&store, "account-ada").await;
    assert_eq!(events[0]["id"], first.id.to_string());
    assert_eq!(events[0]["position"], first.position.to_string());

    let missing = failure(&decider(&url, schema, &["read", "account-zed"]));
    assert!(
        missing.contains("stream account-zed has no events"),
        "{missing}"
    );
    store.drop_schema().await.unwrap();
}

#[tokio::test]
async fn tail_follows_the_log_with_filters_and_sees_new_events() {
    let store = postgres("tail").await;
    seed(&store).await;
    let url = database_url();
    let schema = Some(store.schema());

    // The whole log, filtered by type and by stream prefix.
    let opened = stdout(&decider(
        &url,
        schema,
        &[
            "tail", "--from", "start", "--type", "Opened", "--limit", "2",
        ],
    ));
    let streams: Vec<&str> = opened
        .lines()
        .skip(1)
        .map(|line| line.split('\t').next().unwrap())
        .collect();
    assert_eq!(streams, ["account-ada", "account-bob"]);
    let transfers = stdout(&decider(
        &url,
        schema,
        &[
            "tail",
            "--from",
            "start",
            "--stream-prefix",
            "transfer-",
            "--limit",
            "1",
            "--json",
        ],
    ));
    let transfer: serde_json::Value = serde_json::from_str(transfers.trim()).unwrap();
    assert_eq!(transfer["stream"], "transfer-1");

    // After a position: the next event is one appended while the tail runs.
    let head = store.head_position().await.unwrap().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_decider"))
        .env_remove("DECIDER_STORE")
        .args(["--store", &url, "--schema", store.schema()])
        .args(["tail", "--from", &head, "--limit", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("STREAM\t"));
    append(&store, "account-bob", &[("Deposited", r#"{"amount":9}"#)]).await;
    let reader = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap());
    let line = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("tail printed no new event within 30 s")
        .unwrap();
    assert!(line.starts_with("account-bob\t1\t"), "{line}");
    assert!(child.wait().unwrap().success());
    store.drop_schema().await.unwrap();
}

#[tokio::test]
async fn dead_letters_list_shows_what_a_projection_gave_up_on() {
    let store = postgres("dead").await;
    seed(&store).await;
    let url = database_url();
    let schema = Some(store.schema());

    let empty = stdout(&decider(
        &url,
        schema,
        &["dead-letters", "list", "balances"],
    ));
    assert_eq!(empty, "no dead letters for projection \"balances\"\n");
    let event = first_event(&store, "account-bob").await;
    store
        .dead_letters()
        .record(DeadLetter::new(
            "balances",
            &event,
            "owner is not a customer",
        ))
        .await
        .unwrap();
    let listed = stdout(&decider(
        &url,
        schema,
        &["dead-letters", "list", "balances"],
    ));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].starts_with("STREAM       REVISION  POSITION"),
        "{listed}"
    );
    assert!(lines[1].starts_with("account-bob  0"), "{listed}");
    assert!(lines[1].contains(&event.id.to_string()), "{listed}");
    assert!(lines[1].ends_with("owner is not a customer"), "{listed}");
    store.drop_schema().await.unwrap();
}

#[tokio::test]
async fn errors_say_what_to_do_and_exit_non_zero() {
    let unknown = failure(&decider("mysql://db/x", None, &["streams"]));
    assert!(unknown.contains("supported are postgres://"), "{unknown}");
    assert!(unknown.contains("sqlite://PATH"), "{unknown}");

    // Port 1 on loopback: nothing listens there.
    let down = failure(&decider(
        "postgres://postgres@127.0.0.1:1/test",
        None,
        &["streams"],
    ));
    assert!(down.contains("does not answer"), "{down}");
    assert!(down.contains("start PostgreSQL"), "{down}");

    let schema = format!("cli_never_{}", uuid::Uuid::new_v4().simple());
    let missing = failure(&decider(&database_url(), Some(&schema), &["streams"]));
    assert!(
        missing.contains(&format!(
            "no decider tables in schema \"{schema}\": is this the right --schema?"
        )),
        "{missing}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let url = format!("sqlite://{}", path.display());
    let no_file = failure(&decider(&url, None, &["streams"]));
    assert!(no_file.contains("no SQLite database at"), "{no_file}");
    assert!(
        !path.exists(),
        "the CLI created the file it was asked to inspect"
    );
}

#[tokio::test]
async fn sqlite_streams_read_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.db");
    let store = SqliteStore::open(&path).unwrap();
    seed(&store).await;
    let event = first_event(&store, "transfer-1").await;
    store
        .dead_letters()
        .record(DeadLetter::new("transfers", &event, "no such account"))
        .await
        .unwrap();
    let url = format!("sqlite://{}", path.display());

    let streams = stdout(&decider(&url, None, &["streams", "--prefix", "account-"]));
    assert_eq!(
        streams,
        "STREAM       EVENTS  LAST_REVISION\n\
         account-ada  3       2\n\
         account-bob  1       0\n"
    );
    let json = stdout(&decider(&url, None, &["read", "account-ada", "--json"]));
    let amounts: Vec<u64> = json
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter_map(|event| event["payload"]["amount"].as_u64())
        .collect();
    assert_eq!(amounts, [100, 5]);
    let tail = stdout(&decider(
        &url,
        None,
        &["tail", "--from", "start", "--limit", "5"],
    ));
    assert_eq!(tail.lines().count(), 6, "{tail}");
    let letters = stdout(&decider(&url, None, &["dead-letters", "list", "transfers"]));
    assert!(
        letters.lines().nth(1).unwrap().starts_with("transfer-1  0"),
        "{letters}"
    );
    assert!(letters.trim_end().ends_with("no such account"), "{letters}");
    let report = decider_core::projection::RunnerReport {
        projection: "transfers".to_owned(),
        runner: "host:1:1".to_owned(),
        state: ReportedState::Reconnecting,
        error: Some("disk I/O error".to_owned()),
        checkpoint: None,
        head: Some(event.position),
        lag: Some(5),
        events_per_second: 0.0,
        interval: Duration::from_secs(1),
        reported_at: std::time::SystemTime::now(),
    };
    store.control().report(&report).await.unwrap();
    let projections = stdout(&decider(&url, None, &["projections"]));
    let row: Vec<&str> = projections
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        (row[0], row[1], row[2], row[4], row[6]),
        ("transfers", "reconnecting", "-", "5", "1"),
        "{projections}"
    );
    assert!(
        projections.trim_end().ends_with("disk I/O error"),
        "{projections}"
    );
    let schema = failure(&decider(&url, Some("x"), &["streams"]));
    assert!(
        schema.contains("--schema applies to PostgreSQL"),
        "{schema}"
    );
}

/// A read model in memory that cannot handle `Started` events while `broken` is set, and
/// counts its resets.
#[derive(Default)]
struct Tally {
    handled: std::sync::Mutex<Vec<uuid::Uuid>>,
    broken: std::sync::atomic::AtomicBool,
    resets: std::sync::atomic::AtomicUsize,
}

impl EventHandler for Tally {
    async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
        let broken = self.broken.load(Ordering::SeqCst);
        if let Some(index) = batch
            .iter()
            .position(|e| broken && e.event_type == "Started")
        {
            return Err(SinkError::Poison {
                index,
                reason: "transfers are not understood yet".to_owned(),
            });
        }
        let mut handled = self.handled.lock().unwrap();
        for event in batch {
            if !handled.contains(&event.id) {
                handled.push(event.id);
            }
        }
        Ok(())
    }

    async fn reset(&self) -> Result<(), SinkError> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.handled.lock().unwrap().clear();
        Ok(())
    }
}

/// `decider` on a blocking thread, so that the runner of the test keeps running meanwhile.
async fn decider_beside(store: &PostgresStore, args: &[&str]) -> Output {
    let (schema, args): (String, Vec<String>) = (
        store.schema().to_owned(),
        args.iter().map(|a| (*a).to_owned()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        decider(&database_url(), Some(&schema), &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_rebuild_and_redrive_through_the_runner_holding_the_lease() {
    let store = postgres("control").await;
    seed(&store).await;
    let none = stdout(&decider_beside(&store, &["projections"]).await);
    assert!(none.starts_with("no projection has reported"), "{none}");

    let tally = Arc::new(Tally::default());
    tally.broken.store(true, Ordering::SeqCst);
    let runner = ProjectionRunner::new(
        store.clone(),
        Projection::new("tally"),
        CheckpointedSink::new(tally.clone(), store.checkpoints(), store.dead_letters()),
    )
    .with_options(RunnerOptions {
        poison: PoisonPolicy::DeadLetter,
        status_interval: Duration::from_millis(100),
        ..RunnerOptions::default()
    })
    .with_lease(store.leases().unwrap())
    .with_control(store.control());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        runner
            .run(async {
                stopped.await.ok();
            })
            .await
    });
    let control = store.control();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !control
            .reports()
            .await
            .unwrap()
            .iter()
            .any(|r| r.state == ReportedState::Live && r.lag == Some(0))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the runner did not report itself live");

    let listed = stdout(&decider_beside(&store, &["projections"]).await);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].starts_with("PROJECTION  STATE  CHECKPOINT  HEAD"),
        "{listed}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[4], row[6]),
        ("tally", "live", "0", "1"),
        "{listed}"
    );
    assert_eq!(row[2], row[3], "checkpoint at the head: {listed}");

    // Still broken: the letter stays, and the CLI says where to look.
    let again = stdout(&decider_beside(&store, &["dead-letters", "redrive", "tally"]).await);
    let lines: Vec<&str> = again.lines().collect();
    assert!(
        lines[0].starts_with("requested the re-drive of the dead letters of tally (request "),
        "{again}"
    );
    assert!(
        lines[1].starts_with("tally: 0 re-driven, 1 failed again; transfer-1 revision 0: "),
        "{again}"
    );
    assert_eq!(
        lines[2],
        "`decider dead-letters list tally` shows the letters left"
    );
    tally.broken.store(false, Ordering::SeqCst);
    let fixed = stdout(&decider_beside(&store, &["dead-letters", "redrive", "tally"]).await);
    assert!(
        fixed
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("tally: 1 re-driven, 0 failed again (by "),
        "{fixed}"
    );
    assert!(store.dead_letters().list("tally").await.unwrap().is_empty());
    assert_eq!(tally.handled.lock().unwrap().len(), 5);

    let rebuilt = stdout(&decider_beside(&store, &["rebuild", "tally"]).await);
    let lines: Vec<&str> = rebuilt.lines().collect();
    assert!(
        lines[0].starts_with("requested the rebuild of tally (request "),
        "{rebuilt}"
    );
    assert!(
        lines[1].starts_with(
            "tally: read model emptied and checkpoint forgotten; replaying the log (by "
        ),
        "{rebuilt}"
    );
    let head = store.head_position().await.unwrap().unwrap();
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(&format!("tally rebuilt: caught up at {head} in ")),
        "{rebuilt}"
    );
    assert_eq!(tally.resets.load(Ordering::SeqCst), 1);
    assert_eq!(
        tally.handled.lock().unwrap().len(),
        5,
        "replayed, every event once"
    );

    let queued = stdout(&decider_beside(&store, &["rebuild", "tally", "--no-wait"]).await);
    assert_eq!(queued.lines().count(), 1, "{queued}");
    let unknown = failure(&decider_beside(&store, &["rebuild", "talley"]).await);
    assert!(
        unknown.contains("no runner of projection \"talley\" has ever reported to this store; those that have: tally"),
        "{unknown}"
    );

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let listed = stdout(&decider_beside(&store, &["projections"]).await);
    assert!(
        listed
            .lines()
            .nth(1)
            .unwrap()
            .contains("not running (last: stopped)"),
        "{listed}"
    );
    let later = stdout(&decider_beside(&store, &["rebuild", "tally"]).await);
    assert!(
        later
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("no runner of tally is running (last report "),
        "{later}"
    );
    store.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_switch_show_and_set_the_version_readers_read() {
    use decider_core::projection::ProjectionControl;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.db");
    let store = SqliteStore::open(&path).unwrap();
    let url = format!("sqlite://{}", path.display());
    assert_eq!(
        stdout(&decider(&url, None, &["version", "balances"])),
        "balances: version 1 (no switch yet; readers read the projection named balances)\n"
    );
    // A rebuild switched to version 2 (as `BlueGreen::switch_when_caught_up` does).
    assert!(
        store
            .control()
            .switch_version("balances", None, "v2")
            .await
            .unwrap()
    );
    assert_eq!(
        stdout(&decider(&url, None, &["version", "balances"])),
        "balances: version 2\n"
    );
    assert_eq!(
        stdout(&decider(&url, None, &["switch", "balances", "1"])),
        "balances: readers switched from version 2 to 1\n"
    );
    assert_eq!(
        store
            .control()
            .active_version("balances")
            .await
            .unwrap()
            .as_deref(),
        Some("v1")
    );
    assert_eq!(
        stdout(&decider(&url, None, &["switch", "balances", "1"])),
        "balances: version 1 is active already\n"
    );
    assert!(
        failure(&decider(&url, None, &["switch", "balances", "0"])).contains("versions start at 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_projection_is_not_rebuilt_partition_by_partition() {
    use decider_core::projection::{ClaimOptions, PartitionedRunner};

    let store = postgres("partitioned").await;
    seed(&store).await;
    let tally = Arc::new(Tally::default());
    let runner = PartitionedRunner::new(
        store.clone(),
        Projection::new("parts"),
        2,
        CheckpointedSink::new(tally.clone(), store.checkpoints(), store.dead_letters()),
    )
    .unwrap()
    .with_options(RunnerOptions {
        status_interval: Duration::from_millis(100),
        ..RunnerOptions::default()
    })
    .with_claims(ClaimOptions {
        limit: 2,
        claim_interval: Duration::from_millis(50),
    })
    .with_lease(store.leases().unwrap())
    .with_control(store.control());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        runner
            .run(async {
                stopped.await.ok();
            })
            .await
    });
    let control = store.control();
    tokio::time::timeout(Duration::from_secs(30), async {
        while control
            .reports()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.state == ReportedState::Live)
            .count()
            < 2
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("both partitions did not report themselves live");
    for name in ["parts", "parts[1/2]"] {
        let refused = failure(&decider_beside(&store, &["rebuild", name]).await);
        assert!(
            refused.contains("parts runs as partitions (parts[0/2], parts[1/2])")
                && refused.contains("a partition cannot be rebuilt alone"),
            "{name}: {refused}"
        );
    }
    assert_eq!(tally.resets.load(Ordering::SeqCst), 0, "nothing was reset");
    assert!(
        control.pending("parts[1/2]").await.unwrap().is_empty(),
        "no request was stored"
    );
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    store.drop_schema().await.unwrap();
}
