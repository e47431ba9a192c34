//! A blue/green rebuild of the accounts read model while traffic runs, on PostgreSQL and on
//! SQLite: a `banking serve` process of version 1 serves transfers and reads; a second process
//! on the same database starts with
//! `--accounts-version 2`, builds version 2 into its own tables beside the live ones, switches
//! readers to it once it has caught up, and drops version 1's tables. Readers of both processes
//! read all along: every answer's balance agrees with its ledger, and no reader ever goes back
//! from version 2 to version 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use decider_core::{Direction, EventStore, StreamFrom, StreamId};
use decider_store_postgres::{PostgresOptions, PostgresStore};
use decider_store_sqlite::SqliteStore;
use futures::TryStreamExt;
use serde_json::{Value, json};
use support::scenario::wait_for_transfer;
use support::{Server, TempDb, pg};

const ACCOUNTS: usize = 6;
const START: i64 = 100_000;

/// What one reader saw: reads per version, and the problems (none expected).
#[derive(Debug, Default)]
struct Seen {
    reads: BTreeMap<u64, usize>,
    problems: Vec<String>,
}

/// Checks one ledger answer: its balance is its last line's and the sum of its lines, its
/// lines are in revision order, once each.
fn check(answer: &(u16, Value)) -> Result<u64, String> {
    let (status, body) = answer;
    if *status != 200 {
        return Err(format!("answer {status}: {body}"));
    }
    let entries = body["entries"].as_array().unwrap();
    let balance = body["balance"].as_i64().unwrap();
    let sum: i64 = entries.iter().map(|e| e["amount"].as_i64().unwrap()).sum();
    let last = entries.last().map_or(0, |e| e["balance"].as_i64().unwrap());
    let revisions: Vec<u64> = entries
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    if sum != balance || last != balance {
        return Err(format!(
            "balance {balance}, ledger sum {sum}, last line {last}: {body}"
        ));
    }
    if revisions.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(format!("ledger lines out of order or twice: {revisions:?}"));
    }
    Ok(body["read_model"].as_u64().unwrap())
}

/// Reads ledgers from `server` until `stop`, round the accounts.
async fn read_until(
    server: Arc<Server>,
    accounts: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut newest = 0;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let id = &accounts[n % accounts.len()];
        n += 1;
        match check(&server.get(&format!("/accounts/{id}/ledger")).await) {
            Ok(version) => {
                if version < newest {
                    seen.problems
                        .push(format!("read version {version} after version {newest}"));
                }
                newest = newest.max(version);
                *seen.reads.entry(version).or_default() += 1;
            }
            Err(problem) => seen.problems.push(problem),
        }
    }
    seen
}

/// The database both processes serve, seen from the test.
trait Database: EventStore {
    /// Whether the table named exists.
    async fn has_table(&self, table: &str) -> bool;
}

impl Database for PostgresStore {
    async fn has_table(&self, table: &str) -> bool {
        let client = self.pool().get().await.unwrap();
        let row = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{}.{table}", self.schema())],
            )
            .await
            .unwrap();
        row.get(0)
    }
}

