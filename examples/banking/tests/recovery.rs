//! A `banking serve` process on PostgreSQL whose database connections are all dropped at once
//! (a failover, a connection proxy restart, an idle-connection killer) recovers by itself: no
//! projection fails, no request answers 503, transfers finish, `/health` is ok with lag 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use decider_store_postgres::PostgresOptions;
use support::scenario::{self, everything_flows, healthy, open_two_accounts};
use support::{Server, pg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_database_connections_are_terminated_recovers_by_itself() {
    let store = pg::unmigrated_store(PostgresOptions::default()).await;
    let url = pg::database_url();
    let server = Server::spawn(&["--store", &url, "--schema", store.schema()]);
    let bank = open_two_accounts(&server, "before").await;
    let first = scenario::transfer(&server, &bank, "transfer-before").await;
    assert_eq!(first.1["status"], "completed", "{first:?}");
    healthy(&server).await;

    let monitor = pg::raw_client().await;
    for round in 0..3 {
        // The scenario, narrowed to this server's own connections.
        let killed = pg::terminate_connections_of(&monitor, store.schema()).await;
        assert!(
            killed >= 3,
            "round {round}: only {killed} connections terminated"
        );
        everything_flows(&server, &bank, &format!("round-{round}")).await;
        let health = healthy(&server).await;
        assert!(
            health.1["projections"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["state"] == "live"),
            "{health:?}"
        );
    }
    assert_eq!(server.terminate().await.code(), Some(0));
    pg::drop_store(store).await;
}
