//! The writer: one thread owning the one write connection, fed by a channel.
//!
//! SQLite admits one writer at a time anyway; a thread of our own keeps its blocking calls off
//! the async runtime's workers and lets it **group commit**: every append queued when the
//! writer looks is written in one transaction, so one `fsync` serves them all. Each append
//! keeps its own outcome: it runs inside a `SAVEPOINT`, and a conflict (or any refusal) rolls
//! back only that savepoint. With nothing queued an append commits alone, at once — the writer
//! never lingers to wait for company.
//!
//! When the group's transaction itself fails (a full disk, say), nothing of it is written, and
//! each of its appends is tried again alone, so that one append's failure is never another's.
//! Only when the write lock is held by another process past the busy timeout do they all fail
//! at once, with `Unavailable`: alone, each would wait as long again.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};
use std::time::SystemTime;

use bytes::Bytes;
use decider_core::{
    AppendResult, ContentType, EventData, ExpectedVersion, Position, StoreError, StreamId,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::error::{is_retryable, is_unique_violation, store_error};
use crate::sql;

/// The most appends one group transaction takes, so that a flood of appends still commits (and
/// answers) in bounded steps.
const MAX_GROUP: usize = 512;

/// An event checked and encoded for the `events` table.
#[derive(Debug)]
pub(crate) struct PreparedEvent {
    id: Uuid,
    event_type: String,
    payload: Bytes,
    content_type: ContentType,
    metadata: String,
    /// Its tags, also in `metadata`: rows of `event_tags` too, for reads by query.
    tags: Vec<String>,
}

/// Checks a batch ([`decider_core::check_append`]) and encodes it, before it is queued.
pub(crate) fn prepare(
    stream: &StreamId,
    events: Vec<EventData>,
) -> Result<Vec<PreparedEvent>, StoreError> {
    decider_core::check_append(stream, &events)?;
    let mut prepared = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        let refuse = |why: String| {
            StoreError::InvalidInput(format!(
                "event {index} ({:?}, id {}) of the append to {stream}: {why}",
                event.event_type, event.id
            ))
        };
        let metadata = serde_json::to_string(&event.metadata)
            .map_err(|e| refuse(format!("the metadata does not serialise: {e}")))?;
        let tags = event
            .metadata
            .tags
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect();
        prepared.push(PreparedEvent {
            id: event.id,
            event_type: event.event_type,
            payload: event.payload,
            content_type: event.content_type,
            metadata,
            tags,
        });
    }
    Ok(prepared)
}

/// Work that runs on the write connection, on the writer thread.
pub(crate) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

struct PendingAppend {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<PreparedEvent>,
    /// The condition of a conditional append, checked under the write lock before its rows
    /// are inserted.
    condition: Option<Condition>,
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

enum Request {
    Append(PendingAppend),
    Job(Job),
}

/// The handle of the writer thread; the thread ends when the last handle is dropped.
#[derive(Debug)]
pub(crate) struct Writer {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Append(_) => "Append",
            Self::Job(_) => "Job",
        })
    }
}

fn writer_gone() -> StoreError {
    StoreError::unavailable("the SQLite writer thread has stopped")
}

impl Writer {
    /// Starts the writer thread on `connection`; `appended` is bumped after every commit that
    /// wrote events, to wake this process's subscriptions.
    pub(crate) fn start(
        connection: Connection,
        appended: Arc<watch::Sender<u64>>,
    ) -> Result<Self, StoreError> {
        let (requests, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("decider-sqlite-writer".to_owned())
            .spawn(move || run(connection, queue, appended))
            .map_err(|e| {
                StoreError::backend_caused_by(format!("cannot start the SQLite writer: {e}"), e)
            })?;
        Ok(Self { requests })
    }

    /// Queues an append (on `condition`, if any) and waits for its own outcome.
    pub(crate) async fn append(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<PreparedEvent>,
        condition: Option<Condition>,
    ) -> Result<AppendResult, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(Request::Append(PendingAppend {
                stream,
                expected,
                events,
                condition,
                reply,
            }))
            .map_err(|_| writer_gone())?;
        outcome.await.map_err(|_| writer_gone())?
    }

    /// Runs `work` on the write connection and waits for its result. `work` opens and commits
    /// its own transaction.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.submit(Box::new(move |connection| {
            // The caller may have given up waiting; the work is done either way.
            let _ = reply.send(work(connection));
        }))?;
        outcome.await.map_err(|_| writer_gone())
    }

    /// Queues `job` without waiting for it (a lease released from a `Drop`).
    pub(crate) fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.requests
            .send(Request::Job(job))
            .map_err(|_| writer_gone())
    }
}

