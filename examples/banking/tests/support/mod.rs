//! Test support: the bank served over real HTTP on a loopback port, on each store.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use banking::bank::{self, Bank, Running};
use banking::http;
use banking::read_model::ReadModels;
use banking::read_model::memory::MemoryReadModels;
#[cfg(feature = "postgres")]
use banking::read_model::postgres::PgReadModels;
#[cfg(feature = "sqlite")]
use banking::read_model::sqlite::SqliteReadModels;
use decider_core::EventStore;
#[cfg(feature = "eventstoredb")]
use decider_eventstoredb_double::ProtocolDouble;
#[cfg(feature = "eventstoredb")]
use decider_store_eventstoredb::EventStoreDbStore;
use decider_store_memory::MemoryStore;
#[cfg(feature = "postgres")]
use decider_store_postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "sqlite")]
use decider_store_sqlite::SqliteStore;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The store-postgres test support: a fresh schema per test, dropped also when the test fails,
/// and a clear message when no database answers.
#[cfg(feature = "postgres")]
#[path = "../../../../store-postgres/tests/support/mod.rs"]
pub mod pg;

pub mod scenario;

/// The EventStoreDB protocol double of this test process (nextest runs each test in a process
/// of its own; every test writes streams of its own anyway).
#[cfg(feature = "eventstoredb")]
pub fn double() -> &'static ProtocolDouble {
    static DOUBLE: std::sync::OnceLock<ProtocolDouble> = std::sync::OnceLock::new();
    DOUBLE.get_or_init(ProtocolDouble::start)
}

/// A bank on EventStoreDB, through the real `kurrentdb` client, against the protocol double.
#[cfg(feature = "eventstoredb")]
pub async fn eventstoredb_double_bank() -> Running<EventStoreDbStore, MemoryReadModels> {
    bank::on_eventstoredb(&double().url())
        .await
        .expect("start the bank on the EventStoreDB protocol double")
}

/// A database file of its own, removed (with its `-wal` and `-shm` files) when dropped.
pub struct TempDb(pub std::path::PathBuf);

