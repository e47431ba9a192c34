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
    let store = unmigrated_store(options).await;
    store.migrate().await.expect("migrate a fresh schema");
    store
}

/// A store on a schema that does not exist yet.
pub async fn unmigrated_store(options: PostgresOptions) -> PostgresStore {
    let url = database_url();
    let schema = format!("decider_test_{}", uuid::Uuid::new_v4().simple());
    PostgresStore::connect_with(&url, PostgresOptions { schema, ..options })
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
