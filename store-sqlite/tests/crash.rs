//! A process killed with SIGKILL in the middle of a stream of appends loses nothing it was told
//! is written, and leaves no part of a batch; the lease it held is taken by the next process at
//! once, without waiting for it to expire.
//!
//! The tests re-run their own binary as the child (the ignored tests `crash_child` and
//! `lease_child`, selected by name): the first appends batches one by one and prints each
//! acknowledged revision, the parent kills it after a few acknowledgements and checks the file;
//! the second takes a lease, says so, and waits to be killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use decider_core::projection::Lease;
use decider_core::{EventData, EventStore, ExpectedVersion, StreamId, SubscriptionMessage};
use decider_store_sqlite::SqliteStore;
use futures::StreamExt;
use futures::TryStreamExt;
use support::{TempDatabase, remove_database};

const CHILD_PATH: &str = "DECIDER_SQLITE_CRASH_CHILD_DB";
const CHILD_PAUSE: &str = "DECIDER_SQLITE_CRASH_CHILD_PAUSE_MS";
const BATCH: u64 = 5;
const LEASE_CHILD_DB: &str = "DECIDER_SQLITE_LEASE_CHILD_DB";

/// Far longer than the test waits: a lease taken in time was not taken by its expiry.
const LEASE_EXPIRY: Duration = Duration::from_secs(120);

fn stream() -> StreamId {
    StreamId::new("crash-1").unwrap()
}

/// The child: appends batches of [`BATCH`] events until killed, printing `acked N` (the stream's
/// new length) after each append returns. Does nothing unless run by the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of appends_acknowledged_before_a_sigkill_survive_it_whole"]
async fn crash_child() {
    let Ok(path) = std::env::var(CHILD_PATH) else {
        return;
    };
    let pause = std::env::var(CHILD_PAUSE)
        .ok()
        .map(|ms| Duration::from_millis(ms.parse().unwrap()));
    let store = SqliteStore::open(&path).unwrap();
    let mut stdout = std::io::stdout();
    let mut length = 0u64;
    for batch in 0u64.. {
        let events = (0..BATCH)
            .map(|i| EventData::json("Appended", format!("{{\"batch\":{batch},\"index\":{i}}}")))
            .collect();
        let result = store
            .append(
                &stream(),
                ExpectedVersion::from_last_revision(length.checked_sub(1)),
                events,
            )
            .await
            .unwrap();
        length = result.next_revision;
        writeln!(stdout, "acked {length}").unwrap();
        stdout.flush().unwrap();
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_acknowledged_before_a_sigkill_survive_it_whole() {
    let database = TempDatabase::new("crash");
    let path = database.path().to_owned();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_PATH, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = 0u64;
    let mut acks = 0;
    while acks < 40 {
        let line = lines.next().expect("the child ended early").unwrap();
        if let Some(length) = line.strip_prefix("acked ") {
            acked = length.parse().unwrap();
            acks += 1;
        }
    }
    // Child::kill sends SIGKILL: no destructor, no flush, no checkpoint runs in the child.
    child.kill().unwrap();
    child.wait().unwrap();

    let store = SqliteStore::open(&path).unwrap();
    let events: Vec<_> = store
        .read_whole_stream(&stream())
        .try_collect()
        .await
        .unwrap();
    let length = events.len() as u64;
    assert!(
        length >= acked,
        "acknowledged {acked} events, found {length}"
    );
    // The child has at most one append in flight: it may have committed without its ack read.
    assert!(
        length <= acked + 2 * BATCH,
        "found {length} events, more than the child could have written after {acked}"
    );
    assert_eq!(
        length % BATCH,
        0,
        "a batch was written in part: {length} events"
    );
    for (revision, event) in events.iter().enumerate() {
        assert_eq!(event.revision, revision as u64, "a gap in the revisions");
        let payload: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        let revision = revision as u64;
        assert_eq!(payload["batch"], revision / BATCH);
        assert_eq!(payload["index"], revision % BATCH);
    }
    drop(store);
    remove_database(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_another_process_append_within_a_fraction_of_a_second() {
    let database = TempDatabase::new("live");
    let path = database.path().to_owned();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_PATH, &path)
        // Slow enough that the subscriber waits between appends and must be woken.
        .env(CHILD_PAUSE, "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Each acknowledgement, with when the parent read it, from a thread of its own.
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(length) = line.strip_prefix("acked ") {
                let length: u64 = length.parse().unwrap();
                if acks.send((length, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    // The child has created the file once it acknowledged its first append.
    let (first, _) = acked.recv().await.expect("the child ended early");
    let store = SqliteStore::open(&path).unwrap();
    // The subscriber pulls all the time, in a task of its own, so that it is waiting (idle)
    // when each append commits, and records when each append's last event reached it.
    let delivered = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let follower = tokio::spawn({
        let mut subscription = Box::pin(store.subscribe_stream(&stream(), Some(first - 1)));
        let delivered = delivered.clone();
        async move {
            while let Some(message) = subscription.next().await {
                if let SubscriptionMessage::Event(event) = message.unwrap() {
                    delivered
                        .lock()
                        .unwrap()
                        .insert(event.revision + 1, Instant::now());
                }
            }
        }
    });
    let mut acks = Vec::new();
    while acks.len() < 10 {
        acks.push(acked.recv().await.expect("the child ended early"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    follower.abort();
    let delivered = delivered.lock().unwrap().clone();
    let mut worst = Duration::ZERO;
    for (length, at) in acks {
        let reached = delivered
            .get(&length)
            .unwrap_or_else(|| panic!("the append up to {length} never reached the subscriber"));
        // Delivered before the parent read the ack counts as no delay.
        worst = worst.max(reached.saturating_duration_since(at));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The watcher looks every 50 ms; the safety poll alone would take up to a second.
    assert!(
        worst < Duration::from_millis(300),
        "another process's append took {worst:?} to reach a live subscriber"
    );
    drop(store);
}

/// The lease child: takes the lease of projection `counts` (expiring after [`LEASE_EXPIRY`]),
/// prints `held`, and waits to be killed. Does nothing unless run by the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_lease_held_by_a_process_killed_with_sigkill_is_taken_at_once"]
async fn lease_child() {
    let Ok(path) = std::env::var(LEASE_CHILD_DB) else {
        return;
    };
    let store = SqliteStore::open(&path).unwrap();
    let leases = store
        .leases()
        .with_timing(Duration::from_millis(100), LEASE_EXPIRY);
    let _guard = leases.acquire("counts").await.unwrap();
    println!("held");
    tokio::time::sleep(LEASE_EXPIRY * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_a_process_killed_with_sigkill_is_taken_at_once() {
    let database = TempDatabase::new("lease-kill");
    let path = database.path().to_owned();
    drop(SqliteStore::open(&path).unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["lease_child", "--exact", "--ignored", "--nocapture"])
        .env(LEASE_CHILD_DB, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while lines.next().expect("the child ended early").unwrap() != "held" {}

    let store = SqliteStore::open(&path).unwrap();
    let leases = store
        .leases()
        .with_timing(Duration::from_millis(100), LEASE_EXPIRY);
    // While the holder lives its lease is not taken.
    let waiting = tokio::time::timeout(Duration::from_millis(500), leases.acquire("counts")).await;
    assert!(waiting.is_err(), "a live holder's lease was taken");

    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    let guard = tokio::time::timeout(Duration::from_secs(10), leases.acquire("counts"))
        .await
        .expect("the dead holder's lease was not taken within 10 s")
        .unwrap();
    assert!(!guard.is_lost());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(guard);
    drop(store);
}
