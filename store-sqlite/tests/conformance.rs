//! The conformance kit against SQLite, each check on a file of its own; no check ignored. It
//! runs twice: with the default pages of 1,000 events, and with pages of 2, so that every read
//! and subscription crosses pages and a subscription catching up reads a page ahead all along.

mod support;

use support::{drop_store, fresh_store};

decider_tests::conformance_tests!(fresh_store, drop_store);

/// Dynamic consistency boundaries: reads by query, conditional appends, the race checks.
mod dcb {
    use super::support::{drop_store, fresh_store};

    decider_tests::dcb_conformance_tests!(fresh_store, drop_store);
}

mod small_pages {
    use decider_store_sqlite::{SqliteOptions, SqliteStore};

    use super::support::{drop_store, fresh_store_with};

    async fn fresh_store() -> SqliteStore {
        fresh_store_with(SqliteOptions {
            page_size: 2,
            ..SqliteOptions::default()
        })
    }

    decider_tests::conformance_tests!(fresh_store, drop_store);
    decider_tests::dcb_conformance_tests!(fresh_store, drop_store);
}
