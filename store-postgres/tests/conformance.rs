//! The conformance kit against PostgreSQL, each check in a schema of its own.

mod support;

use support::{drop_store, fresh_store};

decider_tests::conformance_tests!(fresh_store, drop_store);

/// Dynamic consistency boundaries: reads by query, conditional appends, the race checks; with a
/// connection for each of the kit's 16 racers, and again with pages of 2 events, so that every
/// read by query crosses pages.
mod dcb {
    use decider_store_postgres::{PostgresOptions, PostgresStore};

    use super::support::{drop_store, fresh_store_with};

    async fn fresh_store() -> PostgresStore {
        fresh_store_with(PostgresOptions {
            pool_size: 16,
            ..PostgresOptions::default()
        })
        .await
    }

    decider_tests::dcb_conformance_tests!(fresh_store, drop_store);

    mod small_pages {
        use super::*;

        async fn fresh_store() -> PostgresStore {
            fresh_store_with(PostgresOptions {
                pool_size: 16,
                page_size: 2,
                ..PostgresOptions::default()
            })
            .await
        }

        decider_tests::dcb_conformance_tests!(fresh_store, drop_store);
    }
}
