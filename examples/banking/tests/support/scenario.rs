//! The fault scenarios of a `banking serve` process on PostgreSQL, shared by the test that
//! terminates its connections and the one that restarts the database.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Answer, Server, code};

/// How long the bank may take to flow again once the database answers.
pub const RECOVERY: Duration = Duration::from_secs(15);

/// Two accounts with money, and the position of the last write.
pub struct Bank {
    pub ada: String,
    pub bob: String,
    pub position: String,
}

pub async fn open_two_accounts(server: &Server, tag: &str) -> Bank {
    let ada = open(server, "Ada", &format!("{tag}-open-ada")).await;
    let bob = open(server, "Bob", &format!("{tag}-open-bob")).await;
    let deposit = server
        .post(
            &format!("/accounts/{ada}/deposits"),
            json!({ "amount": 1_000 }),
            Some(&format!("{tag}-deposit")),
        )
        .await;
    assert_eq!(deposit.0, 201, "{deposit:?}");
    Bank {
        ada,
        bob,
        position: deposit.1["position"].as_str().unwrap().to_owned(),
    }
}

async fn open(server: &Server, owner: &str, key: &str) -> String {
    let answer = server
        .post(
            "/accounts",
            json!({ "owner": owner, "currency": "EUR" }),
            Some(key),
        )
        .await;
    assert_eq!(answer.0, 201, "open {owner}: {answer:?}");
    answer.1["id"].as_str().unwrap().to_owned()
}

/// Polls `/health` until it answers `status`; returns the last answer.
pub async fn health_becomes(server: &Server, status: &str, within: Duration) -> Answer {
    let started = Instant::now();
    loop {
        let answer = server.get("/health").await;
        if answer.1["status"] == status {
            return answer;
        }
        assert!(
            started.elapsed() < within,
            "/health did not become {status} within {within:?}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Health is ok, every projection live and caught up.
pub async fn healthy(server: &Server) -> Answer {
    let started = Instant::now();
    loop {
        let answer = health_becomes(server, "ok", RECOVERY).await;
        let projections = answer.1["projections"].as_array().unwrap();
        if projections
            .iter()
            .all(|p| p["state"] == "live" && p["lag"] == 0)
        {
            return answer;
        }
        assert!(started.elapsed() < RECOVERY, "not caught up: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything flows: a deposit is accepted at once (no 503), read-your-writes answers, and a
/// transfer completes.
pub async fn everything_flows(server: &Server, bank: &Bank, tag: &str) {
    let deposit = server
        .post(
            &format!("/accounts/{}/deposits", bank.ada),
            json!({ "amount": 10 }),
            Some(&format!("{tag}-deposit-after")),
        )
        .await;
    assert_eq!(deposit.0, 201, "{deposit:?}");
    let position = deposit.1["position"].as_str().unwrap();
    let view = server
        .get(&format!(
            "/accounts/{}?after={position}&wait_ms=5000",
            bank.ada
        ))
        .await;
    assert_eq!(view.0, 200, "read-your-writes after the fault: {view:?}");
    let transfer = transfer(server, bank, &format!("{tag}-transfer-after")).await;
    assert_eq!(transfer.1["status"], "completed", "{transfer:?}");
}

/// Requests a transfer of 1.00 from Ada to Bob and waits for it to end.
pub async fn transfer(server: &Server, bank: &Bank, key: &str) -> Answer {
    let requested = server
        .post(
            "/transfers",
            json!({ "from": bank.ada, "to": bank.bob, "amount": 100, "currency": "EUR" }),
            Some(key),
        )
        .await;
    assert_eq!(requested.0, 202, "{requested:?}");
    let id = requested.1["id"].as_str().unwrap();
    wait_for_transfer(server, id).await
}

pub async fn wait_for_transfer(server: &Server, id: &str) -> Answer {
    let answer = server
        .get(&format!("/transfers/{id}?wait_ms={}", RECOVERY.as_millis()))
        .await;
    assert_eq!(answer.0, 200, "{answer:?}");
    answer
}

/// Sends `body` to `path` under `key` until it is not a 503, as a careful client would.
pub async fn post_until_accepted(server: &Server, path: &str, body: Value, key: &str) -> Answer {
    let started = Instant::now();
    loop {
        let answer = server.post(path, body.clone(), Some(key)).await;
        if answer.0 != 503 {
            return answer;
        }
        assert_eq!(code(&answer), "store_unavailable", "{answer:?}");
        assert!(started.elapsed() < RECOVERY, "still 503: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
