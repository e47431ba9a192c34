//! Reads and subscriptions, one bounded page per query, on pooled read connections.
//!
//! Each page is one blocking task (`spawn_blocking`) that borrows a read connection and gives it
//! back: a reader holds nothing between pages and fetches the next page only when its consumer
//! has taken the last one. In WAL mode readers never wait for the writer, and a page is read in
//! one snapshot of committed transactions. Because SQLite commits one writer at a time and
//! positions are assigned inside the write lock, what a reader sees is always a prefix of the
//! global order: no event can commit behind a position already read.

use std::collections::VecDeque;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use decider_core::{
    ContentType, Direction, EventFilter, EventStream, Metadata, Position, RecordedEvent,
    StoreError, StreamFrom, StreamId, Subscription, SubscriptionMessage, SubscriptionRetry,
};
use futures::stream;
use rusqlite::{Connection, Row, params};
use uuid::Uuid;

use crate::error::store_error;
use crate::{Shared, SqliteStore, sql};

/// How often another process's commits are looked for while someone subscribes.
pub(crate) const OTHER_PROCESS_POLL: Duration = Duration::from_millis(50);

/// The longest a live subscription waits without a wake-up before it looks anyway: a safety
/// net only, wake-ups come from the writer and the cross-process watcher.
const LIVE_SAFETY_POLL: Duration = Duration::from_secs(1);

impl SqliteStore {
    /// Runs `work` on a pooled read connection, on a blocking thread: for read models of your
    /// own in the store's file. In WAL mode it never waits for the writer, and it sees the
    /// transactions committed when it starts.
    pub async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let connection = store.take_reader()?;
            let result = work(&connection);
            store.give_back_reader(connection);
            result
        })
        .await
        .map_err(|e| StoreError::backend_caused_by(format!("an SQLite read task failed: {e}"), e))?
    }

    fn take_reader(&self) -> Result<Connection, StoreError> {
        let pooled = self
            .shared
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        match pooled {
            Some(connection) => Ok(connection),
            // The file was opened at start: not getting one more connection to it now (the
            // process at its limit of open files, say) is a condition that may pass.
            None => crate::open_reader(&self.shared.path, &self.shared.options).map_err(|error| {
                StoreError::unavailable_caused_by(
                    format!("cannot open a read connection: {error}"),
                    error,
                )
            }),
        }
    }

    fn give_back_reader(&self, connection: Connection) {
        let mut readers = self
            .shared
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if readers.len() < self.shared.options.readers {
            readers.push(connection);
        }
    }

    pub(crate) fn page_size(&self, remaining: u64) -> i64 {
        i64::from(self.shared.options.page_size).min(i64::try_from(remaining).unwrap_or(i64::MAX))
    }

    async fn stream_page(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: i64,
        size: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream = stream.clone();
        self.read(move |connection| {
            let query = match direction {
                Direction::Forward => sql::read_stream_forward(),
                Direction::Backward => sql::read_stream_backward(),
            };
            let mut statement = connection.prepare_cached(&query).map_err(store_error)?;
            PageDecoder::default().page(&mut statement, params![stream.as_str(), from, size], size)
        })
        .await
    }

    pub(crate) async fn all_page(
        &self,
        after: Option<Position>,
        filter: &EventFilter,
        size: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let after = after.map_or(0, |p| i64::try_from(p.commit()).unwrap_or(i64::MAX));
        let as_json = |list: &[String]| {
            (!list.is_empty())
                .then(|| serde_json::to_string(list))
                .transpose()
                .map_err(|e| StoreError::InvalidInput(format!("filter does not serialise: {e}")))
        };
        let types = as_json(&filter.event_types)?;
        let categories = as_json(&filter.categories)?;
        let (count, index) = filter.partition.map_or((None, None), |partition| {
            (Some(partition.count()), Some(partition.index()))
        });
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(&sql::read_all_page())
                .map_err(store_error)?;
            PageDecoder::default().page(
                &mut statement,
                params![after, types, categories, size, count, index],
                size,
            )
        })
        .await
    }
}

/// Runs `statement` (selecting [`sql::EVENT_COLUMNS`]) with `params` and decodes its rows, at
/// most `size` of them.
pub(crate) fn decode_page(
    statement: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    size: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    PageDecoder::default().page(statement, params, size)
}

