//! A [`TraceHook`] owns the span ids: what it answers is what the events name as their parent.
//! Alone in its file, because the hook is set once per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Mutex;

use decider_core::{
    CommandHandler, Decider, EventStore, Metadata, SpanId, StreamId, TraceHook, TraceParent,
    set_trace_hook,
};
use decider_store_memory::MemoryStore;
use futures::TryStreamExt;

/// Answers span id 42 and remembers the parents it was asked to continue.
struct FixedIds(&'static Mutex<Vec<TraceParent>>);

impl TraceHook for FixedIds {
    fn continue_trace(&self, _: &tracing::Span, parent: &TraceParent) -> Option<SpanId> {
        self.0.lock().unwrap().push(*parent);
        SpanId::new(42)
    }
    fn start_trace(&self, _: &tracing::Span) -> Option<TraceParent> {
        None
    }
}

struct Append;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Added {
    Added(u32),
}

impl Decider for Append {
    type Command = u32;
    type Event = Added;
    type State = ();
    type Error = Infallible;
    fn initial_state(&self) {}
    fn decide(&self, n: &u32, (): &()) -> Result<Vec<Added>, Infallible> {
        Ok(vec![Added::Added(*n), Added::Added(*n + 1)])
    }
    fn evolve(&self, (): (), _: &Added) {}
}

#[tokio::test]
async fn the_hooks_span_id_is_the_parent_the_events_name() {
    static ASKED: Mutex<Vec<TraceParent>> = Mutex::new(Vec::new());
    assert!(set_trace_hook(FixedIds(&ASKED)));
    assert!(!set_trace_hook(FixedIds(&ASKED)), "the first hook stays");
    let caller: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    let store = MemoryStore::new();
    let stream = StreamId::new("numbers-1").unwrap();
    CommandHandler::new(Append, store.clone())
        .handle_with(&stream, 7, Metadata::default().with_trace_parent(caller))
        .await
        .unwrap();

    let events: Vec<_> = store
        .read_whole_stream(&stream)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(
            event.metadata.trace_parent,
            Some(caller.with_parent_id(SpanId::new(42).unwrap()))
        );
    }
    assert_eq!(*ASKED.lock().unwrap(), [caller]);
}
