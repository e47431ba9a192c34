//! # decider-store-eventstoredb
//!
//! An [`EventStore`] on EventStoreDB / KurrentDB, through the official `kurrentdb` gRPC client.
//!
//! - **Appends** map [`ExpectedVersion`] to the server's `StreamState` (`Exact(n)` is
//!   `StreamRevision(n)`; both count from 0). A conflict is
//!   [`StoreError::WrongExpectedVersion`] with the stream's actual last revision, as the server
//!   reports it. Re-appending the same event ids is idempotent where the server makes it so (see
//!   [Idempotency](#idempotency)).
//! - **Positions** are the server's `$all` positions, `(commit, prepare)`. Starts are exclusive:
//!   a `$all` read from a position includes the event at it on the server, so the adapter skips
//!   it; subscriptions already start after their position or revision.
//! - **Reads and subscriptions** are [`futures::Stream`]s over the client's gRPC streams, pulled
//!   by their consumer (HTTP/2 flow control is the backpressure). Subscriptions pass on the
//!   server's first `CaughtUp` as [`SubscriptionMessage::CaughtUp`](decider_core::SubscriptionMessage)
//!   (servers from 23.10 on send it) and ignore its checkpoints and `FellBehind`.
//! - **Filters** go to the server as prefixes of event types (or, without types, of stream ids
//!   for the categories) and are applied exactly by the adapter. The server's own events (streams
//!   starting with `$`) are never returned by `$all` reads.
//! - **Errors**: a lost connection, a stopped server, a deadline — `Unavailable`; when the
//!   client's connection task has ended, the next call builds a new client.
//!
//! ## Streams per connection
//!
//! All calls of a store (and of its clones) share one HTTP/2 connection, on which the server
//! admits a limited number of streams at once (100 on KurrentDB by default). The store keeps
//! within [`Limits`]: appends and reads in flight share one budget, subscriptions have their
//! own, so that long-lived subscriptions never hold the streams appends need; what is over a
//! budget waits. Every read runs to the server's end of it (a limited read asks the server for
//! no more than it returns, in pages when the adapter skips events) instead of being cancelled
//! halfway: the client tolerates only a bounded number of answers arriving for streams it
//! cancelled before it closes the whole connection (ADR 7). A call the server refused before
//! processing it (HTTP/2 `REFUSED_STREAM`) is sent again, up to three times in all; a read whose
//! opening failed on the transport is too, as reads are safe to repeat. An append that failed
//! on the transport is not: it may have been written, and the caller's retry (with the same
//! expectation and ids; see below) decides.
//!
//! ```no_run
//! use decider_store_eventstoredb::EventStoreDbStore;
//!
//! # async fn example() -> Result<(), decider_core::StoreError> {
//! let store = EventStoreDbStore::connect("esdb://127.0.0.1:2113?tls=false").await?;
//! # let _ = store;
//! # Ok(()) }
//! ```
//!
//! ## Idempotency
//!
//! The server answers a re-append of event ids it already holds as a success without writing
//! when the expectation is one it checks ids for: an `Exact` revision (or `NoStream`) *below*
//! the stream's last revision whose following events have exactly those ids, or `Any` /
//! `StreamExists` when the first id is one of the stream's (within the server's cache of recent
//! ids). It answers without a position; the adapter then reads the position of the last of those
//! events, so the result equals the original append's. Retrying an append with the expectation
//! it was made with is therefore idempotent. The server does **not** check ids when the
//! expectation is the stream's current revision, nor ids that another stream holds, nor parts
//! of an earlier batch that do not start at its expectation: such appends write the events
//! again. The adapter refuses what it can see without a read (an empty batch, an id twice in one
//! batch); the rest is the server's behaviour, recorded in ADR 7.
#![deny(missing_docs)]

mod budget;
mod convert;
mod error;

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use decider_core::{
    AppendResult, Direction, EventData, EventFilter, EventStore, EventStream, ExpectedVersion,
    Position, RecordedEvent, StoreError, StreamFrom, StreamId, Subscription, SubscriptionMessage,
};
use futures::StreamExt;
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscribeToAllOptions,
    SubscribeToStreamOptions, SubscriptionEvent,
};
use tokio::sync::OwnedSemaphorePermit;

