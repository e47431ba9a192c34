//! [`Metadata`], what travels beside an event (documented there).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::RecordedEvent;
use crate::trace::TraceParent;

/// Metadata of a command or an event.
///
/// Serialised as one JSON object, with the reserved keys in EventStoreDB's `$`-prefixed
/// convention (`$correlationId`, `$causationId`) so other tools read them, and user headers as
/// plain keys beside them.
///
/// What travels beside an event: correlation and causation ids, the idempotency key of the command
/// that produced it, the payload's schema version, the W3C trace context (`$traceparent`,
/// `$tracestate`), and user-defined headers.
///
/// The [`CommandHandler`](crate::CommandHandler) copies a command's metadata onto every event the
/// command produces, so a request id set at the edge of a system can be followed through every
/// event, projection and saga it causes.
///
/// ```
/// use decider_core::Metadata;
/// use uuid::Uuid;
///
/// let metadata = Metadata::default()
///     .with_correlation_id(Uuid::nil())
///     .with_idempotency_key("transfer-7")
///     .with_header("user", "ada");
/// assert_eq!(metadata.headers["user"], "ada");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Id shared by everything one request caused.
    #[serde(
        rename = "$correlationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub correlation_id: Option<Uuid>,
    /// Id of the message (command or event) that directly caused this one.
    #[serde(
        rename = "$causationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub causation_id: Option<Uuid>,
    /// Key of the command that produced the event; the handler uses it to answer a repeated
    /// command with its original outcome.
    #[serde(
        rename = "$idempotencyKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub idempotency_key: Option<String>,
    /// Version of the payload's shape, written by the codec and read by upcasters.
    /// Absent means version 1.
    #[serde(
        rename = "$schemaVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub schema_version: Option<u32>,
    /// The W3C trace context: which trace the message belongs to and which span sent it. The
    /// handler passes a command's trace on to its events, with its own span as parent. An
    /// invalid stored value reads as `None`.
    #[serde(
        rename = "$traceparent",
        default,
        deserialize_with = "crate::trace::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub trace_parent: Option<TraceParent>,
    /// The W3C `tracestate` that came with [`trace_parent`](Self::trace_parent), vendors' trace
    /// data, passed on unread.
    #[serde(
        rename = "$tracestate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub trace_state: Option<Box<str>>,
    /// The event's [tags](crate::dcb::Tag), which [queries](crate::dcb::Query) select it by.
    #[serde(rename = "$tags", default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<crate::dcb::Tag>,
    /// User-defined headers (tenant, user, source, …).
    #[serde(flatten)]
    pub headers: BTreeMap<String, String>,
}