/// Turns the rows of a page ([`sql::read_stream_forward`] and friends) into events. Values are
/// read in place, without a copy of their own, and a page's rows mostly come in runs of one
/// stream (an append's events are consecutive), so a row of the stream before shares its id
/// instead of having it checked and allocated again. Values the code did not write (a file
/// edited by hand) are `Backend` errors, never panics.
#[derive(Default)]
struct PageDecoder {
    stream: Option<StreamId>,
}

impl PageDecoder {
    /// Runs `statement` with `params` and decodes its rows, at most `size` of them.
    fn page(
        mut self,
        statement: &mut rusqlite::CachedStatement<'_>,
        params: impl rusqlite::Params,
        size: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut rows = statement.query(params).map_err(store_error)?;
        let mut events = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(4_096));
        while let Some(row) = rows.next().map_err(store_error)? {
            events.push(self.event(row).map_err(store_error)??);
        }
        Ok(events)
    }

    fn event(&mut self, row: &Row<'_>) -> rusqlite::Result<Result<RecordedEvent, StoreError>> {
        let seq: i64 = row.get(0)?;
        let stream = text(row, 1)?;
        let revision: i64 = row.get(2)?;
        let id = blob(row, 3)?;
        let event_type = text(row, 4)?;
        let content_type: i64 = row.get(5)?;
        let payload = blob(row, 6)?;
        let metadata = text(row, 7)?;
        let recorded_at: i64 = row.get(8)?;
        let bad = |what: String| StoreError::backend(format!("event at position {seq}: {what}"));
        let decoded = (|| {
            let stream = self
                .stream_id(stream)
                .map_err(|e| bad(format!("stored stream id is invalid: {e}")))?;
            let id = Uuid::from_slice(id)
                .map_err(|e| bad(format!("stored event id is invalid: {e}")))?;
            let metadata = if metadata == sql::NO_METADATA {
                Metadata::default()
            } else {
                serde_json::from_str(metadata)
                    .map_err(|e| bad(format!("metadata does not decode: {e}")))?
            };
            let content_type = match content_type {
                0 => ContentType::Json,
                1 => ContentType::Binary,
                other => return Err(bad(format!("unknown content type {other}"))),
            };
            if seq < 1 || revision < 0 {
                return Err(bad(format!("invalid revision {revision}")));
            }
            Ok(RecordedEvent {
                stream,
                revision: revision as u64,
                position: Position::new(seq as u64, seq as u64),
                id,
                event_type: event_type.to_owned(),
                payload: Bytes::copy_from_slice(payload),
                content_type,
                metadata,
                recorded_at: SystemTime::UNIX_EPOCH
                    + Duration::from_micros(u64::try_from(recorded_at).unwrap_or(0)),
            })
        })();
        Ok(decoded)
    }

    /// The id of `stream`: the one of the row before when it is the same stream.
    fn stream_id(&mut self, stream: &str) -> Result<StreamId, decider_core::InvalidStreamId> {
        if let Some(last) = self.stream.as_ref().filter(|last| last.as_str() == stream) {
            return Ok(last.clone());
        }
        let id = StreamId::new(stream)?;
        self.stream = Some(id.clone());
        Ok(id)
    }
}

/// Column `index` of `row` as text, borrowed from the row.
fn text<'r>(row: &'r Row<'_>, index: usize) -> rusqlite::Result<&'r str> {
    let value = row.get_ref(index)?;
    value.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, value.data_type(), Box::new(e))
    })
}

/// Column `index` of `row` as bytes, borrowed from the row.
fn blob<'r>(row: &'r Row<'_>, index: usize) -> rusqlite::Result<&'r [u8]> {
    let value = row.get_ref(index)?;
    value.as_blob().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, value.data_type(), Box::new(e))
    })
}

/// Where a stream read goes next.
#[derive(Debug, Clone, Copy)]
enum StreamCursor {
    Forward(i64),
    Backward(i64),
    Done,
}

struct StreamRead {
    store: SqliteStore,
    stream: StreamId,
    cursor: StreamCursor,
    remaining: u64,
    page: VecDeque<RecordedEvent>,
}