use crate::budget::Budget;
pub use crate::budget::Limits;
use crate::convert::{from_resolved, passes, server_filter, to_client_position, to_event_data};
use crate::error::{from_client, needs_new_client, refused_before_start, transport_failed};

/// How often a call is sent in all when the server refused it unprocessed (or, for a read, when
/// its opening failed on the transport).
const ATTEMPTS: u32 = 3;

/// The wait before the `attempt`-th repetition (1-based): 10 ms, then 20 ms.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(10 << (attempt - 1).min(4))
}

/// An event store on an EventStoreDB / KurrentDB server. Cheap to clone: clones share the client
/// and its [`Limits`].
#[derive(Clone)]
pub struct EventStoreDbStore {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ClientSettings,
    client: RwLock<Client>,
    budget: Budget,
}

impl fmt::Debug for EventStoreDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStoreDbStore")
            .field("hosts", &self.inner.settings.hosts())
            .field("limits", &self.inner.budget.limits())
            .finish_non_exhaustive()
    }
}

impl EventStoreDbStore {
    /// Connects to the server at `url`, a `kurrentdb` connection string such as
    /// `esdb://127.0.0.1:2113?tls=false` or `kurrentdb://admin:changeit@host:2113`, with the
    /// default [`Limits`].
    ///
    /// The connection itself is made by the first operation; a URL that does not parse is
    /// [`StoreError::InvalidInput`]. Must be called inside a tokio runtime, which the client's
    /// connection task runs on.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_limits(url, Limits::default()).await
    }

    /// Connects like [`connect`](Self::connect), keeping at most `limits` streams open on the
    /// connection.
    pub async fn connect_with_limits(url: &str, limits: Limits) -> Result<Self, StoreError> {
        let settings: ClientSettings = url.parse().map_err(|error| {
            StoreError::InvalidInput(format!("not an EventStoreDB connection string: {error}"))
        })?;
        let client = new_client(&settings)?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                client: RwLock::new(client),
                budget: Budget::new(limits),
            }),
        })
    }

    fn client(&self) -> Client {
        self.inner
            .client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Maps a client error; when the client's connection task has ended, replaces the client so
    /// that the next call connects again.
    fn failed(&self, error: kurrentdb::Error, stream: Option<&StreamId>) -> StoreError {
        if needs_new_client(&error) {
            match new_client(&self.inner.settings) {
                Ok(client) => {
                    tracing::warn!(%error, "EventStoreDB connection lost; the next call reconnects");
                    *self
                        .inner
                        .client
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = client;
                }
                Err(rebuild) => tracing::error!(%rebuild, "cannot build a new EventStoreDB client"),
            }
        }
        from_client(error, stream)
    }

    /// The last revision of `stream` (`None`: no stream).
    async fn last_revision(&self, stream: &StreamId) -> Result<Option<u64>, StoreError> {
        Ok(self.last_event(stream).await?.map(|event| event.revision))
    }

    /// Sends one append, again (bounded) while the server refuses it unprocessed. The caller
    /// holds its stream permit.
    async fn send_append(
        &self,
        stream: &StreamId,
        options: &AppendToStreamOptions,
        data: Vec<kurrentdb::EventData>,
    ) -> kurrentdb::Result<kurrentdb::WriteResult> {
        let mut attempt = 1;
        loop {
            let sent = self
                .client()
                .append_to_stream(stream.as_str(), options, data.clone())
                .await;
            match sent {
                // Never processed, so sending it again cannot write it twice.
                Err(error) if refused_before_start(&error) && attempt < ATTEMPTS => {
                    tracing::debug!(%error, %stream, attempt, "EventStoreDB refused an append unprocessed; sending it again");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                sent => return sent,
            }
        }
    }
}

fn new_client(settings: &ClientSettings) -> Result<Client, StoreError> {
    Client::new(settings.clone()).map_err(|error| {
        let message = format!("cannot build the EventStoreDB client: {error}");
        // An `eyre::Report` is no `std::error::Error` itself, but converts into a boxed one.
        let source: Box<dyn std::error::Error + Send + Sync> = error.into();
        StoreError::Backend {
            message,
            source: Some(source.into()),
        }
    })
}

/// The server's stream state for `expected`; `None` for an `Exact` revision the server cannot
/// represent (above `i64::MAX`: its unchecked conversion to a signed revision would turn it into
/// `NoStream`, `Any` or `StreamExists`).
fn stream_state(expected: ExpectedVersion) -> Option<StreamState> {
    match expected {
        ExpectedVersion::Any => Some(StreamState::Any),
        ExpectedVersion::NoStream => Some(StreamState::NoStream),
        ExpectedVersion::StreamExists => Some(StreamState::StreamExists),
        ExpectedVersion::Exact(revision) if i64::try_from(revision).is_ok() => {
            Some(StreamState::StreamRevision(revision))
        }
        ExpectedVersion::Exact(_) => None,
    }
}

/// What a read is doing. One per read, moved only between polls: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Reader<F> {
    /// No page is open: the next one is to be asked for.
    Idle,
    Opening(Pin<Box<F>>),
    Open(kurrentdb::ReadStream),
    Done,
}

