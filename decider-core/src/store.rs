//! The store contract: [`EventStore`] (where the overview is) and the types its methods take
//! and return.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};

use crate::{EventData, ExpectedVersion, Position, RecordedEvent, StreamId};

/// What a successful append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendResult {
    /// The revision the next event of the stream will get: the number of events in the stream
    /// after this append. The stream's last revision is `next_revision - 1`.
    pub next_revision: u64,
    /// Global position of the last event written.
    pub position: Position,
    /// Whether the batch was an exact repeat of an earlier append (a retry after a lost reply,
    /// or two requests racing with the same idempotency key), whose result this is: nothing was
    /// written now.
    pub repeated: bool,
}

impl AppendResult {
    /// The expectation for the next append to the same stream, if nothing else writes to it.
    pub fn next_expected_version(&self) -> ExpectedVersion {
        // A successful append wrote at least one event, so next_revision >= 1.
        ExpectedVersion::Exact(self.next_revision.saturating_sub(1))
    }
}

/// Which way a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// Where a [`read_stream`](EventStore::read_stream) starts.
///
/// `Start` lies before the first event and `End` after the last, so reading forward from `Start`
/// or backward from `End` returns the whole stream, and the other two combinations return
/// nothing. `Revision(r)` includes the event at `r`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamFrom {
    /// Before the first event.
    Start,
    /// After the last event.
    End,
    /// At this revision, inclusive.
    Revision(u64),
}

/// Which events of the global log a read or subscription returns.
///
/// Every non-empty criterion must match: an event passes when its type is one of `event_types`
/// (or that list is empty) and its stream's category is one of `categories` (or that list is
/// empty). The default filter passes everything.
///
/// ```
/// # use decider_core::EventFilter;
/// let deposits_to_accounts = EventFilter::default()
///     .with_event_types(["Deposited"])
///     .with_categories(["account"]);
/// # let _ = deposits_to_accounts;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EventFilter {
    /// Event types to pass; empty passes every type.
    pub event_types: Vec<String>,
    /// Stream categories to pass; empty passes every category.
    pub categories: Vec<String>,
    /// The partition whose streams pass; `None` passes every stream. See
    /// [`Partition`](crate::projection::Partition).
    pub partition: Option<crate::projection::Partition>,
}

impl EventFilter {
    /// A filter that passes every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Also requires one of these event types.
    pub fn with_event_types<T: Into<String>>(mut self, types: impl IntoIterator<Item = T>) -> Self {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Also requires one of these stream categories.
    pub fn with_categories<T: Into<String>>(
        mut self,
        categories: impl IntoIterator<Item = T>,
    ) -> Self {
        self.categories
            .extend(categories.into_iter().map(Into::into));
        self
    }

    /// Also requires the stream to be in `partition`.
    pub fn with_partition(mut self, partition: crate::projection::Partition) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Whether an event of `event_type` in `stream` passes.
    pub fn matches(&self, stream: &StreamId, event_type: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.categories.is_empty()
                || self.categories.iter().any(|c| c == stream.category()))
            && self
                .partition
                .is_none_or(|partition| partition.contains(stream))
    }

    /// Whether this filter passes everything.
    pub fn is_all(&self) -> bool {
        self.event_types.is_empty() && self.categories.is_empty() && self.partition.is_none()
    }
}

/// One message of a subscription.
// Nearly every message is an event: boxing it to shrink `CaughtUp` would cost an allocation per
// event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionMessage {
    /// The next event, in order.
    Event(RecordedEvent),
    /// Every event that existed when the subscription started has been delivered; what follows
    /// is live. Sent exactly once per subscription.
    CaughtUp,
}

/// The error behind a [`StoreError::Unavailable`] or [`StoreError::Backend`]: the driver's, the
/// operating system's, or a task's.
pub type ErrorSource = Arc<dyn Error + Send + Sync + 'static>;

