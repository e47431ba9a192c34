//! Reads and subscriptions, one bounded page per query.
//!
//! Each page takes a pooled connection for one query and gives it back: a reader holds nothing
//! between pages, and fetches the next page only when its consumer has taken the last one.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use decider_core::{
    ContentType, Direction, EventFilter, EventStream, Metadata, Position, RecordedEvent,
    StoreError, StreamFrom, StreamId, Subscription, SubscriptionMessage, SubscriptionRetry,
};
use futures::stream;
use tokio::sync::watch;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::PostgresStore;
use crate::json::ReceivedJson;

/// The first live poll interval after activity; doubles while nothing arrives.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(1);

impl PostgresStore {
    /// Runs one page query.
    pub(crate) async fn page(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = self.query(sql, params).await?;
        rows.iter().map(row_to_event).collect()
    }

    pub(crate) fn page_size(&self, remaining: u64) -> i64 {
        i64::from(self.shared.options.page_size).min(i64::try_from(remaining).unwrap_or(i64::MAX))
    }

    /// The next page of the global log after `after`, passing `filter`.
    async fn all_page(
        &self,
        after: Option<Position>,
        filter: &EventFilter,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let (transaction, global) = position_params(after);
        let Some(partition) = filter.partition else {
            return self
                .page(
                    &self.shared.queries.read_all_page,
                    &[
                        &transaction,
                        &global,
                        &limit,
                        &filter.event_types,
                        &filter.categories,
                    ],
                )
                .await;
        };
        let query = self.partition_page(partition.count());
        let index = i64::from(partition.index());
        self.page(
            &query,
            &[
                &transaction,
                &global,
                &limit,
                &filter.event_types,
                &filter.categories,
                &index,
            ],
        )
        .await
    }
}

impl PostgresStore {
    /// The newest transaction whose committed events after `after` are held back by an older
    /// transaction still running (see [`sql::read_all_page`](crate::sql::read_all_page)).
    async fn newest_held_back(
        &self,
        after: Option<Position>,
        filter: &EventFilter,
    ) -> Result<Option<i64>, StoreError> {
        let (transaction, global) = position_params(after);
        let rows = self
            .query(
                &self.shared.queries.newest_held_back,
                &[
                    &transaction,
                    &global,
                    &filter.event_types,
                    &filter.categories,
                ],
            )
            .await?;
        Ok(rows.first().and_then(|row| row.get(0)))
    }

    /// Waits until the events committed after `after` before this call are no longer held
    /// back, so that a finite read (or the catch-up before `CaughtUp`) includes everything
    /// committed before it started. Returns at once in the common case; otherwise polls while
    /// the older transactions finish. Only transactions up to the newest one seen at the start
    /// are waited for: under a steady stream of writes, later ones never extend the wait.
    pub(crate) async fn settle(
        &self,
        after: Option<Position>,
        filter: &EventFilter,
    ) -> Result<(), StoreError> {
        let newest = self.newest_held_back(after, filter).await?;
        self.settle_up_to(newest).await
    }

