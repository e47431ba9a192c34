//! Reads and subscriptions, page by page.
//!
//! Every read holds the log's read lock for one page at a time and copies at most [`PAGE`]
//! events out (payloads are shared, not copied), so a reader never blocks writers for long and
//! never holds more than one page, however slowly it is pulled.

use std::collections::VecDeque;

use decider_core::dcb::Query;
use decider_core::{
    Direction, EventFilter, EventStream, Position, RecordedEvent, StoreError, StreamFrom, StreamId,
    Subscription, SubscriptionMessage,
};
use futures::stream;

use crate::MemoryStore;
use crate::log::{Log, index_after};

/// Events copied out of the log per lock.
const PAGE: usize = 512;

/// A forward cursor over one scope of the log.
#[derive(Debug)]
enum Scope {
    /// The global log, from this global index, keeping events that pass the filter.
    All { next: usize, filter: EventFilter },
    /// One stream, from this revision.
    Stream { stream: StreamId, next: u64 },
    /// The global log, from this global index, keeping events that match the query.
    Query { next: usize, query: Query },
}

impl Scope {
    /// Copies the next page of the scope into `into` and advances; returns how many events of
    /// the log it looked at (0: the cursor is at the head).
    fn fetch(&mut self, log: &Log, into: &mut VecDeque<RecordedEvent>) -> usize {
        match self {
            Self::All { next, filter } => fetch_global(log, next, into, |e| {
                filter.matches(&e.stream, &e.event_type)
            }),
            Self::Query { next, query } => fetch_global(log, next, into, |e| {
                query.matches(&e.event_type, &e.metadata.tags)
            }),
            Self::Stream { stream, next } => {
                let indices = log.stream(stream);
                let start = usize::try_from(*next)
                    .unwrap_or(usize::MAX)
                    .min(indices.len());
                let end = (start + PAGE).min(indices.len());
                into.extend(
                    indices[start..end]
                        .iter()
                        .filter_map(|&i| log.event(i))
                        .cloned(),
                );
                *next += (end - start) as u64;
                end - start
            }
        }
    }
}

/// Copies the events of the next page of the global log from `next` that `keep` keeps.
fn fetch_global(
    log: &Log,
    next: &mut usize,
    into: &mut VecDeque<RecordedEvent>,
    keep: impl Fn(&RecordedEvent) -> bool,
) -> usize {
    let end = next.saturating_add(PAGE).min(log.len() as usize);
    let start = (*next).min(end);
    into.extend(
        (start..end)
            .filter_map(|index| log.event(index))
            .filter(|e| keep(e))
            .cloned(),
    );
    *next = end.max(*next);
    end - start
}

/// Reads a scope forward to the head of the log as it is when reached, at most `limit` events.
struct ForwardRead {
    store: MemoryStore,
    scope: Scope,
    remaining: u64,
    page: VecDeque<RecordedEvent>,
}

impl Iterator for ForwardRead {
    type Item = Result<RecordedEvent, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.remaining > 0 {
            if let Some(event) = self.page.pop_front() {
                self.remaining -= 1;
                return Some(Ok(event));
            }
            if self.scope.fetch(&self.store.read_log(), &mut self.page) == 0 {
                return None;
            }
        }
        None
    }
}

/// Reads one stream backward from `next` down to revision 0, at most `remaining` events.
struct BackwardRead {
    store: MemoryStore,
    stream: StreamId,
    /// One past the next revision to return (0: done), resolved on the first page when the
    /// read starts at the end.
    below: Option<u64>,
    remaining: u64,
    page: VecDeque<RecordedEvent>,
}

impl Iterator for BackwardRead {
    type Item = Result<RecordedEvent, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        if self.page.is_empty() {
            let log = self.store.read_log();
            let indices = log.stream(&self.stream);
            let below = self
                .below
                .map_or(indices.len(), |b| usize::try_from(b).unwrap_or(usize::MAX))
                .min(indices.len());
            let from = below.saturating_sub(PAGE);
            self.page.extend(
                indices[from..below]
                    .iter()
                    .rev()
                    .filter_map(|&i| log.event(i))
                    .cloned(),
            );
            self.below = Some(from as u64);
        }
        let event = self.page.pop_front()?;
        self.remaining -= 1;
        Some(Ok(event))
    }
}

