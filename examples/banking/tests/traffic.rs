//! End to end over real HTTP: 20 accounts, 2,000 concurrent random transfers, deposits and
//! withdrawals from 8 tasks, some sent twice under one idempotency key; then money is conserved,
//! no balance is below its limit, every transfer completed or failed and was compensated, the
//! read models equal a fresh fold of every stream, ledgers add up, and replaying the log into
//! fresh read models gives the same read models again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::inconsistent_digit_grouping
)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use banking::account::{AccountId, AccountState};
use banking::bank::{Bank, Running};
use banking::read_model::memory::MemoryReadModels;
use banking::read_model::{AccountView, LedgerEntry, MovementKind, ReadModels};
use decider_core::projection::EventHandler;
use decider_core::{EventFilter, EventStore};
use futures::TryStreamExt;
use serde_json::{Value, json};
use support::{Server, code};
use uuid::Uuid;

const ACCOUNTS: usize = 20;
const TASKS: usize = 8;
const OPERATIONS_PER_TASK: usize = 250;
const INITIAL_DEPOSIT: i64 = 1_000_00;
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_traffic_on_the_memory_store_conserves_money() {
    traffic(support::memory_bank()).await;
}

#[cfg(feature = "eventstoredb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_traffic_on_the_eventstoredb_protocol_double_conserves_money() {
    traffic(support::eventstoredb_double_bank().await).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_traffic_on_sqlite_conserves_money() {
    let (running, _file) = support::sqlite_bank().await;
    traffic(running).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_traffic_on_postgres_conserves_money() {
    let (running, store) = support::postgres_bank().await;
    traffic(running).await;
    support::pg::drop_store(store).await;
}

/// An account as the test set it up.
#[derive(Debug, Clone)]
struct Account {
    id: String,
    currency: &'static str,
    limit: i64,
}

/// What the clients saw succeed.
#[derive(Debug, Default)]
struct Tally {
    deposited: i64,
    withdrawn: i64,
    transfers: Vec<(String, usize, usize, i64)>,
    retried: usize,
}

async fn traffic<S: EventStore + Clone, R: ReadModels>(running: Running<S, R>) {
    let bank = running.bank().clone();
    let server = Arc::new(Server::start(&bank).await);

    // Two USD accounts and two closed ones make transfers fail in both ways; every fifth
    // account may go 500.00 below zero.
    let mut accounts = Vec::new();
    for n in 0..ACCOUNTS {
        let currency = if n < 2 { "USD" } else { "EUR" };
        let limit = if n % 5 == 0 { 500_00 } else { 0 };
        let id = support::open(&server, &format!("owner {n}"), currency, Some(limit)).await;
        accounts.push(Account {
            id,
            currency,
            limit,
        });
    }
    for account in &accounts[2..4] {
        let closed = server
            .post(&format!("/accounts/{}/close", account.id), json!({}), None)
            .await;
        assert_eq!(closed.0, 200, "{closed:?}");
    }
    let mut opening = 0;
    for account in accounts.iter().filter(|a| !is_closed(a, &accounts)) {
        let answer = server
            .post(
                &format!("/accounts/{}/deposits", account.id),
                json!({ "amount": INITIAL_DEPOSIT }),
                None,
            )
            .await;
        assert_eq!(answer.0, 201, "{answer:?}");
        opening += INITIAL_DEPOSIT;
    }

    let accounts = Arc::new(accounts);
    let clients: Vec<_> = (0..TASKS)
        .map(|task| tokio::spawn(client(task, server.clone(), accounts.clone())))
        .collect();
    let mut tally = Tally::default();
    for client in clients {
        let part = client.await.unwrap();
        tally.deposited += part.deposited;
        tally.withdrawn += part.withdrawn;
        tally.transfers.extend(part.transfers);
        tally.retried += part.retried;
    }
    assert!(
        tally.retried > 50,
        "too few retries to prove anything: {tally:?}"
    );

    // Every transfer ends: completed, or failed (refunded if its source had been debited).
    let mut statuses = HashMap::new();
    for (id, ..) in &tally.transfers {
        let answer = server.get(&format!("/transfers/{id}?wait_ms=30000")).await;
        assert_eq!(answer.0, 200, "{answer:?}");
        let status = answer.1["status"].as_str().unwrap().to_owned();
        assert!(
            status == "completed" || status == "failed",
            "transfer {id} still {status}"
        );
        statuses.insert(id.clone(), answer.1);
    }
    let completed = statuses
        .values()
        .filter(|t| t["status"] == "completed")
        .count();
    let compensated = statuses
        .values()
        .filter(|t| t["compensated"] == true)
        .count();
    assert!(
        completed > 100 && compensated > 10,
        "the mix should complete and compensate transfers: {completed} completed, {compensated} compensated"
    );

    // The read models, once current, against a fresh fold of each stream.
    let mut views = Vec::new();
    let mut ledgers = Vec::new();
    for account in accounts.iter() {
        let id = AccountId(Uuid::parse_str(&account.id).unwrap());
        let view = bank.account_now(id, WAIT).await.unwrap();
        let folded = bank.accounts().load(&id.stream()).await.unwrap();
        assert_eq!(Some(view.version), folded.last_revision, "{account:?}");
        match folded.state {
            AccountState::Open(open) => {
                assert_eq!(view.balance, open.balance, "{account:?}");
                assert!(open.in_flight.is_empty(), "money left in flight: {open:?}");
            }
            AccountState::Closed => assert_eq!(view.balance, 0),
            AccountState::Unopened => panic!("{account:?} not opened"),
        }
        assert!(
            view.balance >= -account.limit,
            "{account:?} below its limit: {view:?}"
        );
        let answer = server
            .get(&format!("/accounts/{}/ledger", account.id))
            .await;
        assert_eq!(answer.0, 200);
        let ledger = answer.1["entries"].as_array().unwrap().clone();
        let mut running_balance = 0;
        for entry in &ledger {
            running_balance += entry["amount"].as_i64().unwrap();
            assert_eq!(
                entry["balance"].as_i64().unwrap(),
                running_balance,
                "{account:?}"
            );
        }
        assert_eq!(running_balance, view.balance, "{account:?}");
        views.push(view);
        ledgers.push(ledger);
    }
    let total: i64 = views.iter().map(|view| view.balance).sum();
    assert_eq!(
        total,
        opening + tally.deposited - tally.withdrawn,
        "money was created or destroyed"
    );

    // Each transfer left exactly the movements its outcome says.
    let mut movements: HashMap<String, Vec<(usize, String, i64)>> = HashMap::new();
    for (n, ledger) in ledgers.iter().enumerate() {
        for entry in ledger {
            if let Some(transfer) = entry["transfer"].as_str() {
                let kind = entry["kind"].as_str().unwrap().to_owned();
                let amount = entry["amount"].as_i64().unwrap();
                movements
                    .entry(transfer.to_owned())
                    .or_default()
                    .push((n, kind, amount));
            }
        }
    }
    for (id, from, to, amount) in &tally.transfers {
        let mut seen = movements.remove(id).unwrap_or_default();
        seen.sort();
        let status = &statuses[id];
        let mut expected = match (status["status"].as_str(), status["compensated"].as_bool()) {
            (Some("completed"), _) => vec![
                (*from, "transfer_out".to_owned(), -amount),
                (*to, "transfer_in".to_owned(), *amount),
            ],
            (Some("failed"), Some(true)) => vec![
                (*from, "transfer_out".to_owned(), -amount),
                (*from, "transfer_refund".to_owned(), *amount),
            ],
            _ => vec![],
        };
        expected.sort();
        assert_eq!(seen, expected, "transfer {id}: {status}");
    }
    assert!(
        movements.is_empty(),
        "movements of unknown transfers: {movements:?}"
    );

    // Determinism: the whole log, replayed twice into fresh read models, gives these again.
    let first = replay(&bank).await;
    let second = replay(&bank).await;
    for (account, view) in accounts.iter().zip(&views) {
        let id = AccountId(Uuid::parse_str(&account.id).unwrap());
        let live_ledger = bank
            .read_models()
            .statement(1, id)
            .await
            .unwrap()
            .unwrap()
            .entries;
        for replayed in [&first, &second] {
            assert_eq!(replayed.0.get(&id), Some(view));
            assert_eq!(replayed.1.get(&id), Some(&live_ledger));
        }
    }

    Arc::into_inner(server).unwrap().shutdown().await;
    running.stop().await.unwrap();
}

fn is_closed(account: &Account, accounts: &[Account]) -> bool {
    accounts[2..4].iter().any(|closed| closed.id == account.id)
}

type Replayed = (
    HashMap<AccountId, AccountView>,
    HashMap<AccountId, Vec<LedgerEntry>>,
);

async fn replay<S: EventStore + Clone, R: ReadModels>(bank: &Bank<S, R>) -> Replayed {
    let events: Vec<_> = bank
        .store()
        .read_whole_log(&EventFilter::all().with_categories(["account"]))
        .try_collect()
        .await
        .unwrap();
    let models = MemoryReadModels::new();
    for batch in events.chunks(97) {
        models.handle(batch).await.unwrap();
    }
    let mut views = HashMap::new();
    let mut ledgers = HashMap::new();
    for event in &events {
        let id = AccountId::from_stream(&event.stream).unwrap();
        let statement = models.statement(1, id).await.unwrap().unwrap();
        views.insert(id, statement.account);
        ledgers.insert(id, statement.entries);
    }
    assert!(
        ledgers
            .values()
            .flatten()
            .any(|entry| entry.kind == MovementKind::TransferRefund)
    );
    (views, ledgers)
}

/// One client: random operations, a tenth of them sent twice at once under the same key.
async fn client(task: usize, server: Arc<Server>, accounts: Arc<Vec<Account>>) -> Tally {
    let mut rng = fastrand::Rng::with_seed(task as u64);
    let mut tally = Tally::default();
    for n in 0..OPERATIONS_PER_TASK {
        let key = format!("client-{task}-{n}");
        let twice = rng.u8(0..10) == 0;
        let roll = rng.u8(0..100);
        let a = rng.usize(0..accounts.len());
        let b = (a + rng.usize(1..accounts.len())) % accounts.len();
        let (path, body) = if roll < 50 {
            let currency = accounts[a].currency;
            let amount = rng.i64(1..=300_00);
            let body = json!({ "from": accounts[a].id, "to": accounts[b].id,
                               "amount": amount, "currency": currency });
            ("/transfers".to_owned(), body)
        } else if roll < 80 {
            let path = format!("/accounts/{}/deposits", accounts[a].id);
            (path, json!({ "amount": rng.i64(1..=200_00) }))
        } else {
            let path = format!("/accounts/{}/withdrawals", accounts[a].id);
            (path, json!({ "amount": rng.i64(1..=400_00) }))
        };
        let answer = if twice {
            tally.retried += 1;
            let (first, second) = tokio::join!(
                send(&server, &path, &body, &key),
                send(&server, &path, &body, &key)
            );
            // Both see the same outcome, unless a refusal (writes nothing) came before a
            // change elsewhere let the other go through.
            if first.0 == second.0 && first.0 < 300 {
                // One write, at one position, and exactly one of the two says it made it.
                assert_eq!(first.1["id"], second.1["id"]);
                assert_eq!(first.1["position"], second.1["position"]);
                let replays = [&first, &second]
                    .iter()
                    .filter(|answer| answer.1["replayed"] == true)
                    .count();
                assert_eq!(replays, 1, "{path}: {first:?} {second:?}");
            } else if first.0 != second.0 {
                let statuses = [first.0.min(second.0), first.0.max(second.0)];
                assert!(
                    statuses == [201, 422] || statuses == [202, 422],
                    "{path} {first:?} {second:?}"
                );
            }
            if first.0 < 300 { first } else { second }
        } else {
            send(&server, &path, &body, &key).await
        };
        let amount = body["amount"].as_i64().unwrap();
        match (roll, answer.0) {
            (0..50, 202) => {
                let id = answer.1["id"].as_str().unwrap().to_owned();
                tally.transfers.push((id, a, b, amount));
            }
            (50..80, 201) => tally.deposited += amount,
            (80.., 201) => tally.withdrawn += amount,
            (_, 422) => assert!(
                ["insufficient_funds", "account_closed"].contains(&code(&answer)),
                "{path} {answer:?}"
            ),
            _ => panic!("{path} {body}: unexpected {answer:?}"),
        }
    }
    tally
}

/// Sends a POST the way a careful client does: a 409 (conflict after the server's retries) or
/// a 503 (the store failed, perhaps after committing) is sent again with the same key, which
/// makes the retry safe.
async fn send(server: &Server, path: &str, body: &Value, key: &str) -> support::Answer {
    for _ in 0..10 {
        let answer = server.post(path, body.clone(), Some(key)).await;
        match answer.0 {
            409 => {}
            503 => {
                eprintln!("{path} {key}: {answer:?}; sending it again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => return answer,
        }
    }
    panic!("{path}: still refused after 10 attempts");
}