    /// Waits until every transaction up to `newest` (a newest held-back transaction; `None`:
    /// none) has finished.
    pub(crate) async fn settle_up_to(&self, newest: Option<i64>) -> Result<(), StoreError> {
        let Some(newest) = newest else {
            return Ok(());
        };
        let mut interval = MIN_POLL_INTERVAL;
        loop {
            let rows = self
                .query(&self.shared.queries.released, &[&newest])
                .await?;
            if rows.first().is_some_and(|row| row.get::<_, bool>(0)) {
                return Ok(());
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(self.shared.options.max_poll_interval);
        }
    }
}

/// Query parameters of a position; `(0, 0)` lies before every real one (transaction ids start
/// at 3, identities at 1).
pub(crate) fn position_params(after: Option<Position>) -> (i64, i64) {
    after.map_or((0, 0), |p| (p.commit() as i64, p.prepare() as i64))
}

pub(crate) fn row_to_event(row: &Row) -> Result<RecordedEvent, StoreError> {
    let convert =
        |e: tokio_postgres::Error| StoreError::backend_caused_by(format!("unexpected row: {e}"), e);
    let stream: &str = row.try_get(0).map_err(convert)?;
    let revision: i64 = row.try_get(1).map_err(convert)?;
    let transaction: i64 = row.try_get(2).map_err(convert)?;
    let global: i64 = row.try_get(3).map_err(convert)?;
    let data: Option<ReceivedJson> = row.try_get(6).map_err(convert)?;
    let binary: Option<&[u8]> = row.try_get(7).map_err(convert)?;
    let metadata: ReceivedJson = row.try_get(8).map_err(convert)?;
    let stream = StreamId::new(stream).map_err(|e| {
        StoreError::backend_caused_by(format!("stored stream id is invalid: {e}"), e)
    })?;
    let metadata: Metadata = serde_json::from_slice(&metadata.0).map_err(|e| {
        StoreError::backend_caused_by(
            format!("metadata of {stream} revision {revision} does not decode: {e}"),
            e,
        )
    })?;
    let (payload, content_type) = match (data, binary) {
        (Some(json), _) => (json.0, ContentType::Json),
        (None, Some(bytes)) => (Bytes::copy_from_slice(bytes), ContentType::Binary),
        (None, None) => (Bytes::new(), ContentType::Binary),
    };
    Ok(RecordedEvent {
        stream,
        revision: revision as u64,
        position: Position::new(transaction as u64, global as u64),
        id: row.try_get(4).map_err(convert)?,
        event_type: row.try_get(5).map_err(convert)?,
        payload,
        content_type,
        metadata,
        recorded_at: row.try_get::<_, SystemTime>(9).map_err(convert)?,
    })
}

/// Where a stream read goes next.
#[derive(Debug, Clone, Copy)]
enum StreamCursor {
    /// Forward from this revision.
    Forward(i64),
    /// Backward from this revision.
    Backward(i64),
    Done,
}

struct StreamRead {
    store: PostgresStore,
    stream: StreamId,
    cursor: StreamCursor,
    remaining: u64,
    page: VecDeque<RecordedEvent>,
}

pub(crate) fn read_stream(
    store: PostgresStore,
    stream: StreamId,
    from: StreamFrom,
    direction: Direction,
    limit: Option<u64>,
) -> impl EventStream + use<> {
    let revision = |r: u64| i64::try_from(r).unwrap_or(i64::MAX);
    let cursor = match (direction, from) {
        (Direction::Forward, StreamFrom::Start) => StreamCursor::Forward(0),
        (Direction::Forward, StreamFrom::Revision(r)) => StreamCursor::Forward(revision(r)),
        (Direction::Backward, StreamFrom::End) => StreamCursor::Backward(i64::MAX),
        (Direction::Backward, StreamFrom::Revision(r)) => StreamCursor::Backward(revision(r)),
        (Direction::Forward, StreamFrom::End) | (Direction::Backward, StreamFrom::Start) => {
            StreamCursor::Done
        }
    };
    let read = StreamRead {
        store,
        stream,
        cursor,
        remaining: limit.unwrap_or(u64::MAX),
        page: VecDeque::new(),
    };
    stream::unfold(read, |mut r| async move {
        loop {
            if r.remaining == 0 {
                return None;
            }
            if let Some(event) = r.page.pop_front() {
                r.remaining -= 1;
                return Some((Ok(event), r));
            }
            let size = r.store.page_size(r.remaining);
            let (sql, from) = match r.cursor {
                StreamCursor::Forward(next) => (&r.store.shared.queries.read_stream_forward, next),
                StreamCursor::Backward(next) => {
                    (&r.store.shared.queries.read_stream_backward, next)
                }
                StreamCursor::Done => return None,
            };
            match r.store.page(sql, &[&r.stream.as_str(), &from, &size]).await {
                Err(error) => {
                    r.cursor = StreamCursor::Done;
                    return Some((Err(error), r));
                }
                Ok(events) => {
                    let full = events.len() as i64 == size;
                    r.cursor = match (r.cursor, events.last()) {
                        (StreamCursor::Forward(_), Some(last)) if full => {
                            StreamCursor::Forward(last.revision as i64 + 1)
                        }
                        (StreamCursor::Backward(_), Some(last)) if full && last.revision > 0 => {
                            StreamCursor::Backward(last.revision as i64 - 1)
                        }
                        _ => StreamCursor::Done,
                    };
                    r.page.extend(events);
                }
            }
        }
    })
}

struct AllRead {
    store: PostgresStore,
    after: Option<Position>,
    filter: EventFilter,
    remaining: u64,
    /// Whether the read has waited out transactions holding events back, once it first found
    /// no more visible events; the next empty page then ends it.
    settled: bool,
    exhausted: bool,
    page: VecDeque<RecordedEvent>,
}

pub(crate) fn read_all(
    store: PostgresStore,
    after: Option<Position>,
    limit: Option<u64>,
    filter: EventFilter,
) -> impl EventStream + use<> {
    let read = AllRead {
        store,
        after,
        filter,
        remaining: limit.unwrap_or(u64::MAX),
        settled: false,
        exhausted: false,
        page: VecDeque::new(),
    };
    stream::unfold(read, |mut r| async move {
        loop {
            if r.remaining == 0 {
                return None;
            }
            if let Some(event) = r.page.pop_front() {
                r.remaining -= 1;
                return Some((Ok(event), r));
            }
            if r.exhausted {
                return None;
            }
            let size = r.store.page_size(r.remaining);
            let fetched = match r.store.all_page(r.after, &r.filter, size).await {
                Ok(events) if events.is_empty() && !r.settled => {
                    r.settled = true;
                    r.store.settle(r.after, &r.filter).await.map(|()| events)
                }
                Ok(events) => {
                    r.exhausted = events.is_empty();
                    Ok(events)
                }
                Err(error) => Err(error),
            };
            match fetched {
                Ok(events) => {
                    r.after = events.last().map(|e| e.position).or(r.after);
                    r.page.extend(events);
                }
                Err(error) => {
                    r.exhausted = true;
                    return Some((Err(error), r));
                }
            }
        }
    })
}

/// What a subscription follows.
enum Scope {
    All {
        after: Option<Position>,
        filter: EventFilter,
    },
    Stream {
        stream: StreamId,
        next: i64,
    },
}

struct Following {
    store: PostgresStore,
    scope: Scope,
    page: VecDeque<RecordedEvent>,
    caught_up: bool,
    /// Whether the catch-up has waited out transactions holding events back.
    settled: bool,
    failed: bool,
    /// Pauses between failed queries in a row.
    retry: SubscriptionRetry,
    wake: Option<Wake>,
    poll_interval: Duration,
}

impl Drop for Following {
    fn drop(&mut self) {
        if let (Scope::Stream { stream, .. }, Some(wake)) = (&self.scope, self.wake.take()) {
            drop(wake);
            self.store.shared.live.unwatch_stream(stream.as_str());
        }
    }
}

/// What a live subscription waits on between polls.
struct Wake {
    /// `$all`: every change. A stream: this process's appends to it.
    changes: watch::Receiver<u64>,
    /// A stream: every notification from elsewhere.
    remote: Option<watch::Receiver<u64>>,
}

impl Wake {
    fn new(store: &PostgresStore, scope: &Scope) -> Self {
        match scope {
            Scope::All { .. } => Self {
                changes: store.shared.live.watch(),
                remote: None,
            },
            Scope::Stream { stream, .. } => {
                let (changes, remote) = store.shared.live.watch_stream(stream.as_str());
                Self {
                    changes,
                    remote: Some(remote),
                }
            }
        }
    }