impl Metadata {
    /// The metadata of a message caused by `event` (a saga's command, say): the event's
    /// correlation id — or, when it had none, the event's own id, so that everything it causes
    /// is correlated — the event's id as causation id, and the event's trace context, so the
    /// message stays in the event's trace (a reacting span sets itself as parent with
    /// [`TraceParent::with_parent_id`]). Nothing else is carried over: set an idempotency key or
    /// headers on the result.
    ///
    /// ```
    /// # use decider_core::{EventStore, EventData, ExpectedVersion, Metadata, StreamId};
    /// # use decider_store_memory::MemoryStore;
    /// # use uuid::Uuid;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let store = MemoryStore::new();
    /// # let stream = StreamId::new("order-1")?;
    /// # let request = Metadata::default().with_correlation_id(Uuid::from_u128(7));
    /// # let placed = EventData::json("Placed", "{}").with_metadata(request);
    /// # store.append(&stream, ExpectedVersion::NoStream, vec![placed]).await?;
    /// # let Some(event) = store.last_event(&stream).await? else { unreachable!() };
    /// let metadata = Metadata::caused_by(&event).with_idempotency_key(format!("{}/reserve", event.id));
    /// assert_eq!(metadata.correlation_id, event.metadata.correlation_id);
    /// assert_eq!(metadata.causation_id, Some(event.id));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn caused_by(event: &RecordedEvent) -> Self {
        Self {
            correlation_id: Some(event.metadata.correlation_id.unwrap_or(event.id)),
            causation_id: Some(event.id),
            trace_parent: event.metadata.trace_parent,
            trace_state: event.metadata.trace_state.clone(),
            ..Self::default()
        }
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Adds `tags` (each once, in order).
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = crate::dcb::Tag>) -> Self {
        self.tags.extend(tags);
        self.tags.sort();
        self.tags.dedup();
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the trace context.
    pub fn with_trace_parent(mut self, trace_parent: TraceParent) -> Self {
        self.trace_parent = Some(trace_parent);
        self
    }

    /// Adds a user header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_json_with_reserved_keys() {
        let metadata = Metadata::default()
            .with_correlation_id(Uuid::from_u128(1))
            .with_causation_id(Uuid::from_u128(2))
            .with_idempotency_key("k")
            .with_header("tenant", "acme");
        let json = serde_json::to_value(&metadata).unwrap();
        assert_eq!(json["$correlationId"], Uuid::from_u128(1).to_string());
        assert_eq!(json["tenant"], "acme");
        assert_eq!(serde_json::from_value::<Metadata>(json).unwrap(), metadata);
    }

    fn recorded(id: u128, metadata: Metadata) -> RecordedEvent {
        RecordedEvent {
            stream: crate::StreamId::new("order-1").unwrap(),
            revision: 0,
            position: crate::Position::new(1, 1),
            id: Uuid::from_u128(id),
            event_type: "Placed".to_owned(),
            payload: bytes::Bytes::from_static(b"{}"),
            content_type: crate::ContentType::Json,
            metadata,
            recorded_at: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn caused_by_keeps_the_correlation_and_names_the_event_as_cause() {
        let cause = recorded(
            9,
            Metadata::default()
                .with_correlation_id(Uuid::from_u128(1))
                .with_causation_id(Uuid::from_u128(2))
                .with_idempotency_key("k")
                .with_header("tenant", "acme"),
        );
        assert_eq!(
            Metadata::caused_by(&cause),
            Metadata::default()
                .with_correlation_id(Uuid::from_u128(1))
                .with_causation_id(Uuid::from_u128(9))
        );
    }

    #[test]
    fn caused_by_an_uncorrelated_event_correlates_with_the_event() {
        let cause = recorded(9, Metadata::default());
        let metadata = Metadata::caused_by(&cause);
        assert_eq!(metadata.correlation_id, Some(Uuid::from_u128(9)));
        assert_eq!(metadata.causation_id, Some(Uuid::from_u128(9)));
    }

    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_trace_context_is_stored_under_the_w3c_names() {
        let metadata = Metadata {
            trace_state: Some("congo=t61rcWkgMzE".into()),
            ..Metadata::default().with_trace_parent(TRACE.parse().unwrap())
        };
        let json = serde_json::to_value(&metadata).unwrap();
        assert_eq!(json["$traceparent"], TRACE);
        assert_eq!(json["$tracestate"], "congo=t61rcWkgMzE");
        assert!(metadata.headers.is_empty());
        assert_eq!(serde_json::from_value::<Metadata>(json).unwrap(), metadata);
    }

    #[test]
    fn metadata_without_or_with_a_broken_trace_still_decodes() {
        let old: Metadata =
            serde_json::from_str(r#"{"$correlationId":"00000000-0000-0000-0000-000000000001"}"#)
                .unwrap();
        assert_eq!(old.trace_parent, None);
        let broken: Metadata =
            serde_json::from_str(r#"{"$traceparent":"00-zz","tenant":"acme"}"#).unwrap();
        assert_eq!(broken.trace_parent, None);
        assert_eq!(broken.headers["tenant"], "acme");
    }

    #[test]
    fn caused_by_stays_in_the_events_trace() {
        let cause = recorded(
            9,
            Metadata {
                trace_state: Some("a=b".into()),
                ..Metadata::default().with_trace_parent(TRACE.parse().unwrap())
            },
        );
        let metadata = Metadata::caused_by(&cause);
        assert_eq!(metadata.trace_parent, Some(TRACE.parse().unwrap()));
        assert_eq!(metadata.trace_state.as_deref(), Some("a=b"));
    }

    #[test]
    fn empty_metadata_is_an_empty_object() {
        assert_eq!(serde_json::to_string(&Metadata::default()).unwrap(), "{}");
    }
}
