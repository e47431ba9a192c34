//! Transfers per second end to end over HTTP on loopback: `POST /transfers`, then
//! `GET /transfers/{id}?wait_ms=…` until the process manager has completed it, at concurrency
//! 1, 8 and 32, with p50/p99 latency; beside it, in the same run, the same transfers as a plain
//! SQL transaction (two balance updates and two ledger rows) behind the same HTTP stack, the
//! "raw database" a CRUD bank would be.
//!
//! `cargo run --release -p banking --example http_bench [-- postgres|sqlite|memory] [transfers per level]`
//! (PostgreSQL from `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`; the bench
//! works in a schema of its own and drops it at the end. SQLite: a file of its own in the
//! temporary directory, WAL and `synchronous=FULL` on both sides, removed at the end).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::inconsistent_digit_grouping
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use banking::bank::{self, Running};
use banking::http;
use banking::read_model::ReadModels;
use decider_core::EventStore;
use decider_store_postgres::{PostgresOptions, PostgresStore};
use serde_json::{Value, json};

const ACCOUNTS: usize = 200;
const LEVELS: [usize; 3] = [1, 8, 32];

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let store = args.next().unwrap_or_else(|| "postgres".to_owned());
    let per_level: usize = args.next().map_or(2_000, |n| n.parse().expect("a count"));
    let url = std::env::var("DATABASE_URL")
        // Plaintext, like the raw baseline (which connects without TLS).
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".to_owned());
    println!("banking http_bench: {store}, {per_level} transfers per level, {ACCOUNTS} accounts");
    match store.as_str() {
        "memory" => run("decider/memory", bank::in_memory(), per_level).await,
        "postgres" => {
            let schema = format!("banking_bench_{}", std::process::id());
            let options = PostgresOptions {
                schema: schema.clone(),
                pool_size: 32,
                ..PostgresOptions::default()
            };
            let store = PostgresStore::connect_with(&url, options).await.unwrap();
            let running = bank::on_postgres_store(store.clone(), bank::ReadSide::default())
                .await
                .unwrap();
            run("decider/postgres", running, per_level).await;
            raw(&store, per_level).await;
            store.drop_schema().await.unwrap();
        }
        "sqlite" => {
            let dir = std::env::temp_dir().join(format!("banking-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("sqlite://{}", dir.join("bank.db").display());
            run(
                "decider/sqlite",
                bank::on_sqlite(&url, bank::ReadSide::default())
                    .await
                    .unwrap(),
                per_level,
            )
            .await;
            raw_sqlite(&dir.join("raw.db"), per_level).await;
            std::fs::remove_dir_all(&dir).unwrap();
        }
        other => panic!("unknown store {other}: postgres, sqlite or memory"),
    }
}

async fn run<S: EventStore + Clone, R: ReadModels>(
    label: &str,
    running: Running<S, R>,
    per_level: usize,
) {
    let router = http::router(running.bank().clone());
    let (base, stop) = serve(router).await;
    let client = reqwest::Client::new();
    let mut accounts = Vec::new();
    for n in 0..ACCOUNTS {
        let body = json!({ "owner": format!("owner {n}"), "currency": "EUR" });
        let opened: Value = client
            .post(format!("{base}/accounts"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = opened["id"].as_str().unwrap().to_owned();
        let deposit = json!({ "amount": 1_000_000_00 });
        let answer = client
            .post(format!("{base}/accounts/{id}/deposits"))
            .json(&deposit)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        accounts.push(id);
    }
    let accounts = Arc::new(accounts);
    for concurrency in LEVELS {
        let transfer = |client: reqwest::Client, base: String, accounts: Arc<Vec<String>>| {
            move |n: usize| {
                let (client, base, accounts) = (client.clone(), base.clone(), accounts.clone());
                async move {
                    let from = &accounts[n % accounts.len()];
                    let to = &accounts[(n * 7 + 1) % accounts.len()];
                    let body = json!({ "from": from, "to": to, "amount": 1, "currency": "EUR" });
                    let accepted: Value = client
                        .post(format!("{base}/transfers"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let id = accepted["id"].as_str().expect("a transfer id");
                    let done: Value = client
                        .get(format!("{base}/transfers/{id}?wait_ms=30000"))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    assert_eq!(done["status"], "completed", "{done}");
                }
            }
        };
        let (per_second, p50, p99) = load(
            concurrency,
            per_level,
            transfer(client.clone(), base.clone(), accounts.clone()),
        )
        .await;
        println!(
            "{label:<17} C={concurrency:<2} transfers/s={per_second:>8.0} p50={p50:>7.2} ms p99={p99:>7.2} ms"
        );
    }
    stop.send(()).ok();
    running.stop().await.unwrap();
}

/// Runs `per_level` calls of `work` from `concurrency` tasks; returns calls/s, p50 and p99 (ms).
async fn load<F, Fut>(concurrency: usize, per_level: usize, work: F) -> (f64, f64, f64)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, work) = (next.clone(), work.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= per_level {
                        return latencies;
                    }
                    let begun = Instant::now();
                    work(n).await;
                    latencies.push(begun.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (
        latencies.len() as f64 / elapsed,
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
    )
}

async fn serve(router: axum::Router) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::serve(listener, router, async {
        stopped.await.ok();
    }));
    (base, stop)
}

/// The raw baseline: one SQL transaction per transfer (debit with a funds check, credit, two
/// ledger rows) behind an axum handler, in the same schema and the same run.
async fn raw(store: &PostgresStore, per_level: usize) {
    let schema = store.schema();
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.raw_accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE {schema}.raw_ledger (account bigint, transfer uuid, amount bigint,
                 balance bigint, PRIMARY KEY (account, transfer));
             INSERT INTO {schema}.raw_accounts SELECT n, 100000000 FROM generate_series(0, {}) n;",
            ACCOUNTS - 1
        ))
        .await
        .unwrap();
    drop(client);
    let router = axum::Router::new()
        .route("/raw_transfers", post(raw_transfer))
        .with_state(store.clone());
    raw_load(router, "raw SQL/postgres", per_level).await;
}

/// Serves `router` and sends it `per_level` raw transfers at each concurrency level.
async fn raw_load(router: axum::Router, label: &str, per_level: usize) {
    let (base, stop) = serve(router).await;
    let http = reqwest::Client::new();
    for concurrency in LEVELS {
        let (http, base) = (http.clone(), base.clone());
        let work = move |n: usize| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let body =
                    json!({ "from": n % ACCOUNTS, "to": (n * 7 + 1) % ACCOUNTS, "amount": 1 });
                let answer = http
                    .post(format!("{base}/raw_transfers"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200);
            }
        };
        let (per_second, p50, p99) = load(concurrency, per_level, work).await;
        println!(
            "{label:<17} C={concurrency:<2} transfers/s={per_second:>8.0} p50={p50:>7.2} ms p99={p99:>7.2} ms"
        );
    }
    stop.send(()).ok();
}