    /// Marks what was sent so far as seen: only later changes end [`changed`](Self::changed).
    fn seen(&mut self) {
        self.changes.borrow_and_update();
        if let Some(remote) = &mut self.remote {
            remote.borrow_and_update();
        }
    }

    async fn changed(&mut self) {
        // The senders live as long as the store this subscription holds: neither ends.
        match &mut self.remote {
            None => {
                let _ = self.changes.changed().await;
            }
            Some(remote) => {
                tokio::select! {
                    _ = self.changes.changed() => {}
                    _ = remote.changed() => {}
                }
            }
        }
    }
}

pub(crate) fn subscribe_all(
    store: PostgresStore,
    after: Option<Position>,
    filter: EventFilter,
) -> impl Subscription + use<> {
    subscribe(store, Scope::All { after, filter })
}

pub(crate) fn subscribe_stream(
    store: PostgresStore,
    stream: StreamId,
    after: Option<u64>,
) -> impl Subscription + use<> {
    let next = after.map_or(0, |r| {
        i64::try_from(r).unwrap_or(i64::MAX).saturating_add(1)
    });
    subscribe(store, Scope::Stream { stream, next })
}

impl Following {
    /// After `error`: pauses and returns `Ok` if the query is worth sending again (the store
    /// was unavailable, and not for too long), or marks the subscription failed and hands the
    /// error back. Nothing has advanced, so the next query starts where the failed one did.
    async fn retry_after(&mut self, error: StoreError) -> Result<(), StoreError> {
        let outcome = self.retry.after(error).await;
        self.failed = outcome.is_err();
        outcome
    }

