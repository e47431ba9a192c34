//! [`Metadata`], what travels beside an event (documented there).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::RecordedEvent;

/// Metadata of a command or an event.
///
/// Serialised as one JSON object, with the reserved keys in EventStoreDB's `$`-prefixed
/// convention (`$correlationId`, `$causationId`) so other tools read them, and user headers as
/// plain keys beside them.
///
/// What travels beside an event: correlation and causation ids, the idempotency key of the command
/// that produced it, the payload's schema version, and user-defined headers.
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
    /// User-defined headers (tenant, user, source, …).
    #[serde(flatten)]
    pub headers: BTreeMap<String, String>,
}

impl Metadata {
    /// The metadata of a message caused by `event` (a saga's command, say): the event's
    /// correlation id — or, when it had none, the event's own id, so that everything it causes
    /// is correlated — and the event's id as causation id. Nothing else is carried over: set an
    /// idempotency key or headers on the result.
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

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
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

    #[test]
    fn empty_metadata_is_an_empty_object() {
        assert_eq!(serde_json::to_string(&Metadata::default()).unwrap(), "{}");
    }
}
