//! Test support: a fresh schema per test on the database of `DATABASE_URL`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

use decider_store_postgres::{PostgresOptions, PostgresStore};

/// The default when `DATABASE_URL` is not set: the server CI and developer machines run.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// A store in a new, migrated schema of its own. Panics with what to start or set when no
/// database answers: a store's tests never skip silently.
pub async fn fresh_store_with(options: PostgresOptions) -> PostgresStore {
    fresh_store_at(&database_url(), options).await
}

/// Schemas this test process made, each with the thread that made it (the test's own thread,
/// where its body runs and where its failure is raised), dropped by the panic hook when that
/// thread panics before the test's `drop_store`: a failing test leaves nothing behind either.
/// Only the panicking test's schemas: under `cargo test` one process runs many tests at once,
/// and a panic of one must not drop the schemas of the others (nor a panic on a runtime's worker
/// thread, which the test thread reports when it fails).
static SCHEMAS: std::sync::Mutex<Vec<(std::thread::ThreadId, String)>> =
    std::sync::Mutex::new(Vec::new());

pub fn drop_schemas_on_panic(schema: &str) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    SCHEMAS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((std::thread::current().id(), schema.to_owned()));
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            let panicking = std::thread::current().id();
            let schemas: Vec<String> = {
                let mut made = SCHEMAS.lock().unwrap_or_else(|p| p.into_inner());
                let (mine, others) = std::mem::take(&mut *made)
                    .into_iter()
                    .partition::<Vec<_>, _>(|(thread, _)| *thread == panicking);
                *made = others;
                mine.into_iter().map(|(_, schema)| schema).collect()
            };
            if schemas.is_empty() {
                return;
            }
            // A thread of its own, with a runtime of its own: the panicking thread may be a
            // runtime's. Best effort, and bounded: locks this process still holds time out.
            let url = database_url();
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                runtime.block_on(async {
                    let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
                        return;
                    };
                    tokio::spawn(connection);
                    for schema in schemas {
                        let _ = client
                            .batch_execute(&format!(
                                "SET lock_timeout = '3s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                            ))
                            .await;
                    }
                });
            })
            .join();
        }));
    });
}

/// A store on a schema that does not exist yet.
pub async fn unmigrated_store(options: PostgresOptions) -> PostgresStore {
    unmigrated_store_at(&database_url(), options).await
}

/// A store in a new, migrated schema of its own, connected through `url` (the database of
/// `DATABASE_URL` with other connection parameters, say).
pub async fn fresh_store_at(url: &str, options: PostgresOptions) -> PostgresStore {
    let store = unmigrated_store_at(url, options).await;
    store.migrate().await.expect("migrate a fresh schema");
    store
}

async fn unmigrated_store_at(url: &str, options: PostgresOptions) -> PostgresStore {
    let schema = format!("decider_test_{}", uuid::Uuid::new_v4().simple());
    drop_schemas_on_panic(&schema);
    PostgresStore::connect_with(url, PostgresOptions { schema, ..options })
        .await
        .unwrap_or_else(|error| {
            panic!(
                "cannot reach PostgreSQL at {url}: {error}\n\
                 Start the server (e.g. `pg_ctlcluster 15 main start`) or set DATABASE_URL to \
                 a database these tests may create schemas in."
            )
        })
}

pub async fn fresh_store() -> PostgresStore {
    fresh_store_with(PostgresOptions {
        pool_size: 8,
        ..PostgresOptions::default()
    })
    .await
}

pub async fn drop_store(store: PostgresStore) {
    store.drop_schema().await.expect("drop the test schema");
}

/// A connection of its own, outside the store's pool, for playing a second client.
pub async fn raw_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("connect a raw client");
    tokio::spawn(connection);
    client
}

/// Terminates every connection of the store in `schema` (its pool, listener and leases, all
/// named `decider:<schema>…`), never another test's; returns how many.
pub async fn terminate_connections_of(monitor: &tokio_postgres::Client, schema: &str) -> i64 {
    monitor
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 OR application_name LIKE $1 || ':%'",
            &[&format!("decider:{schema}")],
        )
        .await
        .unwrap()
        .get(0)
}
