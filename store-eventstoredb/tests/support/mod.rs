//! Test support: stores on the protocol double (one double per test process), and on a real
//! server when `EVENTSTORE_URL` names one.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

use std::sync::OnceLock;

use decider_eventstoredb_double::ProtocolDouble;
use decider_store_eventstoredb::EventStoreDbStore;

/// The reason the real-server tests give when they are not run.
pub const REAL_SERVER: &str = "set EVENTSTORE_URL=esdb://HOST:2113?tls=false to run against a real EventStoreDB/KurrentDB server";

/// The protocol double of this test process.
pub fn double() -> &'static ProtocolDouble {
    static DOUBLE: OnceLock<ProtocolDouble> = OnceLock::new();
    DOUBLE.get_or_init(ProtocolDouble::start)
}

/// A store on the protocol double.
pub async fn store_on_double() -> EventStoreDbStore {
    EventStoreDbStore::connect(&double().url())
        .await
        .expect("connect to the protocol double")
}

/// A store on the real server of `EVENTSTORE_URL`.
pub async fn store_on_real_server() -> EventStoreDbStore {
    let url = std::env::var("EVENTSTORE_URL")
        .unwrap_or_else(|_| panic!("EVENTSTORE_URL is not set: {REAL_SERVER}"));
    EventStoreDbStore::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {url}: {error}"))
}

/// Nothing to tear down: every check writes to streams of its own.
pub async fn keep(_store: EventStoreDbStore) {}