impl TempDb {
    pub fn new() -> Self {
        Self(
            std::env::temp_dir().join(format!("banking-test-{}.db", uuid::Uuid::new_v4().simple())),
        )
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A bank on a fresh SQLite file; keep the file until the bank is stopped.
#[cfg(feature = "sqlite")]
pub async fn sqlite_bank() -> (Running<SqliteStore, SqliteReadModels>, TempDb) {
    let file = TempDb::new();
    let running = bank::on_sqlite(&file.url(), bank::ReadSide::default())
        .await
        .expect("start the bank on SQLite");
    (running, file)
}

pub fn memory_bank() -> Running<MemoryStore, MemoryReadModels> {
    bank::in_memory()
}

/// A bank on a fresh schema; returns the store too, to drop its schema at the end.
#[cfg(feature = "postgres")]
pub async fn postgres_bank() -> (Running<PostgresStore, PgReadModels>, PostgresStore) {
    let store = pg::unmigrated_store(PostgresOptions {
        pool_size: 16,
        ..PostgresOptions::default()
    })
    .await;
    let running = bank::on_postgres_store(store.clone(), bank::ReadSide::default())
        .await
        .expect("start the bank on PostgreSQL");
    (running, store)
}

/// The API served on a loopback port, and a client for it.
pub struct Server {
    base: String,
    client: reqwest::Client,
    process: Process,
    /// The working directory of a spawned server, removed after it.
    scratch: Option<TempDir>,
}

/// A directory of its own, removed with what it holds when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("banking-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What serves the API: a task of this test, or a `banking serve` process of its own.
enum Process {
    Task {
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<std::io::Result<()>>,
    },
    Child(std::process::Child),
}

/// A response: the status and the JSON body (`Null` when there is none).
pub type Answer = (u16, Value);

impl Server {
    pub async fn start<S: EventStore + Clone, R: ReadModels>(bank: &Arc<Bank<S, R>>) -> Self {
        Self::start_router(http::router(bank.clone())).await
    }

    /// Serves `router` (the API's, perhaps with more routes) in a task of this test.
    pub async fn start_router(router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(listener, router, async {
            stopped.await.ok();
        }));
        Self {
            base,
            client: client(),
            process: Process::Task {
                stop: Some(stop),
                task,
            },
            scratch: None,
        }
    }

    /// Runs `banking serve` with `args` in a process of its own, on a loopback port, in a new
    /// working directory of its own (where its default `banking.db` goes), and waits until it
    /// serves. Its log goes to this test's stderr.
    pub fn spawn(args: &[&str]) -> Self {
        let dir = TempDir::new();
        let mut server = Self::spawn_in(&dir.0, args);
        server.scratch = Some(dir);
        server
    }

    /// Like [`spawn`](Self::spawn), in `dir`.
    pub fn spawn_in(dir: &std::path::Path, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_banking"))
            .current_dir(dir)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start banking serve");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let address = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("banking serve ended before it served: {:?}", child.wait());
            };
            eprintln!("serve: {line}");
            if let Some((_, address)) = line.split_once("address=") {
                break address.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep reading, so that the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("serve: {line}");
            }
        });
        Self {
            base: format!("http://{address}"),
            client: client(),
            process: Process::Child(child),
            scratch: None,
        }
    }

    /// Stops a spawned server with SIGTERM, as a container runtime would, and returns how it
    /// exited.
    pub async fn terminate(self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || self.terminate_blocking())
            .await
            .unwrap()
    }

    fn terminate_blocking(mut self) -> std::process::ExitStatus {
        let Process::Child(child) = &mut self.process else {
            panic!("not a process of its own")
        };
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        child.wait().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// POSTs `body` as JSON, with `key` as the `Idempotency-Key`.
    pub async fn post(&self, path: &str, body: Value, key: Option<&str>) -> Answer {
        let mut request = self.client.post(self.url(path)).json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        answer(request.send().await.unwrap()).await
    }

    /// POSTs a raw body with the given content type.
    pub async fn post_raw(&self, path: &str, body: &'static str, content_type: &str) -> Answer {
        let request = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        answer(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        answer(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn shutdown(mut self) {
        match &mut self.process {
            Process::Task { stop, task } => {
                if let Some(stop) = stop.take() {
                    stop.send(()).ok();
                }
                task.await.unwrap().unwrap();
            }
            Process::Child(child) => {
                child.kill().ok();
                child.wait().ok();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test leaves no server behind.
        if let Process::Child(child) = &mut self.process {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, body)
}

/// The `error.code` of an error answer.
pub fn code(answer: &Answer) -> &str {
    answer.1["error"]["code"].as_str().unwrap_or("<none>")
}

/// Requests a transfer over HTTP under idempotency key `key`, waits until it has completed, and
/// returns the finished transfer.
pub async fn transfer(server: &Server, from: &str, to: &str, amount: i64, key: &str) -> Answer {
    let requested = server
        .post(
            "/transfers",
            serde_json::json!({ "from": from, "to": to, "amount": amount, "currency": "EUR" }),
            Some(key),
        )
        .await;
    assert_eq!(requested.0, 202, "{requested:?}");
    let id = requested.1["id"].as_str().unwrap();
    let done = server.get(&format!("/transfers/{id}?wait_ms=10000")).await;
    assert_eq!(done.1["status"], "completed", "{done:?}");
    done
}

/// Opens an account over HTTP and returns its id.
pub async fn open(server: &Server, owner: &str, currency: &str, limit: Option<i64>) -> String {
    let answer = server
        .post(
            "/accounts",
            serde_json::json!({ "owner": owner, "currency": currency, "overdraft_limit": limit }),
            None,
        )
        .await;
    assert_eq!(answer.0, 201, "open {owner}: {answer:?}");
    answer.1["id"].as_str().unwrap().to_owned()
}