/// One read: the pages it asks the server for, what it has returned, and its stream permit.
///
/// The server is never asked for more events than the read still returns (`remaining`, plus
/// the event at a resumed page's start, which the server sends again): a limited read thus
/// reaches the end of the server's answer when it has returned its last event, and reads that
/// end (its trailers) before returning it, instead of cancelling the call. When the adapter
/// skipped events of a full page (the server's own, those only the prefix filter let through),
/// the read asks for a next page after the last event the server sent.
struct Read<O, F, K> {
    store: EventStoreDbStore,
    stream: Option<StreamId>,
    open: O,
    keep: K,
    reader: Reader<F>,
    /// Events still to return (`u64::MAX`: no limit).
    remaining: u64,
    /// The count the current page asked for (`usize::MAX`: no limit), how many events the
    /// server has sent on it, and the position it starts at when resumed (or when a read of
    /// `$all` starts at a position): the server sends the event there again.
    asked: usize,
    sent: usize,
    start: Option<Position>,
    /// How often the current page's opening has been sent.
    attempt: u32,
    /// The position of the last event the server sent.
    last: Option<Position>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<O, F, K> Read<O, F, K>
where
    O: FnMut(Option<Position>, usize) -> F,
    F: Future<Output = kurrentdb::Result<kurrentdb::ReadStream>>,
    K: FnMut(&RecordedEvent) -> bool,
{
    fn page_size(&self, resumed: bool) -> usize {
        if self.remaining == u64::MAX {
            return usize::MAX;
        }
        let wanted = self.remaining.saturating_add(u64::from(resumed));
        usize::try_from(wanted).unwrap_or(usize::MAX)
    }

    fn open_page(&mut self) {
        self.asked = self.page_size(self.start.is_some());
        self.sent = 0;
        self.reader = Reader::Opening(Box::pin((self.open)(self.start, self.asked)));
    }

    /// The next event, or the error that ends the read, or `None` at its end.
    async fn next(&mut self) -> Option<Result<RecordedEvent, StoreError>> {
        loop {
            if self.remaining == 0 {
                self.finish();
                return None;
            }
            let failed = match std::mem::replace(&mut self.reader, Reader::Done) {
                Reader::Done => return None,
                Reader::Idle => {
                    if self.permit.is_none() {
                        match self.store.inner.budget.call().await {
                            Ok(permit) => self.permit = Some(permit),
                            Err(error) => {
                                self.finish();
                                return Some(Err(error));
                            }
                        }
                    }
                    self.attempt = 1;
                    self.open_page();
                    continue;
                }
                Reader::Opening(open) => match open.await {
                    Ok(opened) => {
                        self.reader = Reader::Open(opened);
                        continue;
                    }
                    Err(kurrentdb::Error::ResourceNotFound) => {
                        self.finish();
                        return None;
                    }
                    // Nothing of this page has been returned, and reads change nothing: asking
                    // again is safe whether or not the server saw the first request.
                    Err(error) if transport_failed(&error) && self.attempt < ATTEMPTS => {
                        tracing::debug!(%error, attempt = self.attempt, "an EventStoreDB read failed to open; asking again");
                        tokio::time::sleep(backoff(self.attempt)).await;
                        self.attempt += 1;
                        self.open_page();
                        continue;
                    }
                    Err(error) => self.store.failed(error, self.stream.as_ref()),
                },
                Reader::Open(mut open) => match open.next().await {
                    Ok(Some(resolved)) => match from_resolved(&resolved) {
                        Ok(event) => {
                            self.sent += 1;
                            self.last = Some(event.position);
                            let again = self.sent == 1 && self.start == Some(event.position);
                            if again || !(self.keep)(&event) {
                                self.reader = Reader::Open(open);
                                continue;
                            }
                            self.remaining -= 1;
                            if self.remaining == 0 {
                                // The server has sent (about) all it was asked for: read its end
                                // so that the call completes rather than being cancelled.
                                drain(open).await;
                                self.finish();
                            } else {
                                self.reader = Reader::Open(open);
                            }
                            return Some(Ok(event));
                        }
                        Err(error) => error,
                    },
                    Ok(None) if self.sent == self.asked && self.asked != usize::MAX => {
                        // A full page, some of it skipped: the rest follows the last event sent.
                        self.start = self.last;
                        self.reader = Reader::Idle;
                        continue;
                    }
                    Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => {
                        self.finish();
                        return None;
                    }
                    Err(error) => self.store.failed(error, self.stream.as_ref()),
                },
            };
            self.finish();
            return Some(Err(failed));
        }
    }

    fn finish(&mut self) {
        self.reader = Reader::Done;
        self.permit = None;
    }
}

/// Reads the rest of a page the adapter needs nothing more of, to its end: at most the one event
/// a resumed page may hold beyond the count (when its start was not an event), then the trailers.
async fn drain(mut open: kurrentdb::ReadStream) {
    loop {
        match open.next().await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "the end of an EventStoreDB read failed after its last event");
                return;
            }
        }
    }
}

