//! `banking serve` keeps everything in its SQLite file: after a restart of the process, accounts,
//! balances, ledgers and idempotency keys are all still there (a re-sent request is a replay),
//! and a transfer in flight when the process was killed finishes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Server, TempDir};

async fn open(server: &Server, owner: &str) -> (u16, Value) {
    server
        .post(
            "/accounts",
            json!({ "owner": owner, "currency": "EUR" }),
            Some(&format!("open-{owner}")),
        )
        .await
}

async fn transfer(server: &Server, from: &str, to: &str, key: &str) -> String {
    let requested = server
        .post(
            "/transfers",
            json!({ "from": from, "to": to, "amount": 2_500, "currency": "EUR" }),
            Some(key),
        )
        .await;
    assert_eq!(requested.0, 202, "{requested:?}");
    requested.1["id"].as_str().unwrap().to_owned()
}

async fn completed(server: &Server, id: &str) {
    let answer = server.get(&format!("/transfers/{id}?wait_ms=15000")).await;
    assert_eq!(answer.1["status"], "completed", "{answer:?}");
}

async fn deposit(server: &Server, account: &str) -> (u16, Value) {
    server
        .post(
            &format!("/accounts/{account}/deposits"),
            json!({ "amount": 10_000 }),
            Some("deposit-1"),
        )
        .await
}

/// The read model's position once it shows `account`'s settlement of its one transfer out
/// (opened, deposited, debited, settled: revision 3).
async fn settled_position(server: &Server, account: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let view = server.get(&format!("/accounts/{account}")).await;
        if view.1["version"] == 3 {
            return view.1["position"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the settlement never reached the read model: {view:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The account's view, once the read model has reached `position`, and its ledger.
async fn read(server: &Server, account: &str, position: &str) -> (Value, Value) {
    let view = server
        .get(&format!(
            "/accounts/{account}?after={position}&wait_ms=15000"
        ))
        .await;
    assert_eq!(view.0, 200, "{view:?}");
    let ledger = server.get(&format!("/accounts/{account}/ledger")).await;
    (view.1, ledger.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_accounts_balances_ledgers_transfers_and_idempotency_keys() {
    // No --store: the server's default, banking.db in its working directory.
    let dir = TempDir::new();
    let server = Server::spawn_in(&dir.0, &[]);
    let (status, ada) = open(&server, "ada").await;
    assert_eq!((status, &ada["replayed"]), (201, &json!(false)), "{ada:?}");
    let ada = ada["id"].as_str().unwrap().to_owned();
    let bob = open(&server, "bob").await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(deposit(&server, &ada).await.0, 201);
    completed(&server, &transfer(&server, &ada, &bob, "transfer-1").await).await;
    // The transfer is completed once its settlement is on Ada's stream (her last event, after
    // Bob's credit), but the read model may not have applied it yet: wait until it has, and
    // read both accounts at that position.
    let position = settled_position(&server, &ada).await;
    let before = (
        read(&server, &ada, &position).await,
        read(&server, &bob, &position).await,
    );
    assert_eq!(before.0.0["balance"], 7_500);
    assert_eq!(server.terminate().await.code(), Some(0));
    assert!(dir.0.join("banking.db").exists());

    let server = Server::spawn_in(&dir.0, &[]);
    let again = open(&server, "ada").await;
    assert_eq!(
        (&again.1["id"], &again.1["replayed"]),
        (&json!(ada), &json!(true)),
        "{again:?}"
    );
    let again = deposit(&server, &ada).await;
    assert_eq!(
        again.1["replayed"], true,
        "a re-sent deposit is a replay: {again:?}"
    );
    let after = (
        read(&server, &ada, &position).await,
        read(&server, &bob, &position).await,
    );
    assert_eq!(after, before, "balances and ledgers survive the restart");

    // A transfer whose process is killed right after it was accepted finishes after a restart.
    let in_flight = transfer(&server, &ada, &bob, "transfer-2").await;
    server.shutdown().await; // SIGKILL
    let server = Server::spawn_in(&dir.0, &[]);
    completed(&server, &in_flight).await;
    let ledger = server.get(&format!("/accounts/{ada}/ledger")).await;
    assert_eq!(
        ledger.1["entries"].as_array().unwrap().len(),
        3,
        "{ledger:?}"
    );
    assert_eq!(server.terminate().await.code(), Some(0));
}
