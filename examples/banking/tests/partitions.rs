//! Three `banking serve` processes on one PostgreSQL schema share the accounts read model as
//! four partitions. One is killed (SIGKILL) while transfers are in flight; the others take its
//! partitions (and its leases) over: every transfer finishes, every ledger agrees with its
//! balance, and no event is projected twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use decider_core::projection::ProjectionControl;
use decider_core::{Direction, EventStore, StreamFrom, StreamId};
use decider_store_postgres::PostgresOptions;
use futures::TryStreamExt;
use serde_json::json;
use support::scenario::wait_for_transfer;
use support::{Server, pg};

const ACCOUNTS: usize = 8;
const START: i64 = 100_000;

/// Which runner (`host:pid:n`'s pid) holds each partition now, from the control plane's
/// current reports.
async fn holders(control: &impl ProjectionControl) -> BTreeMap<String, String> {
    let now = std::time::SystemTime::now();
    control
        .reports()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.projection.starts_with("banking-accounts[") && r.is_current(now))
        .filter(|r| r.state.is_active())
        .map(|r| {
            let pid = r.runner.split(':').nth(1).unwrap_or("?").to_owned();
            (r.projection, pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_share_four_partitions_and_survive_one_killed_mid_traffic() {
    let store = pg::unmigrated_store(PostgresOptions::default()).await;
    let url = pg::database_url();
    let args = [
        "--store",
        &url,
        "--schema",
        store.schema(),
        "--accounts-partitions",
        "4",
    ];
    let mut servers: Vec<Option<Server>> = (0..3).map(|_| Some(Server::spawn(&args))).collect();

    let mut accounts = Vec::new();
    for n in 0..ACCOUNTS {
        let opened = servers[0]
            .as_ref()
            .unwrap()
            .post(
                "/accounts",
                json!({ "owner": format!("owner {n}"), "currency": "EUR" }),
                Some(&format!("open-{n}")),
            )
            .await;
        assert_eq!(opened.0, 201, "{opened:?}");
        let id = opened.1["id"].as_str().unwrap().to_owned();
        let deposit = servers[0]
            .as_ref()
            .unwrap()
            .post(
                &format!("/accounts/{id}/deposits"),
                json!({ "amount": START }),
                Some(&format!("deposit-{n}")),
            )
            .await;
        assert_eq!(deposit.0, 201, "{deposit:?}");
        accounts.push(id);
    }
    // Let every process claim its share.
    let control = store.control();
    let mut before = BTreeMap::new();
    for _ in 0..100 {
        before = holders(&control).await;
        if before.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(before.len(), 4, "every partition held: {before:?}");

    let mut transfers = Vec::new();
    for round in 0..60 {
        if round == 20 {
            // Mid-traffic: transfers requested and not yet finished, some on this process.
            servers[2].take().unwrap().shutdown().await; // SIGKILL
        }
        let alive: Vec<&Server> = servers.iter().flatten().collect();
        let server = alive[round % alive.len()];
        let (from, to) = (
            &accounts[round % ACCOUNTS],
            &accounts[(round * 3 + 1) % ACCOUNTS],
        );
        if from == to {
            continue;
        }
        let requested = server
            .post(
                "/transfers",
                json!({ "from": from, "to": to, "amount": 100 + round, "currency": "EUR" }),
                Some(&format!("transfer-{round}")),
            )
            .await;
        assert_eq!(requested.0, 202, "{requested:?}");
        transfers.push(requested.1["id"].as_str().unwrap().to_owned());
    }
    let survivor = servers[0].as_ref().unwrap();
    let mut completed = 0;
    for id in &transfers {
        let answer = wait_for_transfer(survivor, id).await;
        let status = answer.1["status"].as_str().unwrap().to_owned();
        assert!(
            ["completed", "failed"].contains(&status.as_str()),
            "transfer {id} stuck: {answer:?}"
        );
        completed += usize::from(status == "completed");
    }

    // Every account, read after its last event: balance = ledger, once each.
    let mut total = 0;
    let mut events = 0;
    for id in &accounts {
        let stream = StreamId::new(format!("account-{id}")).unwrap();
        let last: Vec<_> = store
            .read_stream(&stream, StreamFrom::End, Direction::Backward, Some(1))
            .try_collect()
            .await
            .unwrap();
        let last = &last[0];
        events += last.revision + 1;
        let view = survivor
            .get(&format!(
                "/accounts/{id}?after={}&wait_ms=20000",
                last.position
            ))
            .await;
        assert_eq!(view.0, 200, "{view:?}");
        assert_eq!(
            view.1["version"], last.revision,
            "the view reached the stream's last event"
        );
        let ledger = survivor.get(&format!("/accounts/{id}/ledger")).await;
        let entries = ledger.1["entries"].as_array().unwrap();
        let revisions: BTreeSet<u64> = entries
            .iter()
            .map(|e| e["revision"].as_u64().unwrap())
            .collect();
        assert_eq!(
            revisions.len(),
            entries.len(),
            "a ledger line twice: {entries:?}"
        );
        let sum: i64 = entries.iter().map(|e| e["amount"].as_i64().unwrap()).sum();
        let balance = view.1["balance"].as_i64().unwrap();
        assert_eq!(sum, balance, "ledger and balance of {id}");
        assert_eq!(
            entries.last().unwrap()["balance"].as_i64().unwrap(),
            balance
        );
        total += balance;
    }
    assert_eq!(
        total,
        START * ACCOUNTS as i64,
        "transfers move money, never make or lose it"
    );
    // The killed process's last reports go stale within a few seconds; then only the two
    // survivors hold the four partitions.
    let mut after = BTreeMap::new();
    for _ in 0..150 {
        after = holders(&control).await;
        let processes: BTreeSet<&String> = after.values().collect();
        if after.len() == 4 && processes.len() <= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let processes: BTreeSet<&String> = after.values().collect();
    assert!(
        after.len() == 4 && processes.len() <= 2,
        "the survivors hold every partition after the kill: {after:?}"
    );
    eprintln!(
        "3 processes, 4 partitions; holders before the kill {before:?}, after {after:?}; \
         {} transfers ({completed} completed), {events} account events; every ledger equals its balance, no line twice",
        transfers.len()
    );
    for server in servers.into_iter().flatten() {
        server.shutdown().await;
    }
    pg::drop_store(store).await;
}