impl Database for SqliteStore {
    async fn has_table(&self, table: &str) -> bool {
        let table = table.to_owned();
        self.read(move |connection| {
            connection
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [&table],
                    |row| row.get::<_, i64>(0),
                )
                .map_err(decider_store_sqlite::store_error)
        })
        .await
        .unwrap()
            == 1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_into_version_2_under_traffic_on_postgres_never_shows_a_half_built_read_model() {
    let store = pg::unmigrated_store(PostgresOptions::default()).await;
    let url = pg::database_url();
    let summary =
        rebuild_under_traffic(&store, &["--store", &url, "--schema", store.schema()]).await;
    eprintln!("PostgreSQL: {summary}");
    pg::drop_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_into_version_2_under_traffic_on_sqlite_never_shows_a_half_built_read_model() {
    let file = TempDb::new();
    let url = file.url();
    let store = SqliteStore::connect(&url).unwrap();
    let summary = rebuild_under_traffic(&store, &["--store", &url]).await;
    eprintln!("SQLite: {summary}");
    drop(store);
}

/// Serves `store` (named by `store_args`) from a process of version 1, with traffic and
/// readers; starts a process of version 2 beside it; checks every read, the switch, the drop
/// of version 1, and the balances at the end. Returns what happened, for the log.
async fn rebuild_under_traffic(store: &impl Database, store_args: &[&str]) -> String {
    let mut blue_args = store_args.to_vec();
    blue_args.extend(["--accounts-partitions", "2"]);
    let blue = Arc::new(Server::spawn(&blue_args));

    let mut accounts = Vec::new();
    for n in 0..ACCOUNTS {
        let opened = blue
            .post(
                "/accounts",
                json!({ "owner": format!("owner {n}"), "currency": "EUR" }),
                Some(&format!("open-{n}")),
            )
            .await;
        assert_eq!(opened.0, 201, "{opened:?}");
        let id = opened.1["id"].as_str().unwrap().to_owned();
        let deposit = blue
            .post(
                &format!("/accounts/{id}/deposits"),
                json!({ "amount": START }),
                Some(&format!("deposit-{n}")),
            )
            .await;
        assert_eq!(deposit.0, 201, "{deposit:?}");
        // Readers start once the read model has every account.
        let seen = blue
            .get(&format!(
                "/accounts/{id}/ledger?after={}&wait_ms=20000",
                deposit.1["position"].as_str().unwrap()
            ))
            .await;
        assert_eq!(seen.0, 200, "{seen:?}");
        accounts.push(id);
    }
    let accounts = Arc::new(accounts);

    // Traffic all along: transfers round the accounts, through the first process.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (server, accounts, stop) = (blue.clone(), accounts.clone(), stop.clone());
        tokio::spawn(async move {
            let mut transfers = Vec::new();
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                let from = &accounts[round % ACCOUNTS];
                let to = &accounts[(round + 1 + round / ACCOUNTS) % ACCOUNTS];
                round += 1;
                if from == to {
                    continue;
                }
                let requested = server
                    .post(
                        "/transfers",
                        json!({ "from": from, "to": to, "amount": 1 + round % 50, "currency": "EUR" }),
                        Some(&format!("transfer-{round}")),
                    )
                    .await;
                assert_eq!(requested.0, 202, "{requested:?}");
                transfers.push(requested.1["id"].as_str().unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            transfers
        })
    };
    let mut readers = vec![tokio::spawn(read_until(
        blue.clone(),
        accounts.clone(),
        stop.clone(),
    ))];
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The second process builds version 2 beside version 1, then switches.
    // Version 2 with another partition count: it builds version 1 with version 1's count (2,
    // as recorded), its own with 3; after the switch the first process waits on version 2's
    // partitions by version 2's count.
    let mut green_args = store_args.to_vec();
    green_args.extend(["--accounts-version", "2", "--accounts-partitions", "3"]);
    let started = Instant::now();
    let green = Arc::new(Server::spawn(&green_args));
    readers.push(tokio::spawn(read_until(
        green.clone(),
        accounts.clone(),
        stop.clone(),
    )));
    let switched = loop {
        let both = [&blue, &green].map(|server| {
            let id = &accounts[0];
            let server = server.clone();
            let path = format!("/accounts/{id}/ledger");
            async move { check(&server.get(&path).await) }
        });
        let versions = futures::future::join_all(both).await;
        if versions.iter().all(|version| version == &Ok(2)) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not switched: {versions:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The old version's tables go after the grace period for reads in flight.
    let dropped = loop {
        if !store.has_table("banking_accounts").await && !store.has_table("banking_ledger").await {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "version 1 not dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(store.has_table("banking_accounts_v2").await);
    // A process of version 2 with yet another count is refused at start: its partitions and
    // the others' would each project every event.
    let wrong: Vec<String> = ["serve", "--listen", "127.0.0.1:0"]
        .iter()
        .chain(store_args)
        .chain(&["--accounts-version", "2", "--accounts-partitions", "4"])
        .map(|arg| (*arg).to_owned())
        .collect();
    let refused = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_banking"))
            .args(&wrong)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("runs as 3 partitions, not 4"),
        "{stderr}"
    );
    // Traffic and reads go on a while on version 2 alone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let transfers = traffic.await.unwrap();
    let mut seen = Vec::new();
    for reader in readers {
        seen.push(reader.await.unwrap());
    }
    for (n, reader) in seen.iter().enumerate() {
        assert!(
            reader.problems.is_empty(),
            "reader {n}: {:?}",
            &reader.problems[..reader.problems.len().min(5)]
        );
    }
    assert!(
        seen[0].reads.get(&1).is_some_and(|&n| n > 0)
            && seen[0].reads.get(&2).is_some_and(|&n| n > 0),
        "the first process's reader read both versions: {:?}",
        seen[0].reads
    );

    // Every transfer finishes; each account, read after its last event from version 2.
    let mut completed = 0;
    for id in &transfers {
        let answer = wait_for_transfer(&green, id).await;
        let status = answer.1["status"].as_str().unwrap().to_owned();
        assert!(
            ["completed", "failed"].contains(&status.as_str()),
            "transfer {id} stuck: {answer:?}"
        );
        completed += usize::from(status == "completed");
    }
    let mut total = 0;
    for id in accounts.iter() {
        let stream = StreamId::new(format!("account-{id}")).unwrap();
        let last: Vec<_> = store
            .read_stream(&stream, StreamFrom::End, Direction::Backward, Some(1))
            .try_collect()
            .await
            .unwrap();
        for server in [&blue, &green] {
            let answer = server
                .get(&format!(
                    "/accounts/{id}/ledger?after={}&wait_ms=20000",
                    last[0].position
                ))
                .await;
            assert_eq!(check(&answer), Ok(2), "{answer:?}");
            assert_eq!(answer.1["version"], last[0].revision);
            if server.url("") == green.url("") {
                total += answer.1["balance"].as_i64().unwrap();
            }
        }
    }
    assert_eq!(
        total,
        START * ACCOUNTS as i64,
        "money moved, never made or lost"
    );
    let summary = format!(
        "blue/green under traffic: {} transfers ({completed} completed); version 2 started at 0 s, \
         readers switched after {:.1} s, version 1's tables dropped after {:.1} s; reads by version: \
         process 1 {:?}, process 2 {:?}; every read's balance equals its ledger, no reader went back",
        transfers.len(),
        switched.as_secs_f64(),
        dropped.as_secs_f64(),
        seen[0].reads,
        seen[1].reads,
    );
    for server in [blue, green] {
        Arc::into_inner(server).unwrap().shutdown().await;
    }
    summary
}
