//! The vocabulary of an event log: stream ids, revisions, expected versions, global positions,
//! and the two shapes an event takes — [`EventData`] on its way in, [`RecordedEvent`] on its way
//! out.
//!
//! ```
//! use decider_core::{StreamId, ExpectedVersion};
//!
//! let stream = StreamId::new("account-42")?;
//! assert_eq!(stream.category(), "account");
//! // The first event of a stream is revision 0; appending the second one expects revision 0.
//! let expected = ExpectedVersion::Exact(0);
//! # let _ = expected;
//! # Ok::<(), decider_core::InvalidStreamId>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use uuid::Uuid;

use crate::metadata::Metadata;

/// The longest stream id accepted, in bytes of UTF-8.
pub const MAX_STREAM_ID_BYTES: usize = 255;

/// The name of one event stream, validated once at construction.
///
/// A stream id is non-empty, at most [`MAX_STREAM_ID_BYTES`] bytes of UTF-8, and holds no control
/// characters. Everything before the first `-` is its [category](StreamId::category), the unit
/// projections and filters select by. Cloning is cheap (the text is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

/// Why a text is not a valid [`StreamId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStreamId {
    /// The id was the empty string.
    #[error("stream id is empty")]
    Empty,
    /// The id is longer than [`MAX_STREAM_ID_BYTES`].
    #[error("stream id is {len} bytes long; the limit is {MAX_STREAM_ID_BYTES}")]
    TooLong {
        /// Length of the refused id in bytes.
        len: usize,
    },
    /// The id holds a control character (newline, NUL, escape, …).
    #[error("stream id {id:?} holds a control character at byte {index}")]
    ControlCharacter {
        /// The refused id, escaped for display.
        id: String,
        /// Byte offset of the first control character.
        index: usize,
    },
}

impl StreamId {
    /// Validates `id` and makes it a stream id.
    ///
    /// ```
    /// use decider_core::{StreamId, InvalidStreamId};
    /// assert!(StreamId::new("order-7").is_ok());
    /// assert_eq!(StreamId::new(""), Err(InvalidStreamId::Empty));
    /// assert!(matches!(StreamId::new("a\nb"), Err(InvalidStreamId::ControlCharacter { index: 1, .. })));
    /// ```
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidStreamId> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(InvalidStreamId::Empty);
        }
        if id.len() > MAX_STREAM_ID_BYTES {
            return Err(InvalidStreamId::TooLong { len: id.len() });
        }
        if let Some((index, _)) = id.char_indices().find(|(_, c)| c.is_control()) {
            return Err(InvalidStreamId::ControlCharacter {
                id: id.escape_debug().to_string(),
                index,
            });
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `-`, or the whole id when it has none.
    ///
    /// ```
    /// # use decider_core::StreamId;
    /// assert_eq!(StreamId::new("account-42-eur")?.category(), "account");
    /// assert_eq!(StreamId::new("settings")?.category(), "settings");
    /// # Ok::<(), decider_core::InvalidStreamId>(())
    /// ```
    pub fn category(&self) -> &str {
        self.0
            .split_once('-')
            .map_or(&self.0, |(category, _)| category)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(id: &str) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

/// What an append expects of its stream; a mismatch is refused with
/// [`StoreError::WrongExpectedVersion`](crate::StoreError::WrongExpectedVersion).
///
/// Revisions are 0-based: the first event of a stream is revision 0, so a stream holding three
/// events is at `Exact(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No expectation: append whatever the stream holds.
    Any,
    /// The stream must not exist (hold no event) yet.
    NoStream,
    /// The stream must exist (hold at least one event).
    StreamExists,
    /// The stream's last event must be this revision.
    Exact(u64),
}

impl ExpectedVersion {
    /// The expectation that holds for a stream whose last revision is `last` (`None`: no stream).
    pub fn from_last_revision(last: Option<u64>) -> Self {
        last.map_or(Self::NoStream, Self::Exact)
    }

    /// Whether a stream whose last revision is `last` (`None`: no stream) meets this expectation.
    pub fn is_met_by(self, last: Option<u64>) -> bool {
        match (self, last) {
            (Self::Any, _) | (Self::NoStream, None) | (Self::StreamExists, Some(_)) => true,
            (Self::Exact(expected), Some(actual)) => expected == actual,
            _ => false,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(revision) => write!(f, "revision {revision}"),
        }
    }
}

/// A place in the global log of a store: totally ordered, opaque to users.
///
/// Two `u64` parts, compared in order, so that every store's native position fits: PostgreSQL's
/// `(transaction_id, global_position)`, EventStoreDB's `(commit, prepare)`, the memory store's
/// `(n, n)`. Start positions are exclusive: reading "after" a position never returns the event at
/// it, so a checkpoint is simply the position of the last event handled.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    commit: u64,
    prepare: u64,
}

impl Position {
    /// Builds a position from a store's two native parts. Meant for store adapters; users only
    /// compare and persist positions.
    pub const fn new(commit: u64, prepare: u64) -> Self {
        Self { commit, prepare }
    }

    /// The first, major part (PostgreSQL: transaction id; EventStoreDB: commit position).
    pub const fn commit(self) -> u64 {
        self.commit
    }

    /// The second, minor part (PostgreSQL: global position; EventStoreDB: prepare position).
    pub const fn prepare(self) -> u64 {
        self.prepare
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.prepare)
    }
}

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
            id: crate::clock::IdGenerator::new_id(&crate::clock::RandomIds),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_accepts_255_bytes_and_refuses_256() {
        assert!(StreamId::new("a".repeat(255)).is_ok());
        assert_eq!(
            StreamId::new("a".repeat(256)),
            Err(InvalidStreamId::TooLong { len: 256 })
        );
    }

    #[test]
    fn stream_id_counts_bytes_not_characters() {
        // 128 two-byte characters = 256 bytes.
        assert!(matches!(
            StreamId::new("é".repeat(128)),
            Err(InvalidStreamId::TooLong { len: 256 })
        ));
    }

    #[test]
    fn stream_id_refuses_control_characters_anywhere() {
        for bad in ["\0", "a\u{7f}", "tab\there", "\u{1b}[31m", "x\u{85}"] {
            assert!(
                matches!(
                    StreamId::new(bad),
                    Err(InvalidStreamId::ControlCharacter { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn stream_id_keeps_sql_and_unicode_text_verbatim() {
        let id = StreamId::new("o'reilly-\"; DROP TABLE events; --ü").unwrap();
        assert_eq!(id.as_str(), "o'reilly-\"; DROP TABLE events; --ü");
        assert_eq!(id.category(), "o'reilly");
    }

    #[test]
    fn expected_version_matches_the_stream_state() {
        use ExpectedVersion::*;
        assert!(Any.is_met_by(None) && Any.is_met_by(Some(3)));
        assert!(NoStream.is_met_by(None) && !NoStream.is_met_by(Some(0)));
        assert!(!StreamExists.is_met_by(None) && StreamExists.is_met_by(Some(0)));
        assert!(Exact(2).is_met_by(Some(2)) && !Exact(2).is_met_by(Some(3)));
        assert!(!Exact(0).is_met_by(None));
    }

    #[test]
    fn positions_order_by_commit_then_prepare() {
        assert!(Position::new(1, 9) < Position::new(2, 0));
        assert!(Position::new(2, 0) < Position::new(2, 1));
    }
}