pub(crate) fn read_stream(
    store: SqliteStore,
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
            let (direction, from) = match r.cursor {
                StreamCursor::Forward(next) => (Direction::Forward, next),
                StreamCursor::Backward(next) => (Direction::Backward, next),
                StreamCursor::Done => return None,
            };
            match r.store.stream_page(&r.stream, direction, from, size).await {
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

/// A forward read in global order after `after`, at most `limit` events, one page of
/// `fetch(store, after, size)` at a time; a short page is the last.
pub(crate) fn forward_pages<F, Fut>(
    store: SqliteStore,
    after: Option<Position>,
    limit: Option<u64>,
    fetch: F,
) -> impl EventStream + use<F, Fut>
where
    F: Fn(SqliteStore, Option<Position>, i64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send,
{
    struct Read<F> {
        store: SqliteStore,
        fetch: F,
        after: Option<Position>,
        remaining: u64,
        exhausted: bool,
        page: VecDeque<RecordedEvent>,
    }
    let read = Read {
        store,
        fetch,
        after,
        remaining: limit.unwrap_or(u64::MAX),
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
            match (r.fetch)(r.store.clone(), r.after, size).await {
                Ok(events) => {
                    r.exhausted = (events.len() as i64) < size;
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

pub(crate) fn read_all(
    store: SqliteStore,
    after: Option<Position>,
    limit: Option<u64>,
    filter: EventFilter,
) -> impl EventStream + use<> {
    forward_pages(store, after, limit, move |store, after, size| {
        let filter = filter.clone();
        async move { store.all_page(after, &filter, size).await }
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
    store: SqliteStore,
    scope: Scope,
    page: VecDeque<RecordedEvent>,
    caught_up: bool,
    failed: bool,
    /// Pauses between failed queries in a row.
    retry: SubscriptionRetry,
    wake: Option<tokio::sync::watch::Receiver<u64>>,
    /// The next page, read while this one is handed out; only after a full page (catching up,
    /// or live under load), and never more than one page ahead.
    ahead: Option<tokio::task::JoinHandle<Result<Vec<RecordedEvent>, StoreError>>>,
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            ahead.abort();
        }
    }
}

pub(crate) fn subscribe_all(
    store: SqliteStore,
    after: Option<Position>,
    filter: EventFilter,
) -> impl Subscription + use<> {
    subscribe(store, Scope::All { after, filter })
}

pub(crate) fn subscribe_stream(
    store: SqliteStore,
    stream: StreamId,
    after: Option<u64>,
) -> impl Subscription + use<> {
    let next = after.map_or(0, |r| {
        i64::try_from(r).unwrap_or(i64::MAX).saturating_add(1)
    });
    subscribe(store, Scope::Stream { stream, next })
}

impl Following {
    /// After `error`: pauses and returns `Ok` if the query is worth sending again (the failure
    /// may pass, and has not lasted too long), or marks the subscription failed and hands the
    /// error back. Nothing has advanced, so the next query starts where the failed one did.
    async fn retry_after(&mut self, error: StoreError) -> Result<(), StoreError> {
        let outcome = self.retry.after(error).await;
        self.failed = outcome.is_err();
        outcome
    }

    /// Fetches the next page of the scope and advances past it; after a full page, starts
    /// reading the one after it, so that the query runs while this page is handed out.
    async fn fetch(&mut self) -> Result<usize, StoreError> {
        let size = i64::from(self.store.shared.options.page_size);
        let events = match self.ahead.take() {
            Some(ahead) => {
                let events = ahead.await.map_err(|e| {
                    StoreError::backend_caused_by(format!("an SQLite read task failed: {e}"), e)
                })??;
                // Read before the caller last looked for wake-ups: empty, it may miss a
                // commit made since, so it is asked again.
                if events.is_empty() {
                    self.page_after(size).await?
                } else {
                    events
                }
            }
            None => self.page_after(size).await?,
        };
        match &mut self.scope {
            Scope::All { after, .. } => *after = events.last().map(|e| e.position).or(*after),
            Scope::Stream { next, .. } => {
                *next = events.last().map_or(*next, |e| e.revision as i64 + 1);
            }
        }
        let fetched = events.len();
        if fetched as i64 == size {
            self.ahead = Some(tokio::spawn(self.page_after(size)));
        }
        self.page.extend(events);
        Ok(fetched)
    }

    /// The query of the page after where the scope stands, as a future of its own.
    fn page_after(
        &self,
        size: i64,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send + 'static {
        let store = self.store.clone();
        let scope = match &self.scope {
            Scope::All { after, filter } => Scope::All {
                after: *after,
                filter: filter.clone(),
            },
            Scope::Stream { stream, next } => Scope::Stream {
                stream: stream.clone(),
                next: *next,
            },
        };
        async move {
            match scope {
                Scope::All { after, filter } => store.all_page(after, &filter, size).await,
                Scope::Stream { stream, next } => {
                    store
                        .stream_page(&stream, Direction::Forward, next, size)
                        .await
                }
            }
        }
    }
}

/// Catch-up then live: pages until a page comes back empty, says `CaughtUp` once, then waits
/// for a wake-up (a commit of this process's writer, or one of another process seen by the
/// watcher). A failed query that may pass is tried again after a pause (see
/// [`SubscriptionRetry`]); any other error, or one that lasts, ends the subscription
/// after it is delivered; resume from the last position handled.
fn subscribe(store: SqliteStore, scope: Scope) -> impl Subscription + use<> {
    let following = Following {
        store,
        scope,
        page: VecDeque::new(),
        caught_up: false,
        failed: false,
        retry: SubscriptionRetry::default(),
        wake: None,
        ahead: None,
    };
    stream::unfold(following, |mut f| async move {
        loop {
            if let Some(event) = f.page.pop_front() {
                return Some((Ok(SubscriptionMessage::Event(event)), f));
            }
            if f.failed {
                return None;
            }
            let wake = f
                .wake
                .get_or_insert_with(|| f.store.shared.appended.subscribe());
            // Seen before the query: a commit after this point ends the wait below.
            wake.borrow_and_update();
            match f.fetch().await {
                Err(error) => match f.retry_after(error).await {
                    Ok(()) => continue,
                    Err(error) => return Some((Err(error), f)),
                },
                Ok(0) => f.retry.succeeded(),
                Ok(_) => {
                    f.retry.succeeded();
                    continue;
                }
            }
            if !f.caught_up {
                f.caught_up = true;
                return Some((Ok(SubscriptionMessage::CaughtUp), f));
            }
            let wake = f.wake.as_mut()?;
            // The sender lives as long as the store this subscription holds.
            let _ = tokio::time::timeout(LIVE_SAFETY_POLL, wake.changed()).await;
        }
    })
}

/// Watches for commits of other processes (and other stores on the same file) while anyone
/// subscribes, and wakes this store's subscriptions when one happened. `PRAGMA data_version`
/// changes whenever another connection commits; reading it costs no I/O beyond the WAL index.
pub(crate) fn watch_other_processes(
    shared: Weak<Shared>,
    connection: Connection,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("decider-sqlite-watch".to_owned())
        .spawn(move || {
            let mut last: Option<i64> = None;
            loop {
                std::thread::sleep(OTHER_PROCESS_POLL);
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                if shared.appended.receiver_count() == 0 {
                    // Nobody to wake. The first look after a subscriber came wakes it once
                    // (harmless if nothing changed): a commit between its query and that look
                    // would otherwise wait for the safety poll.
                    last = None;
                    continue;
                }
                match connection.query_row("PRAGMA data_version", [], |row| row.get::<_, i64>(0)) {
                    Ok(version) => {
                        if last != Some(version) {
                            shared.appended.send_modify(|n| *n = n.wrapping_add(1));
                        }
                        last = Some(version);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "cannot read the SQLite data version");
                    }
                }
            }
        })
        .map_err(|e| {
            StoreError::backend_caused_by(format!("cannot start the SQLite watcher: {e}"), e)
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_metadata_is_written_as_the_text_read_without_a_parse() {
        // The writer serialises metadata with serde; the readers skip the parse for this text.
        assert_eq!(
            serde_json::to_string(&Metadata::default()).unwrap(),
            sql::NO_METADATA
        );
    }
}
