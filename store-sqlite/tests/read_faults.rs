//! A live subscription rides over a read fault that passes and ends on one that lasts. The
//! fault is real: the process runs out of file descriptors (its limit lowered from outside with
//! `prlimit`), so that the store cannot open the read connection the next page needs.
//!
//! One test in a file of its own: the limit is the whole process's, and `cargo test` runs the
//! tests of one file as threads of one process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use decider_core::{
    EventData, EventFilter, EventStore, ExpectedVersion, StoreError, StreamId, SubscriptionMessage,
};
use decider_store_sqlite::{SqliteOptions, SqliteStore};
use futures::StreamExt;
use support::TempDatabase;

/// The soft limit of open files of this process now.
fn open_file_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn prlimit(soft: u64) -> Command {
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={soft}:"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Leaves this process no file descriptor to open for `lasting`, then gives its limit back.
/// The limit is lowered and raised by `prlimit` processes (this process could not start one
/// while it has no descriptor left): the one that raises it is started first, and raises it
/// even if the test fails meanwhile.
fn run_out_of_file_descriptors(lasting: Duration) -> std::process::Child {
    let limit = open_file_limit();
    let raise = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sleep {}; prlimit --pid={} --nofile={limit}:",
            lasting.as_secs_f64(),
            std::process::id()
        ))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // The next descriptor opened gets the lowest free number: as the limit, it admits none.
    let lowest_free = std::fs::File::open("/dev/null").unwrap().as_raw_fd();
    assert!(prlimit(lowest_free as u64).status().unwrap().success());
    assert!(
        std::fs::File::open("/dev/null").is_err(),
        "the fault did not take"
    );
    raise
}

/// Takes the store's one pooled read connection until the returned sender is dropped, so that
/// the subscription's next page has to open a connection of its own.
async fn hold_the_pooled_reader(store: &SqliteStore) -> std::sync::mpsc::Sender<()> {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, holding) = tokio::sync::oneshot::channel();
    let store = store.clone();
    tokio::spawn(async move {
        store
            .read(move |_| {
                let _ = held.send(());
                let _ = released.recv();
                Ok(())
            })
            .await
            .unwrap();
    });
    holding.await.unwrap();
    release
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_subscription_rides_over_a_passing_read_fault_and_ends_on_one_that_lasts() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("this test needs prlimit (util-linux) to cause its fault");
    }
    let database = TempDatabase::new("read-faults");
    let options = SqliteOptions {
        readers: 1,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(database.path(), options).unwrap();
    let stream = StreamId::new("faults-1").unwrap();
    let append = |revision: u64| {
        let (store, stream) = (store.clone(), stream.clone());
        async move {
            let expected = ExpectedVersion::from_last_revision(revision.checked_sub(1));
            let event = EventData::json("Happened", "{}");
            store.append(&stream, expected, vec![event]).await.unwrap();
        }
    };
    append(0).await;
    let mut subscription = Box::pin(store.subscribe_all(None, &EventFilter::all()));
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("the subscription answers within 10 s")
    };
    assert!(matches!(
        next().await,
        Some(Ok(SubscriptionMessage::Event(_)))
    ));
    assert!(matches!(
        next().await,
        Some(Ok(SubscriptionMessage::CaughtUp))
    ));

    // A fault shorter than the retries: the event arrives once the fault has passed.
    let release = hold_the_pooled_reader(&store).await;
    let fault = Duration::from_millis(300);
    let started = Instant::now();
    let mut raise = run_out_of_file_descriptors(fault);
    append(1).await;
    match next().await {
        Some(Ok(SubscriptionMessage::Event(event))) => assert_eq!(event.revision, 1),
        other => panic!("the subscription did not ride over the fault: {other:?}"),
    }
    assert!(
        started.elapsed() >= fault,
        "the event came before the fault passed: no query failed"
    );
    raise.wait().unwrap();

    // A fault longer than the retries (50 + 200 + 800 ms): the subscription ends with it. (The
    // connection the subscription opened is pooled now: held too.)
    let release_too = hold_the_pooled_reader(&store).await;
    let started = Instant::now();
    let mut raise = run_out_of_file_descriptors(Duration::from_millis(2_500));
    append(2).await;
    match next().await {
        Some(Err(StoreError::Unavailable { message, .. })) => {
            assert!(message.contains("read connection"), "{message}");
        }
        other => panic!("a lasting fault did not end the subscription: {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1_050),
        "the subscription gave up before its retries were spent"
    );
    assert!(
        next().await.is_none(),
        "the subscription went on after its error"
    );
    raise.wait().unwrap();
    drop((release, release_too));
}