/// Why a store refused or failed an operation.
///
/// [`Unavailable`](Self::Unavailable) and [`Backend`](Self::Backend) carry the error they come
/// from, when there is one, as their [`source`](Error::source): a report that follows the chain
/// (or a `downcast_ref` to the driver's error type) finds the driver's own error. Their message
/// already quotes it, so a log line of the error alone says what happened too.
///
/// Cloning shares the source; equality compares everything but the sources (an error value has
/// no equality of its own).
// Display and Error by hand rather than derived: a derived `source` would be the `Arc`, whose
// own `source` skips the driver's error, so the chain would show the driver's message twice and
// `downcast_ref` to the driver's type would fail.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the version the append expected; nothing was written.
    WrongExpectedVersion {
        /// The stream appended to.
        stream: StreamId,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's last revision when the append was refused (`None`: no stream).
        actual: Option<u64>,
    },
    /// A conditional append ([`DcbStore::append_if`](crate::dcb::DcbStore::append_if)) was
    /// refused: an event matching its query was appended after the position it was decided
    /// on. Nothing was written; decide again on the events read since.
    ConditionFailed {
        /// The position the condition was decided on (`None`: nothing had been read).
        after: Option<Position>,
        /// The first event appended after it that matched: its position.
        matched: Position,
        /// Its stream.
        stream: StreamId,
        /// Its type.
        event_type: String,
    },
    /// The stream was deleted and takes no more events.
    StreamDeleted {
        /// The deleted stream.
        stream: StreamId,
    },
    /// The request itself is wrong (empty append, duplicate event id, payload the store cannot
    /// hold, …); retrying it cannot succeed.
    InvalidInput(String),
    /// The store could not be reached or did not answer in time; the operation may succeed if
    /// retried. An append that fails this way may or may not have been written: retry it with
    /// the same event ids, which is idempotent.
    Unavailable {
        /// What failed.
        message: String,
        /// The error it failed with, if it came from one.
        source: Option<ErrorSource>,
    },
    /// The store failed in a way retrying will not fix.
    Backend {
        /// What failed.
        message: String,
        /// The error it failed with, if it came from one.
        source: Option<ErrorSource>,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongExpectedVersion {
                stream,
                expected,
                actual: Some(revision),
            } => write!(
                f,
                "stream {stream}: expected {expected}, but its last revision is {revision}"
            ),
            Self::WrongExpectedVersion {
                stream,
                expected,
                actual: None,
            } => write!(
                f,
                "stream {stream}: expected {expected}, but it does not exist"
            ),
            Self::ConditionFailed {
                after,
                matched,
                stream,
                event_type,
            } => {
                let after = after.map_or_else(|| "the start".to_owned(), |p| p.to_string());
                write!(
                    f,
                    "append condition failed: {event_type} at {matched} (stream {stream}) \
                     matches the query and was appended after {after}"
                )
            }
            Self::StreamDeleted { stream } => write!(f, "stream {stream} is deleted"),
            Self::InvalidInput(message) => write!(f, "invalid input: {message}"),
            Self::Unavailable { message, .. } => write!(f, "store unavailable: {message}"),
            Self::Backend { message, .. } => write!(f, "store backend error: {message}"),
        }
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Unavailable { source, .. } | Self::Backend { source, .. } => source
                .as_deref()
                .map(|source| source as &(dyn Error + 'static)),
            _ => None,
        }
    }
}

impl StoreError {
    /// [`Unavailable`](Self::Unavailable), from no other error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`Unavailable`](Self::Unavailable) because of `source` (a driver's error, say), which
    /// stays reachable as the error's [`source`](Error::source).
    pub fn unavailable_caused_by(
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// [`Backend`](Self::Backend), from no other error.
    pub fn backend(message: impl Into<String>) -> Self {
        Self::Backend {
            message: message.into(),
            source: None,
        }
    }

    /// [`Backend`](Self::Backend) because of `source`, which stays reachable as the error's
    /// [`source`](Error::source).
    pub fn backend_caused_by(
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// Whether trying the same operation again may succeed ([`StoreError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Whether this is an optimistic-concurrency conflict of a stream.
    pub fn is_wrong_expected_version(&self) -> bool {
        matches!(self, Self::WrongExpectedVersion { .. })
    }

    /// Whether this is a failed append condition (a DCB conflict).
    pub fn is_condition_failed(&self) -> bool {
        matches!(self, Self::ConditionFailed { .. })
    }
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::WrongExpectedVersion {
                    stream,
                    expected,
                    actual,
                },
                Self::WrongExpectedVersion {
                    stream: other_stream,
                    expected: other_expected,
                    actual: other_actual,
                },
            ) => stream == other_stream && expected == other_expected && actual == other_actual,
            (
                Self::ConditionFailed {
                    after,
                    matched,
                    stream,
                    event_type,
                },
                Self::ConditionFailed {
                    after: other_after,
                    matched: other_matched,
                    stream: other_stream,
                    event_type: other_type,
                },
            ) => {
                (after, matched, stream, event_type)
                    == (other_after, other_matched, other_stream, other_type)
            }
            (Self::StreamDeleted { stream }, Self::StreamDeleted { stream: other }) => {
                stream == other
            }
            (Self::InvalidInput(message), Self::InvalidInput(other)) => message == other,
            (Self::Unavailable { message, .. }, Self::Unavailable { message: other, .. })
            | (Self::Backend { message, .. }, Self::Backend { message: other, .. }) => {
                message == other
            }
            _ => false,
        }
    }
}