pub(crate) fn read_stream(
    store: MemoryStore,
    stream: StreamId,
    from: StreamFrom,
    direction: Direction,
    limit: Option<u64>,
) -> impl EventStream + use<> {
    let remaining = limit.unwrap_or(u64::MAX);
    let (forward, backward) = match (direction, from) {
        (Direction::Forward, StreamFrom::End) | (Direction::Backward, StreamFrom::Start) => {
            (None, None)
        }
        (Direction::Forward, StreamFrom::Start) => (Some(0), None),
        (Direction::Forward, StreamFrom::Revision(r)) => (Some(r), None),
        (Direction::Backward, StreamFrom::End) => (None, Some(None)),
        (Direction::Backward, StreamFrom::Revision(r)) => (None, Some(Some(r.saturating_add(1)))),
    };
    let forward = forward.map(|next| ForwardRead {
        store: store.clone(),
        scope: Scope::Stream {
            stream: stream.clone(),
            next,
        },
        remaining,
        page: VecDeque::new(),
    });
    let backward = backward.map(|below| BackwardRead {
        store,
        stream,
        below,
        remaining,
        page: VecDeque::new(),
    });
    stream::iter(
        forward
            .into_iter()
            .flatten()
            .chain(backward.into_iter().flatten()),
    )
}

pub(crate) fn read_all(
    store: MemoryStore,
    after: Option<Position>,
    limit: Option<u64>,
    filter: EventFilter,
) -> impl EventStream + use<> {
    stream::iter(ForwardRead {
        store,
        scope: Scope::All {
            next: index_after(after),
            filter,
        },
        remaining: limit.unwrap_or(u64::MAX),
        page: VecDeque::new(),
    })
}

pub(crate) fn read_query(
    store: MemoryStore,
    query: Query,
    after: Option<Position>,
    limit: Option<u64>,
) -> impl EventStream + use<> {
    stream::iter(ForwardRead {
        store,
        scope: Scope::Query {
            next: index_after(after),
            query,
        },
        remaining: limit.unwrap_or(u64::MAX),
        page: VecDeque::new(),
    })
}

pub(crate) fn subscribe_all(
    store: MemoryStore,
    after: Option<Position>,
    filter: EventFilter,
) -> impl Subscription + use<> {
    subscribe(
        store,
        Scope::All {
            next: index_after(after),
            filter,
        },
    )
}

pub(crate) fn subscribe_stream(
    store: MemoryStore,
    stream: StreamId,
    after: Option<u64>,
) -> impl Subscription + use<> {
    let next = after.map_or(0, |revision| revision.saturating_add(1));
    subscribe(store, Scope::Stream { stream, next })
}

struct Following {
    store: MemoryStore,
    head: tokio::sync::watch::Receiver<u64>,
    scope: Scope,
    page: VecDeque<RecordedEvent>,
    caught_up: bool,
}

/// Catch-up then live over `scope`: pages through the log; at the head, says `CaughtUp` once,
/// then sleeps until the head moves.
fn subscribe(store: MemoryStore, scope: Scope) -> impl Subscription + use<> {
    let head = store.watch_head();
    let following = Following {
        store,
        head,
        scope,
        page: VecDeque::new(),
        caught_up: false,
    };
    stream::unfold(following, |mut f| async move {
        loop {
            if let Some(event) = f.page.pop_front() {
                return Some((Ok(SubscriptionMessage::Event(event)), f));
            }
            // Mark the current head seen *before* reading: an append published after this
            // point wakes `changed()` below; one published before is already in the log.
            f.head.borrow_and_update();
            if f.scope.fetch(&f.store.read_log(), &mut f.page) > 0 {
                continue;
            }
            if !f.caught_up {
                f.caught_up = true;
                return Some((Ok(SubscriptionMessage::CaughtUp), f));
            }
            // The sender lives in the store this subscription holds, so this never fails while
            // the subscription exists; end the stream if it ever does.
            f.head.changed().await.ok()?;
        }
    })
}