/// The raw baseline on SQLite: the same transaction with rusqlite, on one connection in WAL
/// mode with `synchronous=FULL` (the store's defaults), run on a blocking thread.
async fn raw_sqlite(path: &std::path::Path, per_level: usize) {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE raw_accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
             CREATE TABLE raw_ledger (account INTEGER, transfer BLOB, amount INTEGER,
                 balance INTEGER, PRIMARY KEY (account, transfer));
             WITH RECURSIVE n(id) AS (SELECT 0 UNION ALL SELECT id + 1 FROM n WHERE id < {})
             INSERT INTO raw_accounts SELECT id, 100000000 FROM n;",
            ACCOUNTS - 1
        ))
        .unwrap();
    let connection = Arc::new(std::sync::Mutex::new(connection));
    let router = axum::Router::new()
        .route("/raw_transfers", post(raw_sqlite_transfer))
        .with_state(connection);
    raw_load(router, "raw SQL/sqlite", per_level).await;
}

async fn raw_sqlite_transfer(
    State(connection): State<Arc<std::sync::Mutex<rusqlite::Connection>>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let (from, to, amount) = (
        body["from"].as_i64().unwrap(),
        body["to"].as_i64().unwrap(),
        body["amount"].as_i64().unwrap(),
    );
    let transfer = uuid::Uuid::new_v4();
    tokio::task::spawn_blocking(move || {
        let mut connection = connection.lock().unwrap();
        let transaction = connection.transaction().unwrap();
        for (account, delta) in ordered(from, to, amount) {
            let balance: i64 = transaction
                .query_row(
                    "UPDATE raw_accounts SET balance = balance + ?2
                     WHERE id = ?1 AND balance + ?2 >= 0 RETURNING balance",
                    rusqlite::params![account, delta],
                    |row| row.get(0),
                )
                .unwrap();
            transaction
                .execute(
                    "INSERT INTO raw_ledger VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![account, transfer.as_bytes().as_slice(), delta, balance],
                )
                .unwrap();
        }
        transaction.commit().unwrap();
    })
    .await
    .unwrap();
    Json(json!({ "id": transfer, "status": "completed" }))
}

async fn raw_transfer(State(store): State<PostgresStore>, Json(body): Json<Value>) -> Json<Value> {
    let schema = store.schema();
    let (from, to, amount) = (
        body["from"].as_i64().unwrap(),
        body["to"].as_i64().unwrap(),
        body["amount"].as_i64().unwrap(),
    );
    let mut client = store.pool().get().await.unwrap();
    let transaction = client.transaction().await.unwrap();
    let transfer = uuid::Uuid::new_v4();
    // Lock in id order, as a careful CRUD bank does, so that two transfers never deadlock.
    for (account, delta) in ordered(from, to, amount) {
        let row = transaction
            .query_one(
                &format!(
                    "UPDATE {schema}.raw_accounts SET balance = balance + $2
                     WHERE id = $1 AND balance + $2 >= 0 RETURNING balance"
                ),
                &[&account, &delta],
            )
            .await
            .unwrap();
        let balance: i64 = row.get(0);
        transaction
            .execute(
                &format!("INSERT INTO {schema}.raw_ledger VALUES ($1, $2, $3, $4)"),
                &[&account, &transfer, &delta, &balance],
            )
            .await
            .unwrap();
    }
    transaction.commit().await.unwrap();
    Json(json!({ "id": transfer, "status": "completed" }))
}

fn ordered(from: i64, to: i64, amount: i64) -> [(i64, i64); 2] {
    if from < to {
        [(from, -amount), (to, amount)]
    } else {
        [(to, amount), (from, -amount)]
    }
}