/// Turns client reads into our stream: `open(start, max_count)` asks for a page (from `start`
/// when resuming, else from the read's own start point), which is converted, filtered by
/// `keep`, limited to `limit` events, with errors mapped. A stream that does not exist reads as
/// empty. `start` is where a read of `$all` starts (the server sends the event there too).
fn events_of<O, F, K>(
    store: EventStoreDbStore,
    stream: Option<StreamId>,
    start: Option<Position>,
    open: O,
    keep: K,
    limit: Option<u64>,
) -> impl EventStream
where
    O: FnMut(Option<Position>, usize) -> F + Send + 'static,
    F: Future<Output = kurrentdb::Result<kurrentdb::ReadStream>> + Send + 'static,
    K: FnMut(&RecordedEvent) -> bool + Send + 'static,
{
    let read = Read {
        store,
        stream,
        open,
        keep,
        reader: Reader::Idle,
        remaining: limit.unwrap_or(u64::MAX),
        asked: 0,
        sent: 0,
        start,
        attempt: 1,
        last: None,
        permit: None,
    };
    futures::stream::unfold(read, |mut read| async move {
        let next = read.next().await?;
        Some((next, read))
    })
}

/// What a subscription is doing. One per subscription: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Follower<F> {
    Subscribing(Pin<Box<F>>),
    Following(kurrentdb::Subscription),
    Done,
}

/// Turns a client subscription into ours: events that `keep` accepts, the server's first
/// `CaughtUp` (later ones, after a `FellBehind`, are not ours to repeat), and the first error,
/// after which the subscription ends. It holds a stream of the subscription budget for its life,
/// waiting for one before it subscribes.
fn messages_of<F, K>(
    store: EventStoreDbStore,
    stream: Option<StreamId>,
    subscribe: F,
    keep: K,
) -> impl Subscription
where
    F: Future<Output = kurrentdb::Subscription> + Send + 'static,
    K: FnMut(&RecordedEvent) -> bool + Send + 'static,
{
    let state = (
        store,
        stream,
        Follower::Subscribing(Box::pin(subscribe)),
        keep,
        false,
        None::<OwnedSemaphorePermit>,
    );
    futures::stream::unfold(
        state,
        |(store, stream, mut follower, mut keep, mut caught_up, mut permit)| async move {
            loop {
                let failed = match std::mem::replace(&mut follower, Follower::Done) {
                    Follower::Done => return None,
                    Follower::Subscribing(subscribe) => {
                        match store.inner.budget.subscription().await {
                            Ok(granted) => permit = Some(granted),
                            Err(error) => {
                                return Some((
                                    Err(error),
                                    (store, stream, Follower::Done, keep, caught_up, None),
                                ));
                            }
                        }
                        follower = Follower::Following(subscribe.await);
                        continue;
                    }
                    Follower::Following(mut subscription) => {
                        match subscription.next_subscription_event().await {
                            Ok(SubscriptionEvent::EventAppeared(resolved)) => {
                                match from_resolved(&resolved) {
                                    Ok(event) => {
                                        follower = Follower::Following(subscription);
                                        if !keep(&event) {
                                            continue;
                                        }
                                        let message = SubscriptionMessage::Event(event);
                                        return Some((
                                            Ok(message),
                                            (store, stream, follower, keep, caught_up, permit),
                                        ));
                                    }
                                    Err(error) => error,
                                }
                            }
                            Ok(SubscriptionEvent::CaughtUp(_)) if !caught_up => {
                                caught_up = true;
                                follower = Follower::Following(subscription);
                                let message = SubscriptionMessage::CaughtUp;
                                return Some((
                                    Ok(message),
                                    (store, stream, follower, keep, caught_up, permit),
                                ));
                            }
                            Ok(_) => {
                                follower = Follower::Following(subscription);
                                continue;
                            }
                            Err(error) => store.failed(error, stream.as_ref()),
                        }
                    }
                };
                // The subscription is over: its stream goes back to the budget now, not when
                // its consumer drops it.
                drop(permit);
                return Some((
                    Err(failed),
                    (store, stream, Follower::Done, keep, caught_up, None),
                ));
            }
        },
    )
}

