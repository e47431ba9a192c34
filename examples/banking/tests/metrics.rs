//! `GET /metrics` after real traffic: the numbers it shows are the ones the traffic made.
//!
//! A binary of its own: the recorder is process-wide, so no other test's commands are counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use banking::bank::TRANSFER_PROCESS;
use banking::read_model::PROJECTION;
use decider_core::{EventFilter, EventStore};
use futures::TryStreamExt;
use serde_json::json;
use support::{Server, code};

/// The samples of the text format by series, `name{a="1",b="2"}` with the labels in name order
/// (the exporter keeps the order they were recorded in; no label value here holds a comma).
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let series = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<_> = labels.trim_end_matches('}').split(',').collect();
                    labels.sort_unstable();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => series.to_owned(),
            };
            (series, value.parse().expect("a numeric value"))
        })
        .collect()
}

/// The value of `series`, `0` when it was never recorded.
fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

async fn scrape(server: &Server) -> (String, BTreeMap<String, f64>) {
    let response = server
        .client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

#[tokio::test]
async fn metrics_count_the_commands_appends_and_projected_events_of_real_traffic() {
    let handle = banking::metrics::install().unwrap();
    let running = banking::bank::in_memory();
    let bank = running.bank().clone();
    let server = Server::start_router(
        banking::http::router(bank.clone()).merge(banking::metrics::routes(handle)),
    )
    .await;

    // Five account commands: two opens, two deposits, and a withdrawal the decider refuses.
    let ada = support::open(&server, "Ada", "EUR", None).await;
    let bob = support::open(&server, "Bob", "EUR", None).await;
    for account in [&ada, &bob] {
        let deposit = server
            .post(
                &format!("/accounts/{account}/deposits"),
                json!({ "amount": 100 }),
                None,
            )
            .await;
        assert_eq!(deposit.0, 201, "{deposit:?}");
    }
    let refused = server
        .post(
            &format!("/accounts/{ada}/withdrawals"),
            json!({ "amount": 101 }),
            None,
        )
        .await;
    assert_eq!(code(&refused), "insufficient_funds", "{refused:?}");

    let (_, before) = scrape(&server).await;
    let account = |outcome: &str| {
        format!(r#"decider_commands_total{{decider="Account",outcome="{outcome}"}}"#)
    };
    assert_eq!(value(&before, &account("ok")), 4.0);
    assert_eq!(value(&before, &account("rejected")), 1.0);
    assert_eq!(
        value(
            &before,
            r#"decider_command_duration_seconds_count{decider="Account",outcome="ok"}"#
        ),
        4.0
    );

    // A transfer: its request, then the process's debit, credit and settlement on the accounts.
    support::transfer(&server, &ada, &bob, 25, "pay-bob").await;

    // The projections report per batch and measure their lag on a timer: wait (boundedly)
    // until both have handled every event they select and a measurement since found no lag
    // (a batch sets the lag in seconds to its last event's age; only a measurement zeroes it).
    let events: Vec<_> = bank
        .store()
        .read_all(None, None, &EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    let accounts_events = events
        .iter()
        .filter(|e| e.stream.as_str().starts_with("account-"))
        .count();
    let requests = events
        .iter()
        .filter(|e| e.stream.as_str().starts_with("transfer-") && e.event_type == "Requested")
        .count();
    assert_eq!(requests, 1);
    let projected =
        |name: &str| format!(r#"decider_projection_events_total{{projection="{name}"}}"#);
    let lag = |name: &str| format!(r#"decider_projection_lag_events{{projection="{name}"}}"#);
    let lag_seconds =
        |name: &str| format!(r#"decider_projection_lag_seconds{{projection="{name}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, after) = loop {
        let (text, samples) = scrape(&server).await;
        let settled = value(&samples, &projected(PROJECTION)) == accounts_events as f64
            && value(&samples, &projected(TRANSFER_PROCESS)) == requests as f64
            && samples.get(&lag(PROJECTION)) == Some(&0.0)
            && samples.get(&lag(TRANSFER_PROCESS)) == Some(&0.0)
            && samples.get(&lag_seconds(PROJECTION)) == Some(&0.0)
            && samples.get(&lag_seconds(TRANSFER_PROCESS)) == Some(&0.0);
        if settled || Instant::now() > deadline {
            break (text, samples);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("--- /metrics after the traffic ---\n{text}");

    assert_eq!(
        value(&after, &projected(PROJECTION)),
        accounts_events as f64,
        "{text}"
    );
    assert_eq!(
        value(&after, &projected(TRANSFER_PROCESS)),
        requests as f64,
        "{text}"
    );
    assert_eq!(after.get(&lag(PROJECTION)), Some(&0.0), "{text}");
    assert_eq!(after.get(&lag(TRANSFER_PROCESS)), Some(&0.0), "{text}");
    assert_eq!(after.get(&lag_seconds(PROJECTION)), Some(&0.0), "{text}");
    assert_eq!(
        after.get(&lag_seconds(TRANSFER_PROCESS)),
        Some(&0.0),
        "{text}"
    );
    for name in [PROJECTION, TRANSFER_PROCESS] {
        let state = |state: &str| {
            value(
                &after,
                &format!(r#"decider_projection_state{{projection="{name}",state="{state}"}}"#),
            )
        };
        assert_eq!(
            (state("live"), state("catching_up"), state("failed")),
            (1.0, 0.0, 0.0)
        );
        assert_eq!(
            value(
                &after,
                &format!(r#"decider_projection_dead_letters_total{{projection="{name}"}}"#)
            ),
            0.0
        );
    }

    // The transfer's three steps are account commands too; the refusal stays the only one.
    assert_eq!(value(&after, &account("ok")), 7.0, "{text}");
    assert_eq!(value(&after, &account("rejected")), 1.0, "{text}");
    // Every event in the store was appended through the metered append, and nothing else was.
    assert_eq!(
        value(&after, r#"decider_appended_events_total{store="memory"}"#),
        events.len() as f64,
        "{text}"
    );
    let appends = value(
        &after,
        r#"decider_appends_total{outcome="ok",store="memory"}"#,
    );
    assert!(appends >= 1.0 && appends <= events.len() as f64, "{text}");
    assert_eq!(
        value(
            &after,
            r#"decider_append_duration_seconds_count{store="memory"}"#
        ),
        appends
            + value(
                &after,
                r#"decider_appends_total{outcome="conflict",store="memory"}"#
            )
            + value(
                &after,
                r#"decider_appends_total{outcome="error",store="memory"}"#
            ),
        "{text}"
    );

    server.shutdown().await;
    running.stop().await.unwrap();
}
