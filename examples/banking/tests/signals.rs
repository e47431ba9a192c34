//! `banking serve` stops as containers stop it: SIGTERM drains the requests in hand and the
//! projections' batches, and the process exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_requests_in_hand_and_exits_zero() {
    let server = Server::spawn(&[]);
    let opened = server
        .post(
            "/accounts",
            json!({ "owner": "Ada", "currency": "EUR" }),
            Some("open-ada"),
        )
        .await;
    assert_eq!(opened.0, 201, "{opened:?}");
    let id = opened.1["id"].as_str().unwrap().to_owned();

    // A read that waits for a position the log never reaches is in hand when SIGTERM comes.
    let waiting = tokio::spawn({
        let (client, url) = (
            server.client().clone(),
            server.url(&format!("/accounts/{id}?after=999999/999999&wait_ms=1500")),
        );
        async move {
            let started = Instant::now();
            let answer = support::answer(client.get(url).send().await.unwrap()).await;
            (answer, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    let (answer, waited) = waiting.await.unwrap();
    assert_eq!(
        answer.0, 504,
        "the request in hand got its answer: {answer:?}"
    );
    assert!(waited >= Duration::from_millis(1_400), "{waited:?}");
}