/// The writer thread's loop: take what is queued, write appends in groups, jobs one by one, in
/// the order they came.
fn run(
    mut connection: Connection,
    queue: mpsc::Receiver<Request>,
    appended: Arc<watch::Sender<u64>>,
) {
    let mut carried: Option<Request> = None;
    loop {
        let first = match carried.take() {
            Some(request) => request,
            None => match queue.recv() {
                Ok(request) => request,
                Err(mpsc::RecvError) => break,
            },
        };
        match first {
            Request::Job(job) => run_job(&mut connection, job),
            Request::Append(append) => {
                let mut group = vec![append];
                while group.len() < MAX_GROUP {
                    match queue.try_recv() {
                        Ok(Request::Append(append)) => group.push(append),
                        Ok(job) => {
                            carried = Some(job);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_group(&connection, group, &appended);
            }
        }
    }
    tracing::debug!("the SQLite writer stops: the store was dropped");
}

fn run_job(connection: &mut Connection, job: Job) {
    // A panicking handler must not take the writer (and so the store) down with it; its reply
    // channel is dropped, which its caller sees as a failure.
    if std::panic::catch_unwind(AssertUnwindSafe(|| job(connection))).is_err() {
        tracing::error!("a job on the SQLite writer panicked");
    }
    if !connection.is_autocommit() {
        // A job that left its transaction open (a panic inside it) must not leave the writer
        // inside it.
        let _ = connection.execute_batch("ROLLBACK");
    }
}

/// Writes `group` in one transaction, or each append alone if that transaction fails.
fn commit_group(connection: &Connection, group: Vec<PendingAppend>, appended: &watch::Sender<u64>) {
    match write_group(connection, &group) {
        Ok(outcomes) => {
            if outcomes.iter().any(Result::is_ok) {
                appended.send_modify(|n| *n = n.wrapping_add(1));
            }
            for (append, outcome) in group.into_iter().zip(outcomes) {
                let _ = append.reply.send(outcome);
            }
        }
        // The lock held elsewhere past the busy timeout: trying each append alone would wait
        // that long again for each. They all fail, retryably, now.
        Err(error) if group.len() == 1 || is_retryable(&error) => {
            let error = store_error(error);
            tracing::warn!(%error, "an SQLite append failed");
            for append in group {
                let _ = append.reply.send(Err(error.clone()));
            }
        }
        Err(error) => {
            tracing::debug!(%error, appends = group.len(), "a group commit failed; each append alone");
            for append in group {
                commit_group(connection, vec![append], appended);
            }
        }
    }
}

/// The condition of a conditional append, as SQL ([`crate::dcb::matching`]).
#[derive(Debug)]
pub(crate) struct Condition {
    pub(crate) after: Option<Position>,
    /// Selects the first event matching the query after `after`: seq, stream, type.
    pub(crate) first_match: String,
    pub(crate) params: Vec<rusqlite::types::Value>,
}

impl Condition {
    /// Refuses the append if an event matching the query was written after `after`; runs under
    /// the write lock, so nothing can be written between it and the append's rows.
    fn check(&self, connection: &Connection) -> Result<(), Refusal> {
        let matched = connection
            .prepare_cached(&self.first_match)?
            .query_row(rusqlite::params_from_iter(&self.params), |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        let Some((seq, stream, event_type)) = matched else {
            return Ok(());
        };
        let stream = StreamId::new(&stream).map_err(|e| {
            Refusal::Refused(StoreError::backend(format!(
                "event at position {seq}: stored stream id is invalid: {e}"
            )))
        })?;
        Err(Refusal::Refused(StoreError::ConditionFailed {
            after: self.after,
            matched: position(seq),
            stream,
            event_type,
        }))
    }
}

/// Why one append of a group did not write.
enum Refusal {
    /// The append itself is refused (a conflict, a reused id): only its savepoint rolls back.
    Refused(StoreError),
    /// SQLite failed: the group's transaction is in doubt.
    Failed(rusqlite::Error),
}

impl From<rusqlite::Error> for Refusal {
    fn from(error: rusqlite::Error) -> Self {
        Self::Failed(error)
    }
}

/// One transaction for the whole group, a savepoint per append. `Err` means nothing was written.
fn write_group(
    connection: &Connection,
    group: &[PendingAppend],
) -> Result<Vec<Result<AppendResult, StoreError>>, rusqlite::Error> {
    // IMMEDIATE takes the write lock now (waiting up to the busy timeout), so that no other
    // process writes between our reads of the stream and our inserts.
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let written = write_in_transaction(connection, group);
    if written.is_err() && !connection.is_autocommit() {
        // Some errors (a full disk) end the transaction by themselves; the others leave it open.
        let _ = connection.execute_batch("ROLLBACK");
    }
    written
}

fn write_in_transaction(
    connection: &Connection,
    group: &[PendingAppend],
) -> Result<Vec<Result<AppendResult, StoreError>>, rusqlite::Error> {
    let now = micros_since_epoch(SystemTime::now());
    if let [alone] = group {
        // No savepoint needed for an append alone: its refusal rolls back the transaction.
        return match append_one(connection, alone, now) {
            Ok(result) => {
                connection.prepare_cached("COMMIT")?.execute([])?;
                Ok(vec![Ok(result)])
            }
            Err(Refusal::Refused(error)) => {
                connection.prepare_cached("ROLLBACK")?.execute([])?;
                Ok(vec![Err(error)])
            }
            Err(Refusal::Failed(error)) => Err(error),
        };
    }
    let mut outcomes = Vec::with_capacity(group.len());
    for append in group {
        connection.prepare_cached("SAVEPOINT append")?.execute([])?;
        match append_one(connection, append, now) {
            Ok(result) => {
                connection.prepare_cached("RELEASE append")?.execute([])?;
                outcomes.push(Ok(result));
            }
            Err(Refusal::Refused(error)) => {
                connection
                    .prepare_cached("ROLLBACK TO append")?
                    .execute([])?;
                connection.prepare_cached("RELEASE append")?.execute([])?;
                outcomes.push(Err(error));
            }
            Err(Refusal::Failed(error)) => return Err(error),
        }
    }
    connection.prepare_cached("COMMIT")?.execute([])?;
    Ok(outcomes)
}

pub(crate) fn micros_since_epoch(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn position(seq: i64) -> Position {
    // Sequences are positive integers assigned by this code.
    Position::new(seq as u64, seq as u64)
}

/// The append rules, fast path first. Most appends carry new ids and meet their expectation, so
/// the rows are inserted straight away, and the unique indexes say when that is not so: a
/// `NoStream` append is one insert (revision 0 is taken in a stream that exists), the others
/// look at the stream's last revision first. When the first row is not written (nothing is,
/// then), [`append_checked`] finds out what the append is — a repeat, a reuse of ids, a
/// conflict — by the rules spelled out.
fn append_one(
    connection: &Connection,
    append: &PendingAppend,
    now: i64,
) -> Result<AppendResult, Refusal> {
    let first_revision = match append.expected {
        ExpectedVersion::NoStream => Some(0),
        _ => {
            let last = last_revision(connection, &append.stream)?;
            append
                .expected
                .is_met_by(last)
                .then(|| last.map_or(0, |r| r as i64 + 1))
        }
    };
    // A conditional append is checked first: the fast path would insert before the check.
    if let Some(first_revision) = first_revision.filter(|_| append.condition.is_none())
        && let Some(result) = insert_events(connection, append, first_revision, now)?
    {
        return Ok(result);
    }
    append_checked(connection, append, now)
}

/// The append rules in full: an exact repeat answers its original result, a reused id is
/// refused, then the expectation is checked and the events written at the next revisions and
/// positions.
fn append_checked(
    connection: &Connection,
    append: &PendingAppend,
    now: i64,
) -> Result<AppendResult, Refusal> {
    let stream = &append.stream;
    let count = append.events.len() as i64;
    // An idempotent retry is recognised before the version check: after a lost reply the stream
    // has moved past `expected` because of this very batch. Only the first id is looked up: a
    // batch that reuses only later ids fails the unique index on insert.
    let first_id = append.events[0].id;
    let found = connection
        .prepare_cached(sql::FIND_EVENT_ID)?
        .query_row([first_id.as_bytes().as_slice()], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .optional()?;
    if let Some((seq, found_stream, revision, batch_start, batch_len)) = found {
        if seq == batch_start && batch_len == count && found_stream == stream.as_str() {
            let mut statement = connection.prepare_cached(sql::BATCH_IDS)?;
            let ids = statement.query_map(params![seq, count], |row| row.get::<_, Vec<u8>>(0))?;
            let mut same = 0;
            for (id, event) in ids.zip(&append.events) {
                if id?.as_slice() != event.id.as_bytes() {
                    break;
                }
                same += 1;
            }
            if same == append.events.len() {
                return Ok(AppendResult {
                    next_revision: (revision + count) as u64,
                    position: position(seq + count - 1),
                    repeated: true,
                });
            }
        }
        return Err(reused_ids(stream));
    }
    let last = last_revision(connection, stream)?;
    if !append.expected.is_met_by(last) {
        return Err(Refusal::Refused(StoreError::WrongExpectedVersion {
            stream: stream.clone(),
            expected: append.expected,
            actual: last,
        }));
    }
    if let Some(condition) = &append.condition {
        condition.check(connection)?;
    }
    let first_revision = last.map_or(0, |r| r as i64 + 1);
    // The first id is new and its revision free (both read under the write lock), so the first
    // row is written; a later row's id taken already is refused inside.
    insert_events(connection, append, first_revision, now)?.ok_or_else(|| reused_ids(stream))
}

/// The stream's last revision, `None` for a stream without events.
fn last_revision(connection: &Connection, stream: &StreamId) -> Result<Option<u64>, Refusal> {
    let last: Option<i64> = connection
        .prepare_cached(sql::LAST_REVISION)?
        .query_row([stream.as_str()], |row| row.get(0))?;
    Ok(last.map(|r| r as u64))
}

/// Inserts the append's rows from `first_revision` on, after the log's last position.
/// `Ok(None)` when the first row was not written because its revision or its id is taken, and
/// so nothing was.
fn insert_events(
    connection: &Connection,
    append: &PendingAppend,
    first_revision: i64,
    now: i64,
) -> Result<Option<AppendResult>, Refusal> {
    let stream = &append.stream;
    let count = append.events.len() as i64;
    let (first, rest) = append.events.split_first().ok_or_else(|| {
        Refusal::Refused(StoreError::InvalidInput(format!(
            "append to {stream} holds no event"
        )))
    })?;
    let inserted = connection
        .prepare_cached(sql::INSERT_FIRST_EVENT)?
        .execute(params![
            stream.as_str(),
            stream.category(),
            first_revision,
            first.id.as_bytes().as_slice(),
            first.event_type,
            content_type_code(first.content_type),
            first.payload.as_ref(),
            first.metadata,
            now,
            count,
        ]);
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => return Ok(None),
        Err(error) => return Err(Refusal::Failed(error)),
    }
    let batch_start = connection.last_insert_rowid();
    insert_tags(connection, first, batch_start)?;
    if !rest.is_empty() {
        let mut insert = connection.prepare_cached(sql::INSERT_EVENT)?;
        for (offset, event) in (1..).zip(rest) {
            let inserted = insert.execute(params![
                batch_start + offset,
                stream.as_str(),
                stream.category(),
                first_revision + offset,
                event.id.as_bytes().as_slice(),
                event.event_type,
                content_type_code(event.content_type),
                event.payload.as_ref(),
                event.metadata,
                now,
                batch_start,
                count,
            ]);
            match inserted {
                Ok(_) => {}
                // The first row took the revisions' place (they follow it, gap-free), so a
                // later row can only meet an id appended before: the batch is refused, and its
                // savepoint or transaction rolled back.
                Err(error) if is_unique_violation(&error) => return Err(reused_ids(stream)),
                Err(error) => return Err(Refusal::Failed(error)),
            }
            insert_tags(connection, event, batch_start + offset)?;
        }
    }
    Ok(Some(AppendResult {
        next_revision: (first_revision + count) as u64,
        position: position(batch_start + count - 1),
        repeated: false,
    }))
}

fn insert_tags(connection: &Connection, event: &PreparedEvent, seq: i64) -> Result<(), Refusal> {
    if event.tags.is_empty() {
        return Ok(());
    }
    let mut insert = connection.prepare_cached(sql::INSERT_TAG)?;
    for tag in &event.tags {
        insert.execute(params![tag, seq, event.event_type])?;
    }
    Ok(())
}

fn content_type_code(content_type: ContentType) -> i64 {
    match content_type {
        ContentType::Json => 0,
        ContentType::Binary => 1,
    }
}

fn reused_ids(stream: &StreamId) -> Refusal {
    Refusal::Refused(StoreError::InvalidInput(format!(
        "append to {stream} reuses event ids of an earlier append but is not that append \
         repeated (event ids must be unique)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_that_is_not_json_is_refused_naming_the_event() {
        let stream = StreamId::new("s").unwrap();
        let events = vec![
            EventData::json("Good", "{}"),
            EventData::json("Bad", "{not json"),
        ];
        let Err(StoreError::InvalidInput(message)) = prepare(&stream, events) else {
            panic!("accepted")
        };
        assert!(message.contains("event 1 (\"Bad\""), "{message}");
    }

    #[test]
    fn a_payload_over_the_limit_and_an_empty_type_are_refused() {
        let stream = StreamId::new("s").unwrap();
        let big = EventData {
            content_type: ContentType::Binary,
            ..EventData::json("Big", vec![0u8; decider_core::MAX_PAYLOAD_BYTES + 1])
        };
        assert!(matches!(
            prepare(&stream, vec![big]),
            Err(StoreError::InvalidInput(message)) if message.contains("limit")
        ));
        assert!(matches!(
            prepare(&stream, vec![EventData::json("", "{}")]),
            Err(StoreError::InvalidInput(_))
        ));
        assert!(matches!(
            prepare(&stream, Vec::new()),
            Err(StoreError::InvalidInput(_))
        ));
    }
}
