//! The W3C trace context through the log: a traced command's events carry its trace, and the
//! sagas and processes that react to them stay in it, in their spans and in their commands.
//!
//! Spans are captured by a small `tracing` layer; each test runs on one thread, so the
//! subscriber set for it sees the runner's tasks too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decider_core::projection::{
    CheckpointedSink, MemoryCheckpoints, MemoryDeadLetters, ProcessHandler, Projection,
    ProjectionRunner, SagaHandler, Sink,
};
use decider_core::{
    CommandHandler, Decider, Direction, EventFilter, EventStore, JsonCodec, Metadata, Process,
    ProcessStep, RecordedEvent, Refused, Saga, StreamFrom, StreamId, TraceParent,
};
use decider_store_memory::MemoryStore;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A span as the layer saw it: its name and the fields it was given, at its opening or later.
#[derive(Debug, Clone)]
struct SpanRecord {
    id: u64,
    name: &'static str,
    fields: BTreeMap<&'static str, String>,
}

impl SpanRecord {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Records every span opened while it is the default subscriber.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanRecord>>>);

impl Spans {
    fn named(&self, name: &str) -> Vec<SpanRecord> {
        let spans = self.0.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }

    /// Sets this layer over a registry as the thread's subscriber while the guard lives.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }
}

struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(SpanRecord {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(span) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }
}

/// Writes every command as the event it names.
struct Notes;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Note {
    Placed,
    Reserve,
    Reserved,
}

impl Decider for Notes {
    type Command = Note;
    type Event = Note;
    type State = Vec<Note>;
    type Error = Infallible;
    fn initial_state(&self) -> Vec<Note> {
        Vec::new()
    }
    fn decide(&self, command: &Note, _: &Vec<Note>) -> Result<Vec<Note>, Infallible> {
        Ok(vec![command.clone()])
    }
    fn evolve(&self, mut notes: Vec<Note>, note: &Note) -> Vec<Note> {
        notes.push(note.clone());
        notes
    }
}

fn stock() -> StreamId {
    StreamId::new("stock-1").unwrap()
}

fn order() -> StreamId {
    StreamId::new("order-1").unwrap()
}

/// Reserves stock for a placed order.
struct Fulfil;

impl Saga for Fulfil {
    type Event = Note;
    type Command = Note;
    fn react(&self, note: &Note) -> Vec<Note> {
        match note {
            Note::Placed => vec![Note::Reserve],
            _ => Vec::new(),
        }
    }
}

/// Reserves stock for a placed order and records that it did, on the order's stream.
struct Reservation;

impl Process for Reservation {
    type Own = Notes;
    type Target = Notes;
    type Step = ();
    fn next_step(&self, order: &StreamId, notes: &Vec<Note>) -> Option<ProcessStep<(), Note>> {
        (notes.contains(&Note::Placed) && !notes.contains(&Note::Reserved)).then(|| ProcessStep {
            step: (),
            stream: stock(),
            command: Note::Reserve,
            key: format!("{order}/reserve"),
        })
    }
    fn record(&self, (): (), _: Result<(), Refused<Infallible>>) -> Note {
        Note::Reserved
    }
}

async fn events(store: &MemoryStore, stream: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, StreamFrom::Start, Direction::Forward, None)
        .try_collect()
        .await
        .unwrap()
}

fn traced() -> Metadata {
    Metadata::default().with_trace_parent(CALLER.parse().unwrap())
}

fn trace_of(event: &RecordedEvent) -> TraceParent {
    event
        .metadata
        .trace_parent
        .unwrap_or_else(|| panic!("{} {} carries no trace", event.stream, event.revision))
}

/// Places order 1 with the caller's trace; returns the event.
async fn place(store: &MemoryStore) -> RecordedEvent {
    CommandHandler::new(Notes, store.clone())
        .handle_with(&order(), Note::Placed, traced())
        .await
        .unwrap();
    events(store, &order()).await.remove(0)
}

/// Runs `runner` until it has handled one event.
async fn run_one(runner: &ProjectionRunner<MemoryStore, impl Sink>) {
    let status = runner.status_handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watch = async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while status.get().handled < 1 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("the runner handled the event in time");
        let _ = stop.send(());
    };
    let (result, ()) = tokio::join!(
        runner.run(async {
            stopped.await.ok();
        }),
        watch
    );
    result.unwrap();
}

