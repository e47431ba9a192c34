//! The command and append metrics, read from a recorder of the test's own (a thread-local one,
//! so no other test's commands are counted): outcomes, conflicts, retries and the store's label.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use decider_core::{CommandError, CommandHandler};
use decider_store_memory::MemoryStore;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::{Account, Command, stream};

/// Every metric recorded, with its labels in name order. Taken once: a snapshot drains the
/// recorder.
type Samples = Vec<(String, Vec<(String, String)>, DebugValue)>;

fn samples(snapshotter: &Snapshotter) -> Samples {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<_> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort_unstable();
            (key.name().to_owned(), labels, value)
        })
        .collect()
}

fn find<'a>(samples: &'a Samples, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    let mut wanted: Vec<_> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    wanted.sort_unstable();
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == wanted)
        .map(|(_, _, value)| value)
}

/// The value of the counter `name` whose labels are exactly `labels`; `0` if never recorded.
fn counter(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(samples, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        _ => 0,
    }
}

/// How many observations the histogram `name` with exactly `labels` holds.
fn observations(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> usize {
    match find(samples, name, labels) {
        Some(DebugValue::Histogram(values)) => values.len(),
        _ => 0,
    }
}

#[test]
fn commands_count_their_outcomes_conflicts_and_retries_and_appends_their_events() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = MemoryStore::new();
            // A cached handler, and another writer that makes its cached state stale.
            let accounts = CommandHandler::new(Account, store.clone())
                .with_cache(10)
                .with_name("accounts");
            let other = CommandHandler::new(Account, store.clone());
            assert_eq!(other.name(), "Account");
            let s = stream();
            accounts.handle(&s, Command::OpenWith(10)).await.unwrap();
            other.handle(&s, Command::Deposit(5)).await.unwrap();
            // Decided on the cached balance, refused by the store, decided again on the fresh one.
            accounts.handle(&s, Command::Deposit(1)).await.unwrap();
            let refused = accounts.handle(&s, Command::Withdraw(100)).await;
            assert!(
                matches!(refused, Err(CommandError::Rejected(_))),
                "{refused:?}"
            );
        });
    });

    let recorded = samples(&snapshotter);
    let commands = "decider_commands_total";
    let ok = [("decider", "accounts"), ("outcome", "ok")];
    assert_eq!(counter(&recorded, commands, &ok), 2);
    assert_eq!(
        counter(
            &recorded,
            commands,
            &[("decider", "accounts"), ("outcome", "rejected")]
        ),
        1
    );
    assert_eq!(
        counter(
            &recorded,
            commands,
            &[("decider", "Account"), ("outcome", "ok")]
        ),
        1
    );
    assert_eq!(
        observations(&recorded, "decider_command_duration_seconds", &ok),
        2
    );
    assert_eq!(
        counter(
            &recorded,
            "decider_command_conflicts_total",
            &[("decider", "accounts")]
        ),
        1
    );
    assert_eq!(
        counter(
            &recorded,
            "decider_command_retries_total",
            &[("decider", "accounts"), ("reason", "conflict")]
        ),
        1
    );

    // Three appends written (two events, one, one), one refused for its expected version.
    let appends = "decider_appends_total";
    assert_eq!(
        counter(
            &recorded,
            appends,
            &[("store", "memory"), ("outcome", "ok")]
        ),
        3
    );
    assert_eq!(
        counter(
            &recorded,
            appends,
            &[("store", "memory"), ("outcome", "conflict")]
        ),
        1
    );
    assert_eq!(
        counter(
            &recorded,
            "decider_appended_events_total",
            &[("store", "memory")]
        ),
        4
    );
    assert_eq!(
        observations(
            &recorded,
            "decider_append_duration_seconds",
            &[("store", "memory")]
        ),
        4
    );
}
