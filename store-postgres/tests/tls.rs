//! TLS to a real server: the database of `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) with `ssl = on`, its certificate in the PEM file
//! of `PG_SSLROOTCERT` (default Debian's self-signed `/etc/ssl/certs/ssl-cert-snakeoil.pem`),
//! which names `PG_SSL_HOST` (default `localhost`) and not the host of `DATABASE_URL`.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::pin::pin;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool};
use decider_core::projection::Lease;
use decider_core::{EventFilter, EventStore, StoreError, SubscriptionMessage};
use decider_store_postgres::{ConnectionSettings, PostgresOptions, PostgresStore};
use futures::StreamExt;
use support::{database_url, drop_store, fresh_store_at, raw_client};

const DEFAULT_SERVER_CERTIFICATE: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// The projection whose lease the tests take. Short: PostgreSQL keeps 63 bytes of an
/// `application_name`, and the test schema's name already takes 53 of `decider:<schema>`.
const PROJECTION: &str = "tls";

/// The PEM file of the server's certificate (self-signed, so also its root). Panics, saying
/// what to set, when it cannot be read: these tests never skip silently.
fn server_certificate() -> String {
    let path =
        std::env::var("PG_SSLROOTCERT").unwrap_or_else(|_| DEFAULT_SERVER_CERTIFICATE.to_owned());
    if let Err(error) = std::fs::read(&path) {
        panic!(
            "cannot read the server's certificate at {path}: {error}\n\
             Set PG_SSLROOTCERT to the PEM file of the certificate (or its CA) that the server of \
             DATABASE_URL presents (its `ssl_cert_file`)."
        );
    }
    path
}

/// The database of `DATABASE_URL`, with `params` added.
fn url_with(params: &[(&str, &str)]) -> String {
    let url = database_url();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}{}", query.join("&"))
    } else {
        let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{url} {}", pairs.join(" "))
    }
}

fn options() -> PostgresOptions {
    PostgresOptions {
        pool_size: 2,
        ..PostgresOptions::default()
    }
}