impl EventStoreDbStore {
    /// [`EventStore::append`] without its metrics, which [`decider_core::measured_append`]
    /// records around it.
    async fn append_unmeasured(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        // What the server would accept but the contract does not (an empty batch, an id twice
        // in one, text other stores cannot hold) is refused as on every store.
        decider_core::check_append(stream, &events)?;
        let Some(state) = stream_state(expected) else {
            // No stream can have such a revision: a conflict, reported with the real state.
            let actual = self.last_revision(stream).await?;
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        };
        let data = events
            .iter()
            .map(to_event_data)
            .collect::<Result<Vec<_>, _>>()?;
        let options = AppendToStreamOptions::default().stream_state(state);
        let sent = {
            let _stream = self.inner.budget.call().await?;
            self.send_append(stream, &options, data).await
        };
        let written = match sent {
            Ok(written) => written,
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                return Err(StoreError::WrongExpectedVersion {
                    stream: stream.clone(),
                    expected,
                    actual: match current {
                        CurrentRevision::Current(revision) => Some(revision),
                        CurrentRevision::NoStream => None,
                    },
                });
            }
            Err(error) => return Err(self.failed(error, Some(stream))),
        };
        let last = written.next_expected_version;
        // The server answers an idempotent re-append without a position, which the client
        // reports as 0/0 (where no event of a real log lies): the position is that of the last
        // event written back then. (The append's stream permit is released by now: this read
        // takes its own, so appends waiting for permits cannot starve it.)
        let repeated = written.position == kurrentdb::Position::start();
        let position = if repeated {
            let mut at = std::pin::pin!(self.read_stream(
                stream,
                StreamFrom::Revision(last),
                Direction::Forward,
                Some(1)
            ));
            match at.next().await {
                Some(event) => event?.position,
                None => {
                    return Err(StoreError::backend(format!(
                        "EventStoreDB reported {stream} revision {last} as written, but it cannot be read"
                    )));
                }
            }
        } else {
            Position::new(written.position.commit, written.position.prepare)
        };
        Ok(AppendResult {
            next_revision: last + 1,
            position,
            repeated,
        })
    }
}