    /// Fetches the next page of the scope and advances past it.
    async fn fetch(&mut self) -> Result<usize, StoreError> {
        let size = i64::from(self.store.shared.options.page_size);
        let events = match &mut self.scope {
            Scope::All { after, filter } => {
                let events = self.store.all_page(*after, filter, size).await?;
                *after = events.last().map(|e| e.position).or(*after);
                events
            }
            Scope::Stream { stream, next } => {
                let sql = &self.store.shared.queries.read_stream_forward;
                let events = self
                    .store
                    .page(sql, &[&stream.as_str(), &*next, &size])
                    .await?;
                *next = events.last().map_or(*next, |e| e.revision as i64 + 1);
                events
            }
        };
        let fetched = events.len();
        self.page.extend(events);
        Ok(fetched)
    }
}

/// Catch-up then live: pages until a page comes back empty, says `CaughtUp` once, then waits for
/// a wake-up (a notification or an append of this process) or the poll interval, whichever
/// comes first, backing off while nothing arrives. An error ends the subscription after it is
/// delivered; resume from the last position handled.
fn subscribe(store: PostgresStore, scope: Scope) -> impl Subscription + use<> {
    let following = Following {
        store,
        scope,
        page: VecDeque::new(),
        caught_up: false,
        settled: false,
        failed: false,
        retry: SubscriptionRetry::default(),
        wake: None,
        poll_interval: MIN_POLL_INTERVAL,
    };
    stream::unfold(following, |mut f| async move {
        loop {
            if let Some(event) = f.page.pop_front() {
                return Some((Ok(SubscriptionMessage::Event(event)), f));
            }
            if f.failed {
                return None;
            }
            if f.wake.is_none() {
                f.wake = Some(Wake::new(&f.store, &f.scope));
            }
            // Seen before the query: a wake-up sent after this point ends the wait below.
            if let Some(wake) = &mut f.wake {
                wake.seen();
            }
            match f.fetch().await {
                Err(error) => match f.retry_after(error).await {
                    Ok(()) => continue,
                    Err(error) => return Some((Err(error), f)),
                },
                Ok(0) => f.retry.succeeded(),
                Ok(_) => {
                    f.retry.succeeded();
                    f.poll_interval = MIN_POLL_INTERVAL;
                    continue;
                }
            }
            if !f.caught_up {
                // Events committed before the subscription started but held back by an older
                // transaction belong to the catch-up: wait them out, then read on.
                if let Scope::All { after, filter } = &f.scope {
                    if let Err(error) = f.store.settle(*after, filter).await {
                        match f.retry_after(error).await {
                            Ok(()) => continue,
                            Err(error) => return Some((Err(error), f)),
                        }
                    }
                    if !f.settled {
                        f.settled = true;
                        continue;
                    }
                }
                f.caught_up = true;
                return Some((Ok(SubscriptionMessage::CaughtUp), f));
            }
            let max = f.store.shared.options.max_poll_interval;
            let wake = f.wake.as_mut()?;
            match tokio::time::timeout(f.poll_interval, wake.changed()).await {
                // Woken: poll now, and soon again in case the events are held back behind an
                // older transaction that is still open.
                Ok(_) => f.poll_interval = MIN_POLL_INTERVAL,
                Err(_) => f.poll_interval = (f.poll_interval * 2).min(max),
            }
        }
    })
}
