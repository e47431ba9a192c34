//! The W3C trace context over HTTP, on SQLite: a transfer sent with a `traceparent` is one
//! trace — its request, the debit, the credit, the process's records and the settlement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use decider_core::{EventFilter, EventStore, Position, TraceParent};
use futures::TryStreamExt;
use serde_json::json;
use support::Server;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The spans opened while it is the thread's subscriber: name and fields, in order. The test
/// runtime has one thread, so the server's and the runners' tasks report here too.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(u64, Span)>>>);

/// A span's name and fields, given at its opening or later.
type Span = (&'static str, BTreeMap<&'static str, String>);

struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let span = (attrs.metadata().name(), fields);
        self.0.lock().unwrap().push((id.into_u64(), span));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, (_, fields))) = spans.iter_mut().rev().find(|(s, _)| *s == id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn a_transfer_sent_with_a_traceparent_writes_every_event_in_that_trace() {
    let spans = Spans::default();
    let _capture =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let (running, _file) = support::sqlite_bank().await;
    let bank = running.bank().clone();
    let server = Server::start(&bank).await;
    let accounts = support::scenario::open_two_accounts(&server, "trace").await;
    let before: Position = accounts.position.parse().unwrap();
    let caller: TraceParent = CALLER.parse().unwrap();

    let response = server
        .client()
        .post(server.url("/transfers"))
        .header("traceparent", CALLER)
        .header("tracestate", "congo=t61rcWkgMzE")
        .json(&json!({
            "from": accounts.ada, "to": accounts.bob, "amount": 100, "currency": "EUR"
        }))
        .send()
        .await
        .unwrap();
    let answered: TraceParent = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        answered.trace_id, caller.trace_id,
        "the answer names the caller's trace"
    );
    assert_ne!(
        answered.parent_id, caller.parent_id,
        "and the request's own span"
    );
    let (status, body) = support::answer(response).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let done = support::scenario::wait_for_transfer(&server, id).await;
    assert_eq!(done.1["status"], "completed", "{done:?}");

    let written: Vec<_> = bank
        .store()
        .read_all(Some(before), None, &EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    let streams: BTreeSet<String> = written.iter().map(|e| e.stream.to_string()).collect();
    let expected: BTreeSet<String> = [
        format!("account-{}", accounts.ada),
        format!("account-{}", accounts.bob),
        format!("transfer-{id}"),
    ]
    .into();
    assert_eq!(streams, expected, "the transfer's streams: {written:#?}");
    assert!(
        written.len() >= 5,
        "request, debit, credit and records: {written:#?}"
    );
    for event in &written {
        let trace = event.metadata.trace_parent.unwrap_or_else(|| {
            panic!(
                "{} {} {} has no trace",
                event.stream, event.revision, event.event_type
            )
        });
        assert_eq!(trace.trace_id, caller.trace_id, "{event:?}");
        assert_eq!(
            event.metadata.trace_state.as_deref(),
            Some("congo=t61rcWkgMzE")
        );
    }
    // The request's own events name the command the request sent, not the caller.
    assert!(
        written
            .iter()
            .all(|e| e.metadata.trace_parent.unwrap().parent_id != caller.parent_id)
    );

    // The spans of the trace: the request, its command, the process's reactions and commands,
    // and the read model's applied events. Printed, to be read with `--no-capture`.
    let trace_id = caller.trace_id.to_string();
    let traced: Vec<_> = spans
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, span)| span)
        .filter(|(_, fields)| fields.get("trace_id") == Some(&trace_id))
        .cloned()
        .collect();
    for (name, fields) in &traced {
        let field = |name| fields.get(name).map_or("-", String::as_str);
        println!(
            "{name:<17} trace_id={} span_id={} parent_id={} stream={}",
            field("trace_id"),
            field("span_id"),
            field("parent_id"),
            field("stream"),
        );
    }
    let names: BTreeSet<&str> = traced.iter().map(|(name, _)| *name).collect();
    for name in ["http", "command", "process_event", "projection_event"] {
        assert!(
            names.contains(name),
            "no {name} span in the trace: {names:?}"
        );
    }
    // Every traced span but the request's has a parent in the trace.
    let ids: BTreeSet<&String> = traced
        .iter()
        .filter_map(|(_, f)| f.get("span_id"))
        .collect();
    for (name, fields) in &traced[1..] {
        assert!(
            ids.contains(&fields["parent_id"]),
            "{name} {fields:?} has no parent in the trace"
        );
    }

    server.shutdown().await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_without_a_valid_traceparent_starts_a_trace_of_its_own() {
    let running = support::memory_bank();
    let bank = running.bank().clone();
    let server = Server::start(&bank).await;
    let mut traces = Vec::new();
    for header in [
        None,
        Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
    ] {
        let mut request = server.client().get(server.url("/health"));
        if let Some(header) = header {
            request = request.header("traceparent", header);
        }
        let response = request.send().await.unwrap();
        let trace: TraceParent = response.headers()["traceparent"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(trace.sampled());
        traces.push(trace.trace_id);
    }
    assert_ne!(traces[0], traces[1]);
    server.shutdown().await;
    running.stop().await.unwrap();
}