#[tokio::test]
async fn a_traced_command_writes_its_trace_with_its_own_span_as_parent() {
    let spans = Spans::default();
    let _capture = spans.capture();
    let store = MemoryStore::new();
    let caller: TraceParent = CALLER.parse().unwrap();

    let placed = place(&store).await;

    let trace = trace_of(&placed);
    assert_eq!(trace.trace_id, caller.trace_id);
    assert_eq!(trace.flags, caller.flags);
    assert_ne!(
        trace.parent_id, caller.parent_id,
        "the command is a span of its own"
    );
    let [command] = &spans.named("command")[..] else {
        panic!("one command span: {:?}", spans.named("command"));
    };
    assert_eq!(
        command.field("trace_id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(command.field("parent_id"), Some("00f067aa0ba902b7"));
    assert_eq!(
        command.field("span_id"),
        Some(&*trace.parent_id.to_string())
    );
}

#[tokio::test]
async fn an_untraced_command_writes_no_trace_and_its_span_has_no_trace_fields() {
    let spans = Spans::default();
    let _capture = spans.capture();
    let store = MemoryStore::new();
    CommandHandler::new(Notes, store.clone())
        .handle(&order(), Note::Placed)
        .await
        .unwrap();

    assert_eq!(
        events(&store, &order()).await[0].metadata.trace_parent,
        None
    );
    let command = &spans.named("command")[0];
    assert_eq!(command.field("trace_id"), None);
    assert!(command.field("correlation_id").is_some());
}

#[tokio::test]
async fn a_saga_reacting_to_a_traced_event_continues_its_trace() {
    let spans = Spans::default();
    let _capture = spans.capture();
    let store = MemoryStore::new();
    let placed = place(&store).await;
    let saga = SagaHandler::new(
        Fulfil,
        JsonCodec::<Note>::new(),
        CommandHandler::new(Notes, store.clone()),
        |_: &Note| stock(),
    );
    let projection =
        Projection::new("fulfil").with_filter(EventFilter::all().with_categories(["order"]));
    let sink = CheckpointedSink::new(
        saga,
        Arc::new(MemoryCheckpoints::default()),
        MemoryDeadLetters::default(),
    );
    run_one(&ProjectionRunner::new(store.clone(), projection, sink)).await;

    let cause = trace_of(&placed);
    let reserve = trace_of(&events(&store, &stock()).await[0]);
    assert_eq!(reserve.trace_id, cause.trace_id);
    let [saga] = &spans.named("saga_event")[..] else {
        panic!("one saga span: {:?}", spans.named("saga_event"));
    };
    assert_eq!(saga.field("trace_id"), Some(&*cause.trace_id.to_string()));
    assert_eq!(saga.field("parent_id"), Some(&*cause.parent_id.to_string()));
    assert_eq!(saga.field("stream"), Some("order-1"));
    // The saga's command is a child of the saga's span, and the stock event of that command.
    let command = &spans.named("command")[1];
    assert_eq!(command.field("parent_id"), saga.field("span_id"));
    assert_eq!(
        command.field("span_id"),
        Some(&*reserve.parent_id.to_string())
    );
    // The runner marks the applied event in its trace too.
    let [applied] = &spans.named("projection_event")[..] else {
        panic!(
            "one projection event: {:?}",
            spans.named("projection_event")
        );
    };
    assert_eq!(applied.field("trace_id"), saga.field("trace_id"));
    assert_eq!(applied.field("parent_id"), saga.field("parent_id"));
}

#[tokio::test]
async fn a_process_reacting_to_a_traced_event_keeps_its_steps_and_records_in_the_trace() {
    let spans = Spans::default();
    let _capture = spans.capture();
    let store = MemoryStore::new();
    let placed = place(&store).await;
    let notes = Arc::new(CommandHandler::new(Notes, store.clone()));
    let process = ProcessHandler::new(Reservation, notes.clone(), notes);
    let projection = Projection::new("reservation").with_filter(
        EventFilter::all()
            .with_categories(["order"])
            .with_event_types(["Placed"]),
    );
    let sink = CheckpointedSink::new(
        process,
        Arc::new(MemoryCheckpoints::default()),
        MemoryDeadLetters::default(),
    );
    run_one(&ProjectionRunner::new(store.clone(), projection, sink)).await;

    let cause = trace_of(&placed);
    let reserve = trace_of(&events(&store, &stock()).await[0]);
    let record = events(&store, &order()).await;
    assert_eq!(record[1].event_type, "Reserved");
    let recorded = trace_of(&record[1]);
    assert_eq!(reserve.trace_id, cause.trace_id);
    assert_eq!(recorded.trace_id, cause.trace_id);
    let [driver] = &spans.named("process_event")[..] else {
        panic!("one process span: {:?}", spans.named("process_event"));
    };
    assert_eq!(driver.field("trace_id"), Some(&*cause.trace_id.to_string()));
    assert_eq!(
        driver.field("parent_id"),
        Some(&*cause.parent_id.to_string())
    );
    // Both commands of the process (the step and its record) are its children.
    let commands = spans.named("command");
    assert_eq!(commands.len(), 3, "place, reserve, record: {commands:?}");
    for command in &commands[1..] {
        assert_eq!(command.field("parent_id"), driver.field("span_id"));
    }
}
