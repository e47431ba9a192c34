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

mod convert;
mod error;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

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

use crate::convert::{from_resolved, passes, server_filter, to_client_position, to_event_data};
use crate::error::{from_client, needs_new_client};

/// An event store on an EventStoreDB / KurrentDB server. Cheap to clone: clones share the client.
#[derive(Clone)]
pub struct EventStoreDbStore {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ClientSettings,
    client: RwLock<Client>,
}

impl fmt::Debug for EventStoreDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStoreDbStore")
            .field("hosts", &self.inner.settings.hosts())
            .finish_non_exhaustive()
    }
}

impl EventStoreDbStore {
    /// Connects to the server at `url`, a `kurrentdb` connection string such as
    /// `esdb://127.0.0.1:2113?tls=false` or `kurrentdb://admin:changeit@host:2113`.
    ///
    /// The connection itself is made by the first operation; a URL that does not parse is
    /// [`StoreError::InvalidInput`]. Must be called inside a tokio runtime, which the client's
    /// connection task runs on.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let settings: ClientSettings = url.parse().map_err(|error| {
            StoreError::InvalidInput(format!("not an EventStoreDB connection string: {error}"))
        })?;
        let client = new_client(&settings)?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                client: RwLock::new(client),
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
        let mut last =
            std::pin::pin!(self.read_stream(stream, StreamFrom::End, Direction::Backward, Some(1)));
        match last.next().await {
            Some(event) => Ok(Some(event?.revision)),
            None => Ok(None),
        }
    }
}

fn new_client(settings: &ClientSettings) -> Result<Client, StoreError> {
    Client::new(settings.clone()).map_err(|error| {
        StoreError::Backend(format!("cannot build the EventStoreDB client: {error}"))
    })
}

/// Refuses what the server would accept but the contract does not: an empty batch, and an id
/// twice in one batch.
fn validate(events: &[EventData]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::InvalidInput(
            "an append needs at least one event".to_owned(),
        ));
    }
    let mut seen = HashSet::with_capacity(events.len());
    if let Some(twice) = events.iter().find(|event| !seen.insert(event.id)) {
        return Err(StoreError::InvalidInput(format!(
            "event id {} appears twice in one append",
            twice.id
        )));
    }
    Ok(())
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

fn limit_to_count(limit: Option<u64>) -> usize {
    limit.map_or(usize::MAX, |limit| {
        usize::try_from(limit).unwrap_or(usize::MAX)
    })
}

/// What a read is doing. One per read, moved only between polls: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Reader<F> {
    Opening(std::pin::Pin<Box<F>>),
    Open(kurrentdb::ReadStream),
    Done,
}

/// Turns a client read into our stream: converts, skips what `keep` refuses, stops after
/// `limit` events, maps errors. A stream that does not exist reads as empty.
fn events_of<F, K>(
    store: EventStoreDbStore,
    stream: Option<StreamId>,
    open: F,
    keep: K,
    limit: Option<u64>,
) -> impl EventStream
where
    F: Future<Output = kurrentdb::Result<kurrentdb::ReadStream>> + Send + 'static,
    K: FnMut(&RecordedEvent) -> bool + Send + 'static,
{
    let state = (
        store,
        stream,
        Reader::Opening(Box::pin(open)),
        keep,
        limit.unwrap_or(u64::MAX),
    );
    futures::stream::unfold(
        state,
        |(store, stream, mut reader, mut keep, mut remaining)| async move {
            loop {
                if remaining == 0 {
                    return None;
                }
                let failed = match std::mem::replace(&mut reader, Reader::Done) {
                    Reader::Done => return None,
                    Reader::Opening(open) => match open.await {
                        Ok(opened) => {
                            reader = Reader::Open(opened);
                            continue;
                        }
                        Err(kurrentdb::Error::ResourceNotFound) => return None,
                        Err(error) => store.failed(error, stream.as_ref()),
                    },
                    Reader::Open(mut open) => match open.next().await {
                        Ok(Some(resolved)) => match from_resolved(&resolved) {
                            Ok(event) => {
                                reader = Reader::Open(open);
                                if !keep(&event) {
                                    continue;
                                }
                                remaining -= 1;
                                return Some((Ok(event), (store, stream, reader, keep, remaining)));
                            }
                            Err(error) => error,
                        },
                        Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => return None,
                        Err(error) => store.failed(error, stream.as_ref()),
                    },
                };
                return Some((Err(failed), (store, stream, Reader::Done, keep, remaining)));
            }
        },
    )
}

/// What a subscription is doing. One per subscription: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Follower<F> {
    Subscribing(std::pin::Pin<Box<F>>),
    Following(kurrentdb::Subscription),
    Done,
}

/// Turns a client subscription into ours: events that `keep` accepts, the server's first
/// `CaughtUp` (later ones, after a `FellBehind`, are not ours to repeat), and the first error,
/// after which the subscription ends.
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
    );
    futures::stream::unfold(
        state,
        |(store, stream, mut follower, mut keep, mut caught_up)| async move {
            loop {
                let failed = match std::mem::replace(&mut follower, Follower::Done) {
                    Follower::Done => return None,
                    Follower::Subscribing(subscribe) => {
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
                                            (store, stream, follower, keep, caught_up),
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
                                    (store, stream, follower, keep, caught_up),
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
                return Some((
                    Err(failed),
                    (store, stream, Follower::Done, keep, caught_up),
                ));
            }
        },
    )
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
        validate(&events)?;
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
        let written = match self
            .client()
            .append_to_stream(stream.as_str(), &options, data)
            .await
        {
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
        // event written back then.
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
                    return Err(StoreError::Backend(format!(
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
        let options = ReadStreamOptions::default()
            .position(position)
            .max_count(limit_to_count(limit));
        let options = match direction {
            Direction::Forward => options.forwards(),
            Direction::Backward => options.backwards(),
        };
        let client = self.client();
        let name = stream.as_str().to_owned();
        let open = async move { client.read_stream(name, &options).await };
        let limit = if nothing { Some(0) } else { limit };
        events_of(self.clone(), Some(stream.clone()), open, |_| true, limit)
    }

    fn read_all(
        &self,
        after: Option<Position>,
        limit: Option<u64>,
        filter: &EventFilter,
    ) -> impl EventStream + use<> {
        let mut options = ReadAllOptions::default().forwards().position(
            after.map_or(StreamPosition::Start, |after| {
                StreamPosition::Position(to_client_position(after))
            }),
        );
        // No `max_count`: the adapter skips events the server counts (the one at `after`, the
        // server's own `$` streams, those the prefix filter lets through but ours does not),
        // so a server-side count would return fewer than `limit` with more to come. The adapter
        // counts, and dropping the read ends it.
        if let Some(server) = server_filter(filter) {
            options = options.filter(server);
        }
        let client = self.client();
        let open = async move { client.read_all(&options).await };
        let filter = filter.clone();
        let keep = move |event: &RecordedEvent| {
            after.is_none_or(|after| event.position > after) && passes(&filter, event)
        };
        events_of(self.clone(), None, open, keep, limit)
    }

    async fn head_position(&self) -> Result<Option<Position>, StoreError> {
        let options = ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End);
        let client = self.client();
        let open = async move { client.read_all(&options).await };
        let mut newest = std::pin::pin!(events_of(
            self.clone(),
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
        let client = self.client();
        let subscribe = async move { client.subscribe_to_all(&options).await };
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
        let client = self.client();
        let name = stream.as_str().to_owned();
        let subscribe = async move { client.subscribe_to_stream(name, &options).await };
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