/// Whether each connection of the store with `schema` is encrypted, by `application_name`.
async fn encrypted_by_name(schema: &str) -> HashMap<String, bool> {
    let monitor = raw_client().await;
    monitor
        .query(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a \
             JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE starts_with(a.application_name, $1)",
            &[&format!("decider:{schema}")],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// [`encrypted_by_name`] once all of `names` have connected (the listener connects in the
/// background).
async fn encrypted_once_connected(schema: &str, names: &[String]) -> HashMap<String, bool> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = encrypted_by_name(schema).await;
        if names.iter().all(|name| found.contains_key(name)) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all of {names:?} connected; found {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens every kind of connection the store has: the pool's (by migrating), the listener (by a
/// live subscription) and a lease; reports whether each is encrypted while they are all open.
async fn encryption_of_each_connection(store: &PostgresStore) -> HashMap<String, bool> {
    let schema = store.schema().to_owned();
    let filter = EventFilter::all();
    let mut subscription = pin!(store.subscribe_all(None, &filter));
    match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
        Ok(Some(Ok(SubscriptionMessage::CaughtUp))) => {}
        other => panic!("expected catch-up, got {other:?}"),
    }
    let lease = store.leases().unwrap().acquire(PROJECTION).await.unwrap();
    let names = [
        format!("decider:{schema}"),
        format!("decider:{schema}:listen"),
        format!("decider:{schema}:lease:{PROJECTION}"),
    ];
    let found = encrypted_once_connected(&schema, &names).await;
    drop(lease);
    names
        .into_iter()
        .map(|name| {
            let encrypted = found[&name];
            (name, encrypted)
        })
        .collect()
}

fn assert_all(encryption: &HashMap<String, bool>, expected: bool) {
    assert_eq!(encryption.len(), 3, "{encryption:?}");
    for (name, encrypted) in encryption {
        assert_eq!(*encrypted, expected, "{name}: ssl = {encrypted}");
    }
}

/// The error of connecting a store through `url`.
async fn connect_error(url: &str) -> StoreError {
    match PostgresStore::connect_with(url, options()).await {
        Ok(_) => panic!("{url} connected"),
        Err(error) => error,
    }
}

fn assert_refused_under(error: &StoreError, mode: &str) {
    match error {
        StoreError::Backend { message, .. } => {
            assert!(message.contains(&format!("sslmode={mode}")), "{message}");
            assert!(message.contains("certificate"), "{message}");
        }
        other => panic!("expected a non-retryable Backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn require_encrypts_the_pool_the_listening_and_the_lease_connections() {
    let store = fresh_store_at(&url_with(&[("sslmode", "require")]), options()).await;
    let encryption = encryption_of_each_connection(&store).await;
    assert_all(&encryption, true);
    drop_store(store).await;
}

#[tokio::test]
async fn without_sslmode_every_connection_prefers_tls_which_this_server_offers() {
    let store = fresh_store_at(&database_url(), options()).await;
    let encryption = encryption_of_each_connection(&store).await;
    assert_all(&encryption, true);
    drop_store(store).await;
}

#[tokio::test]
async fn disable_connects_every_connection_in_plaintext() {
    let store = fresh_store_at(&url_with(&[("sslmode", "disable")]), options()).await;
    let encryption = encryption_of_each_connection(&store).await;
    assert_all(&encryption, false);
    drop_store(store).await;
}

#[tokio::test]
async fn verify_ca_with_the_servers_certificate_as_root_connects_whatever_the_host_name() {
    let root = server_certificate();
    let url = url_with(&[("sslmode", "verify-ca"), ("sslrootcert", &root)]);
    let store = fresh_store_at(&url, options()).await;
    let encryption = encryption_of_each_connection(&store).await;
    assert_all(&encryption, true);
    drop_store(store).await;
}

#[tokio::test]
async fn verify_full_with_the_servers_certificate_as_root_connects_to_the_host_it_names() {
    let root = server_certificate();
    let host = std::env::var("PG_SSL_HOST").unwrap_or_else(|_| "localhost".to_owned());
    // The key=value form, so that the host can be replaced whatever DATABASE_URL says.
    let config: tokio_postgres::Config = database_url().parse().unwrap();
    let mut url = format!(
        "host={host} port={} sslmode=verify-full sslrootcert={root}",
        config.get_ports().first().copied().unwrap_or(5432)
    );
    if let Some(user) = config.get_user() {
        url.push_str(&format!(" user={user}"));
    }
    if let Some(dbname) = config.get_dbname() {
        url.push_str(&format!(" dbname={dbname}"));
    }
    if let Some(password) = config.get_password() {
        let password = String::from_utf8_lossy(password)
            .replace('\\', r"\\")
            .replace('\'', r"\'");
        url.push_str(&format!(" password='{password}'"));
    }
    let store = fresh_store_at(&url, options()).await;
    let encryption = encryption_of_each_connection(&store).await;
    assert_all(&encryption, true);
    drop_store(store).await;
}

#[tokio::test]
async fn verify_full_refuses_a_host_the_certificate_does_not_name() {
    let root = server_certificate();
    let url = url_with(&[("sslmode", "verify-full"), ("sslrootcert", &root)]);
    let error = connect_error(&url).await;
    assert_refused_under(&error, "verify-full");
    assert!(!error.is_retryable());
}

/// A self-signed root made for these tests, whose key is thrown away: it signed no server.
const UNRELATED_ROOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/unrelated-root.pem"
);

#[tokio::test]
async fn verify_ca_refuses_a_certificate_no_trusted_root_signed() {
    let url = url_with(&[("sslmode", "verify-ca"), ("sslrootcert", UNRELATED_ROOT)]);
    assert_refused_under(&connect_error(&url).await, "verify-ca");
}

/// As in libpq: `require` with a root file checks the chain like `verify-ca`.
#[tokio::test]
async fn require_with_a_root_file_checks_the_chain() {
    let url = url_with(&[("sslmode", "require"), ("sslrootcert", UNRELATED_ROOT)]);
    assert_refused_under(&connect_error(&url).await, "require");
    let root = server_certificate();
    let url = url_with(&[("sslmode", "require"), ("sslrootcert", &root)]);
    let store = fresh_store_at(&url, options()).await;
    drop_store(store).await;
}

#[tokio::test]
async fn verify_full_against_the_system_roots_refuses_a_self_signed_certificate() {
    let error = connect_error(&url_with(&[("sslmode", "verify-full")])).await;
    assert_refused_under(&error, "verify-full");
}

#[tokio::test]
async fn a_root_certificate_file_that_is_missing_is_invalid_input() {
    let url = url_with(&[
        ("sslmode", "verify-ca"),
        ("sslrootcert", "/nonexistent/decider-ca.pem"),
    ]);
    match ConnectionSettings::from_url(&url) {
        Err(StoreError::InvalidInput(message)) => {
            assert!(message.contains("/nonexistent/decider-ca.pem"), "{message}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert!(matches!(
        connect_error(&url).await,
        StoreError::InvalidInput(_)
    ));
}

#[tokio::test]
async fn an_unknown_sslmode_is_invalid_input() {
    match connect_error(&url_with(&[("sslmode", "bogus")])).await {
        StoreError::InvalidInput(message) => assert!(message.contains("sslmode"), "{message}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

/// A pool of the caller's own (here plaintext) and settings from a TLS URL: the connections
/// outside the pool follow the settings.
#[tokio::test]
async fn settings_given_with_a_pool_of_ones_own_carry_tls_to_the_listening_and_lease_connections() {
    let plain: tokio_postgres::Config = database_url().parse().unwrap();
    let manager = Manager::from_config(plain, tokio_postgres::NoTls, ManagerConfig::default());
    let pool = Pool::builder(manager).max_size(2).build().unwrap();
    let settings = ConnectionSettings::from_url(&url_with(&[("sslmode", "require")])).unwrap();
    let schema = format!("decider_test_{}", uuid::Uuid::new_v4().simple());
    support::drop_schemas_on_panic(&schema);
    let store = PostgresStore::with_pool(
        pool,
        Some(settings),
        PostgresOptions {
            schema: schema.clone(),
            ..options()
        },
    )
    .unwrap();
    store.migrate().await.unwrap();
    let filter = EventFilter::all();
    let mut subscription = pin!(store.subscribe_all(None, &filter));
    assert!(matches!(
        subscription.next().await,
        Some(Ok(SubscriptionMessage::CaughtUp))
    ));
    let lease = store.leases().unwrap().acquire(PROJECTION).await.unwrap();
    let names = [
        format!("decider:{schema}:listen"),
        format!("decider:{schema}:lease:{PROJECTION}"),
    ];
    let found = encrypted_once_connected(&schema, &names).await;
    for name in &names {
        assert!(found[name], "{name} is not encrypted: {found:?}");
    }
    drop(lease);
    drop_store(store).await;
}
