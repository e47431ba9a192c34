//! The conformance kit against a real EventStoreDB/KurrentDB server. Ignored unless asked for:
//! `EVENTSTORE_URL=esdb://127.0.0.1:2113?tls=false cargo nextest run -p decider-store-eventstoredb
//! --test real_server --run-ignored only`.

mod support;

use support::{keep, store_on_real_server};

decider_tests::conformance_tests!(
    store_on_real_server,
    keep,
    ignore = "set EVENTSTORE_URL=esdb://HOST:2113?tls=false to run against a real EventStoreDB/KurrentDB server"
);
