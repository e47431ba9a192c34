//! Events as stores take and give them: [`EventData`] (where the overview is),
//! [`RecordedEvent`], [`ContentType`].

use std::time::SystemTime;

use bytes::Bytes;
use uuid::Uuid;

use crate::ids::{IdGenerator, RandomIds};
use crate::metadata::Metadata;
use crate::position::Position;
use crate::stream::StreamId;

/// How a payload is encoded. Stores keep it so that readers know whether the bytes are JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ContentType {
    /// UTF-8 JSON (the default, and what [`JsonCodec`](crate::JsonCodec) writes).
    #[default]
    Json,
    /// Opaque bytes.
    Binary,
}

/// An event on its way into a store.
///
/// Events as stores take and give them: [`EventData`] on its way in, [`RecordedEvent`] on its
/// way out, and the [`ContentType`] of their payloads.
///
/// ```
/// use decider_core::{ContentType, EventData};
///
/// let event = EventData::json("Deposited", r#"{"amount":10}"#);
/// assert_eq!(event.content_type, ContentType::Json);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EventData {
    /// Unique id of the event. Appending the same ids again is an idempotent retry.
    pub id: Uuid,
    /// The event type, e.g. `"Deposited"`.
    pub event_type: String,
    /// The encoded event.
    pub payload: Bytes,
    /// How `payload` is encoded.
    pub content_type: ContentType,
    /// Correlation, causation, idempotency key and user headers.
    pub metadata: Metadata,
}

impl EventData {
    /// A JSON event with a fresh random id and empty metadata.
    ///
    /// ```
    /// # use decider_core::EventData;
    /// let event = EventData::json("Deposited", br#"{"amount":10}"#.to_vec());
    /// assert_eq!(event.event_type, "Deposited");
    /// ```
    pub fn json(event_type: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            id: RandomIds.new_id(),
            event_type: event_type.into(),
            payload: payload.into(),
            content_type: ContentType::Json,
            metadata: Metadata::default(),
        }
    }

    /// The same event with another id.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// The same event with other metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The same event with `tags` added to its metadata.
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = crate::dcb::Tag>) -> Self {
        self.metadata = std::mem::take(&mut self.metadata).with_tags(tags);
        self
    }
}

/// An event as a store recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The stream the event belongs to.
    pub stream: StreamId,
    /// Its 0-based place in that stream.
    pub revision: u64,
    /// Its place in the store's global log.
    pub position: Position,
    /// The id it was appended with.
    pub id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The encoded event.
    pub payload: Bytes,
    /// How `payload` is encoded.
    pub content_type: ContentType,
    /// The metadata it was appended with.
    pub metadata: Metadata,
    /// When the store recorded it (the store's clock).
    pub recorded_at: SystemTime,
}