impl Eq for StoreError {}

/// A stream of recorded events, as returned by reads.
pub trait EventStream: Stream<Item = Result<RecordedEvent, StoreError>> + Send + 'static {}
impl<T> EventStream for T where T: Stream<Item = Result<RecordedEvent, StoreError>> + Send + 'static {}

/// A subscription: catch-up events, one [`SubscriptionMessage::CaughtUp`], then live events.
pub trait Subscription:
    Stream<Item = Result<SubscriptionMessage, StoreError>> + Send + 'static
{
}
impl<T> Subscription for T where
    T: Stream<Item = Result<SubscriptionMessage, StoreError>> + Send + 'static
{
}

/// An event store: the system of record.
///
/// # Contract
/// - [`append`](Self::append) is atomic: all events or none. It checks `expected` against the
///   stream and refuses a mismatch with [`StoreError::WrongExpectedVersion`] carrying the actual
///   version. Appending a batch that is exactly an earlier successful append to the same stream
///   (the same event ids, in the same order, no more and no fewer) returns that append's
///   original result whatever `expected` says, marked [`repeated`](AppendResult::repeated): an
///   idempotent retry after a lost reply. Any other
///   batch reusing an event id is [`StoreError::InvalidInput`]; so is an empty batch. A store
///   that cannot check every id (EventStoreDB checks them only for a retry at the original
///   `expected`) says so through [`checks_reused_ids`](Self::checks_reused_ids).
/// - Revisions are 0-based and contiguous per stream; positions are strictly increasing in the
///   order [`read_all`](Self::read_all) and [`subscribe_all`](Self::subscribe_all) deliver.
/// - Reads of a stream that does not exist return no events (not an error).
/// - Starting points of global reads and subscriptions are exclusive: `after: Some(p)` returns
///   what follows `p`; `None` starts at the beginning.
/// - A subscription delivers every event of its scope exactly once, in order, including events
///   of transactions that commit out of order, sends `CaughtUp` once when it has delivered what
///   existed when it started, then follows new events until dropped.
/// - Returned streams own what they need (`'static`): they can be moved into a task.
///
/// The contract every event store implements: atomic optimistic-concurrency appends, stream and
/// global reads, and catch-up-then-live subscriptions. `decider-tests` checks an implementation
/// against it.
///
/// Every read is a [`futures::Stream`] pulled page by page by its consumer, so nothing reads
/// ahead more than one page: a slow consumer slows its reader and never grows memory.
///
/// ```
/// use decider_core::{EventData, EventStore, ExpectedVersion, StreamFrom, Direction, StreamId};
/// use decider_store_memory::MemoryStore;
/// use futures::TryStreamExt;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let stream = StreamId::new("account-1")?;
/// let first = EventData::json("Opened", r#"{"owner":"ada"}"#);
/// let written = store.append(&stream, ExpectedVersion::NoStream, vec![first]).await?;
/// assert_eq!(written.next_revision, 1);
///
/// let events: Vec<_> = store.read_whole_stream(&stream).try_collect().await?;
/// assert_eq!(events[0].revision, 0);
/// // The same read, spelled out: from the start, oldest first, no limit.
/// let same: Vec<_> = store
///     .read_stream(&stream, StreamFrom::Start, Direction::Forward, None)
///     .try_collect()
///     .await?;
/// assert_eq!(same, events);
/// assert_eq!(store.last_event(&stream).await?, events.last().cloned());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if the stream is at `expected`.
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send;

    /// Whether [`append`](Self::append) refuses every batch that reuses an event id other than
    /// as an exact retry (the contract above). `true` for the memory and PostgreSQL stores. A
    /// store answering `false` may write such a batch again; the
    /// [`CommandHandler`](crate::CommandHandler) then searches a stream for a command's
    /// idempotency key before deciding, instead of relying on the append to catch a repeat.
    fn checks_reused_ids(&self) -> bool {
        true
    }

    /// Reads one stream from `from` in `direction`, at most `limit` events (`None`: all).
    fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamFrom,
        direction: Direction,
        limit: Option<u64>,
    ) -> impl EventStream + use<Self>;

    /// Reads the global log forward after `after` (`None`: from the start), at most `limit`
    /// events that pass `filter`.
    fn read_all(
        &self,
        after: Option<Position>,
        limit: Option<u64>,
        filter: &EventFilter,
    ) -> impl EventStream + use<Self>;

    /// Reads every event of `stream`, oldest first: [`read_stream`](Self::read_stream) from
    /// [`StreamFrom::Start`], [`Direction::Forward`], no limit.
    fn read_whole_stream(&self, stream: &StreamId) -> impl EventStream + use<Self> {
        self.read_stream(stream, StreamFrom::Start, Direction::Forward, None)
    }

    /// The newest event of `stream`; `None` when it has none: [`read_stream`](Self::read_stream)
    /// from [`StreamFrom::End`], [`Direction::Backward`], one event.
    fn last_event(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<RecordedEvent>, StoreError>> + Send {
        let newest = self.read_stream(stream, StreamFrom::End, Direction::Backward, Some(1));
        async move { std::pin::pin!(newest).try_next().await }
    }

    /// Reads every event of the global log that passes `filter`, oldest first:
    /// [`read_all`](Self::read_all) from the start, no limit.
    fn read_whole_log(&self, filter: &EventFilter) -> impl EventStream + use<Self> {
        self.read_all(None, None, filter)
    }

    /// The position of the newest event a global read would return now (`None`: empty log).
    /// Projections compare their checkpoint with it to report lag.
    fn head_position(&self) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;

    /// Follows the global log after `after` (`None`: from the start): catch-up, `CaughtUp`, live.
    fn subscribe_all(
        &self,
        after: Option<Position>,
        filter: &EventFilter,
    ) -> impl Subscription + use<Self>;

    /// Follows one stream after revision `after` (`None`: from its first event): catch-up,
    /// `CaughtUp`, live.
    fn subscribe_stream(
        &self,
        stream: &StreamId,
        after: Option<u64>,
    ) -> impl Subscription + use<Self>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_requires_every_non_empty_criterion() {
        let account = StreamId::new("account-1").unwrap();
        let order = StreamId::new("order-1").unwrap();
        let filter = EventFilter::all()
            .with_event_types(["Deposited", "Opened"])
            .with_categories(["account"]);
        assert!(filter.matches(&account, "Deposited"));
        assert!(!filter.matches(&account, "Closed"));
        assert!(!filter.matches(&order, "Deposited"));
        assert!(EventFilter::all().matches(&order, "Anything"));
    }

    #[test]
    fn wrong_expected_version_names_stream_expectation_and_actual() {
        let error = StoreError::WrongExpectedVersion {
            stream: StreamId::new("account-1").unwrap(),
            expected: ExpectedVersion::Exact(3),
            actual: Some(5),
        };
        assert_eq!(
            error.to_string(),
            "stream account-1: expected revision 3, but its last revision is 5"
        );
        assert!(!error.is_retryable());
        assert!(StoreError::unavailable("down").is_retryable());
    }

    #[test]
    fn unavailable_and_backend_errors_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = StoreError::unavailable_caused_by("cannot connect: refused", io);
        let source = error.source().expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            error.to_string(),
            "store unavailable: cannot connect: refused"
        );
        assert_eq!(error.clone(), error);
        assert!(StoreError::backend("disk full").source().is_none());
        assert_eq!(
            StoreError::backend("x"),
            StoreError::backend_caused_by("x", std::fmt::Error)
        );
        assert_ne!(StoreError::backend("x"), StoreError::unavailable("x"));
    }
}
