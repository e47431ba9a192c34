//! The database restarts under a running `banking serve`: while it is away `/health` says
//! `degraded` and writes answer 503; within seconds of its return everything flows again,
//! without a process restart.
//!
//! This test stops the machine's PostgreSQL server, so it cannot run beside other tests: it is
//! ignored in the main run and run alone by `.ci/run`'s serial step
//! (`cargo nextest run -p banking --test restart --run-ignored only`). It starts the server
//! again whatever happens (and `.ci/run` does too, from a trap).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use decider_store_postgres::PostgresOptions;
use serde_json::json;
use support::scenario::{
    RECOVERY, everything_flows, health_becomes, healthy, open_two_accounts, post_until_accepted,
    wait_for_transfer,
};
use support::{Server, code, pg};

/// Runs `pg_ctlcluster <version> main <action>` on the machine's one PostgreSQL cluster.
fn cluster(action: &str) {
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map(|dir| {
            dir.filter_map(|entry| Some(entry.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let [version] = versions.as_slice() else {
        panic!(
            "this test restarts the local PostgreSQL cluster with pg_ctlcluster, and needs \
             exactly one under /etc/postgresql (found {versions:?}); run it as root on the \
             CI machine"
        )
    };
    let status = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, "main", action])
        .status()
        .expect("run pg_ctlcluster (as root)");
    assert!(
        status.success(),
        "pg_ctlcluster {version} main {action}: {status}"
    );
}

/// Starts the database again when dropped, also when the test fails midway.
struct StartAgain;

impl Drop for StartAgain {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .args([
                "-c",
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            ])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops and starts the PostgreSQL server: run alone, as .ci/run's serial step does"]
async fn a_database_restart_under_a_running_server_heals_without_a_process_restart() {
    let store = pg::unmigrated_store(PostgresOptions::default()).await;
    let url = pg::database_url();
    let server = Server::spawn(&["--store", &url, "--schema", store.schema()]);
    let bank = open_two_accounts(&server, "before").await;
    let first = support::scenario::transfer(&server, &bank, "transfer-before").await;
    assert_eq!(first.1["status"], "completed", "{first:?}");
    healthy(&server).await;

    let restarted = StartAgain;
    cluster("stop");
    let away = Instant::now();
    let degraded = health_becomes(&server, "degraded", Duration::from_secs(20)).await;
    assert_eq!(degraded.0, 503, "{degraded:?}");
    assert_eq!(degraded.1["store"]["available"], false, "{degraded:?}");
    let refused = server
        .post(
            &format!("/accounts/{}/deposits", bank.ada),
            json!({ "amount": 5 }),
            Some("while-away"),
        )
        .await;
    assert_eq!(
        (refused.0, code(&refused)),
        (503, "store_unavailable"),
        "{refused:?}"
    );
    // Away for a few seconds, long enough for every connection and lease to be gone.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(away.elapsed())).await;
    let health = server.get("/health").await;
    assert_eq!(health.1["status"], "degraded", "{health:?}");
    cluster("start");
    let back = Instant::now();

    // A transfer requested as soon as writes are accepted again, and one deposit, go through.
    let requested = post_until_accepted(
        &server,
        "/transfers",
        json!({ "from": bank.ada, "to": bank.bob, "amount": 100, "currency": "EUR" }),
        "transfer-after-restart",
    )
    .await;
    assert_eq!(requested.0, 202, "{requested:?}");
    let transfer = wait_for_transfer(&server, requested.1["id"].as_str().unwrap()).await;
    assert_eq!(transfer.1["status"], "completed", "{transfer:?}");
    everything_flows(&server, &bank, "after-restart").await;
    let health = healthy(&server).await;
    let recovered = back.elapsed();
    eprintln!("flowing again {recovered:?} after the database came back: {health:?}");
    assert!(recovered < RECOVERY, "{recovered:?}");
    drop(restarted);

    assert_eq!(server.terminate().await.code(), Some(0));
    pg::drop_store(store).await;
}