impl EventStore for EventStoreDbStore {
    /// The server checks event ids only for a retry at the original expected version (see ADR
    /// 7): a repeat appended at the stream's current revision is written again.
    fn checks_reused_ids(&self) -> bool {
        false
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        decider_core::measured_append(
            "eventstoredb",
            events.len(),
            self.append_unmeasured(stream, expected, events),
        )
        .await
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamFrom,
        direction: Direction,
        limit: Option<u64>,
    ) -> impl EventStream + use<> {
        // Before the first event backwards, after the last one forwards: nothing, by our
        // contract (the server would read revision 0 backwards from its "start").
        let nothing = matches!(
            (from, direction),
            (StreamFrom::Start, Direction::Backward) | (StreamFrom::End, Direction::Forward)
        ) || limit == Some(0);
        let position = match from {
            StreamFrom::Start => StreamPosition::Start,
            StreamFrom::End => StreamPosition::End,
            StreamFrom::Revision(revision) => StreamPosition::Position(revision),
        };
        let options = ReadStreamOptions::default().position(position);
        let options = match direction {
            Direction::Forward => options.forwards(),
            Direction::Backward => options.backwards(),
        };
        let store = self.clone();
        let name = stream.as_str().to_owned();
        // Every event the server sends is returned, so a stream read is one page: never resumed.
        let open = move |_resume: Option<Position>, count: usize| {
            let client = store.client();
            let options = options.clone().max_count(count);
            let name = name.clone();
            async move { client.read_stream(name, &options).await }
        };
        let limit = if nothing { Some(0) } else { limit };
        events_of(
            self.clone(),
            Some(stream.clone()),
            None,
            open,
            |_| true,
            limit,
        )
    }

    fn read_all(
        &self,
        after: Option<Position>,
        limit: Option<u64>,
        filter: &EventFilter,
    ) -> impl EventStream + use<> {
        let mut options = ReadAllOptions::default().forwards();
        // The server counts what the adapter skips (the event at the start, the server's own
        // `$` streams, those the prefix filter lets through but ours does not): `events_of`
        // asks for the next page when a full one was partly skipped.
        if let Some(server) = server_filter(filter) {
            options = options.filter(server);
        }
        let store = self.clone();
        let open = move |start: Option<Position>, count: usize| {
            let client = store.client();
            let options = options
                .clone()
                .position(start.map_or(StreamPosition::Start, |start| {
                    StreamPosition::Position(to_client_position(start))
                }))
                .max_count(count);
            async move { client.read_all(&options).await }
        };
        let filter = filter.clone();
        let keep = move |event: &RecordedEvent| {
            after.is_none_or(|after| event.position > after) && passes(&filter, event)
        };
        events_of(self.clone(), None, after, open, keep, limit)
    }

    async fn head_position(&self) -> Result<Option<Position>, StoreError> {
        let store = self.clone();
        let open = move |start: Option<Position>, count: usize| {
            let client = store.client();
            let options = ReadAllOptions::default()
                .backwards()
                .position(start.map_or(StreamPosition::End, |start| {
                    StreamPosition::Position(to_client_position(start))
                }))
                .max_count(count);
            async move { client.read_all(&options).await }
        };
        let mut newest = std::pin::pin!(events_of(
            self.clone(),
            None,
            None,
            open,
            |event| passes(&EventFilter::all(), event),
            Some(1)
        ));
        match newest.next().await {
            Some(event) => Ok(Some(event?.position)),
            None => Ok(None),
        }
    }

    fn subscribe_all(
        &self,
        after: Option<Position>,
        filter: &EventFilter,
    ) -> impl Subscription + use<> {
        let mut options = SubscribeToAllOptions::default().position(
            after.map_or(StreamPosition::Start, |after| {
                StreamPosition::Position(to_client_position(after))
            }),
        );
        if let Some(server) = server_filter(filter) {
            options = options.filter(server);
        }
        let store = self.clone();
        let subscribe = async move { store.client().subscribe_to_all(&options).await };
        let filter = filter.clone();
        // The server starts after `after`; the guard also keeps a repeated event out.
        let mut last = after;
        let keep = move |event: &RecordedEvent| {
            let fresh = last.is_none_or(|last| event.position > last);
            if fresh {
                last = Some(event.position);
            }
            fresh && passes(&filter, event)
        };
        messages_of(self.clone(), None, subscribe, keep)
    }

    fn subscribe_stream(&self, stream: &StreamId, after: Option<u64>) -> impl Subscription + use<> {
        let options = SubscribeToStreamOptions::default()
            .start_from(after.map_or(StreamPosition::Start, StreamPosition::Position));
        let store = self.clone();
        let name = stream.as_str().to_owned();
        let subscribe = async move { store.client().subscribe_to_stream(name, &options).await };
        let mut last = after;
        let keep = move |event: &RecordedEvent| {
            let fresh = last.is_none_or(|last| event.revision > last);
            if fresh {
                last = Some(event.revision);
            }
            fresh
        };
        messages_of(self.clone(), Some(stream.clone()), subscribe, keep)
    }
}
