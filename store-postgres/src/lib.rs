//! # decider-store-postgres
//!
//! A PostgreSQL [`EventStore`] on `tokio-postgres` and `deadpool-postgres`: gap-free global
//! order, one round trip per append, push-driven live subscriptions.
//!
//! - **Appends** are one round trip. `Exact` and `NoStream` appends are one `INSERT … SELECT
//!   unnest(…)` guarded by the previous revision, with the primary key `(stream_id, revision)`
//!   admitting one writer per revision; `Any` and `StreamExists` appends, and every fast-path
//!   miss, call a PL/pgSQL function that takes a per-stream advisory lock (writers of different
//!   streams never wait for each other) and tells a conflict from an idempotent repeat.
//! - **Global order** is `(transaction_id, global_position)`, and every global read returns only
//!   rows of transactions older than the oldest one still running. An event whose transaction
//!   commits late is therefore never skipped by a reader that has moved on: it is held back until
//!   it can no longer be overtaken.
//! - **Live subscriptions** poll with backoff and are woken early by `LISTEN`; appends send a
//!   debounced, empty `NOTIFY` after they commit (never inside the append's transaction, which
//!   would serialise commits).
//! - **Dynamic consistency boundaries**: the store is a
//!   [`DcbStore`](decider_core::dcb::DcbStore): reads by query off an index of tags, and
//!   conditional appends serialised by transaction-scoped advisory locks per tag, never a
//!   global one (ADR 11; limits on the impl).
//! - **Snapshots**: the store is also a [`SnapshotStore`](decider_core::SnapshotStore) for the
//!   command handler, one row per stream in the `snapshots` table.
//! - Everything lives in one schema (default `decider`), so tenants and tests are isolated.
//! - **TLS** (feature `tls`, on by default) through rustls, as libpq's `sslmode` and `sslrootcert` in the URL say, for every
//!   connection the store opens (see [`ConnectionSettings`]).
//!
//! ```no_run
//! use decider_store_postgres::PostgresStore;
//!
//! # async fn example() -> Result<(), decider_core::StoreError> {
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
//! store.migrate().await?; // idempotent; safe when several processes run it at once
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod catalog;
mod connect;
mod control;
mod dcb;
mod error;
mod json;
mod live;
mod partition_index;
mod projection;
mod reads;
mod snapshots;
mod sql;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{from_pg, from_pool};
use crate::json::JsonText;
use crate::live::Live;
use crate::projection::ProjectionQueries;
use deadpool_postgres::Pool;
use decider_core::{
    AppendResult, ContentType, Direction, EventData, EventFilter, EventStore, EventStream,
    ExpectedVersion, Position, StoreError, StreamFrom, StreamId, Subscription,
};

pub use crate::connect::ConnectionSettings;
pub use crate::control::PgControl;
pub use crate::error::{from_pg as store_error, from_pool as pool_error};
pub use crate::projection::{
    PgCheckpoints, PgDeadLetters, PgLeases, PgTransactionalSink, TransactionalHandler, handle_error,
};

/// How a [`PostgresStore`] is set up.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The schema holding the store's tables: lowercase ASCII letters, digits and `_`, not
    /// starting with a digit, at most 48 bytes. Default `decider`.
    pub schema: String,
    /// Connections in the pool. Default 16.
    pub pool_size: usize,
    /// How long an operation waits for a free connection before failing with `Unavailable`.
    /// Default 10 s.
    pub pool_timeout: Duration,
    /// Events fetched per query by reads and subscriptions. Default 1,000.
    pub page_size: u32,
    /// The longest a live subscription sleeps between polls when no notification wakes it.
    /// Default 500 ms.
    pub max_poll_interval: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "decider".to_owned(),
            pool_size: 16,
            pool_timeout: Duration::from_secs(10),
            page_size: 1_000,
            max_poll_interval: Duration::from_millis(500),
        }
    }
}

/// A PostgreSQL event store. Clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    /// The settings of connections outside the pool, when known (leases open connections of
    /// their own), with the store's `application_name`.
    settings: Option<ConnectionSettings>,
    schema: String,
    queries: Queries,
    projection_queries: ProjectionQueries,
    options: PostgresOptions,
    live: Live,
    /// The page queries of the partition counts read so far, and their indexes.
    partition_pages: partition_index::PartitionPages,
}

/// The statements, with the schema filled in.
struct Queries {
    fast_append: String,
    append: String,
    append_tagged: String,
    read_stream_forward: String,
    read_stream_backward: String,
    read_all_page: String,
    newest_held_back: String,
    released: String,
    head_position: String,
    save_snapshot: String,
    load_snapshot: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.shared.schema)
            .field("pool", &self.shared.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`) with default options.
    /// Does not touch the schema: call [`migrate`](Self::migrate) once at start-up.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to the database at `url` with `options`, and checks that it answers.
    ///
    /// Every connection the store opens names the schema in its `application_name`
    /// (`decider:<schema>`, with `:listen` or `:lease:<projection>` for those outside the
    /// pool), unless the URL sets one.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let settings = ConnectionSettings::from_url(url)?;
        let settings = settings.named(&connect::application_name(&settings, &options.schema));
        let pool = settings.pool(options.pool_size, options.pool_timeout)?;
        let store = Self::build(pool, Some(settings), options)?;
        // Fail now, with the reason, rather than at the first append.
        drop(store.shared.pool.get().await.map_err(from_pool)?);
        Ok(store)
    }

    /// A store on an existing pool (one with a TLS connector of your own, say). `settings`
    /// are for the connections outside the pool: the one that listens for appends, and
    /// projection leases. Build them with [`ConnectionSettings::from_url`] from the pool's URL,
    /// TLS parameters (`sslmode`, `sslrootcert`) included, so that they reach the server the
    /// way the pool does. Without them, live subscriptions only poll and
    /// [`leases`](Self::leases) are not available.
    pub fn with_pool(
        pool: Pool,
        settings: Option<ConnectionSettings>,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        let settings = settings.map(|settings| {
            let name = connect::application_name(&settings, &options.schema);
            settings.named(&name)
        });
        Self::build(pool, settings, options)
    }

    fn build(
        pool: Pool,
        settings: Option<ConnectionSettings>,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        let schema = options.schema.clone();
        validate_schema(&schema)?;
        if options.page_size == 0 {
            return Err(StoreError::InvalidInput(
                "page_size must be at least 1".to_owned(),
            ));
        }
        let quoted = format!("\"{schema}\"");
        let queries = Queries {
            fast_append: sql::in_schema(sql::FAST_APPEND, &quoted),
            append: sql::in_schema(sql::APPEND, &quoted),
            append_tagged: sql::in_schema(sql::APPEND_TAGGED, &quoted),
            read_stream_forward: sql::in_schema(&sql::read_stream_forward(), &quoted),
            read_stream_backward: sql::in_schema(&sql::read_stream_backward(), &quoted),
            read_all_page: sql::in_schema(&sql::read_all_page(), &quoted),
            newest_held_back: sql::in_schema(&sql::newest_held_back(), &quoted),
            released: sql::RELEASED.to_owned(),
            head_position: sql::in_schema(sql::HEAD_POSITION, &quoted),
            save_snapshot: sql::in_schema(sql::SAVE_SNAPSHOT, &quoted),
            load_snapshot: sql::in_schema(sql::LOAD_SNAPSHOT, &quoted),
        };
        let listen = settings.as_ref().map(|settings| {
            let name = settings.config().get_application_name().unwrap_or_default();
            settings.named(&format!("{name}:listen"))
        });
        let live = Live::new(format!("{schema}.events"), listen);
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                settings,
                schema,
                queries,
                projection_queries: ProjectionQueries::new(&quoted),
                options,
                live,
                partition_pages: partition_index::PartitionPages::default(),
            }),
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// Creates or upgrades the schema to the newest version. Idempotent, and safe when several
    /// processes run it at once: they take turns on an advisory lock.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let quoted = format!("\"{}\"", self.shared.schema);
        let mut client = self.shared.pool.get().await.map_err(from_pool)?;
        let transaction = client.transaction().await.map_err(from_pg)?;
        transaction
            .execute(sql::LOCK_MIGRATIONS, &[&self.shared.schema])
            .await
            .map_err(from_pg)?;
        transaction
            .batch_execute(&sql::in_schema(sql::PREPARE_MIGRATIONS, &quoted))
            .await
            .map_err(from_pg)?;
        let applied: i32 = transaction
            .query_one(&sql::in_schema(sql::APPLIED_MIGRATIONS, &quoted), &[])
            .await
            .map_err(from_pg)?
            .get(0);
        for (index, migration) in sql::MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let version = index as i32 + 1;
            tracing::info!(schema = %self.shared.schema, version, "applying migration");
            transaction
                .batch_execute(&sql::in_schema(migration, &quoted))
                .await
                .map_err(from_pg)?;
            transaction
                .execute(&sql::in_schema(sql::RECORD_MIGRATION, &quoted), &[&version])
                .await
                .map_err(from_pg)?;
        }
        transaction.commit().await.map_err(from_pg)
    }

    /// Drops the schema and everything in it. For tests and tear-down scripts.
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let client = self.shared.pool.get().await.map_err(from_pool)?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.shared.schema
            ))
            .await
            .map_err(from_pg)
    }
}

impl PostgresStore {
    /// Runs one statement (prepared once per connection) on a pooled connection, on another one
    /// if that connection fails (see [`query_raw`](Self::query_raw)).
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.query_raw(sql, params).await?.map_err(from_pg)
    }

    /// Like [`query`](Self::query), but hands back the statement's own error for the caller to
    /// read its SQLSTATE (the outer error is the pool's).
    ///
    /// A connection that failed is taken out of the pool rather than handed to the next
    /// caller, and the statement is sent again on another one, up to [`QUERY_ATTEMPTS`] times
    /// in all: after a backend is terminated, pooled connections may not know yet that they
    /// are closed, and a one-off drop should cost the caller nothing once the database answers.
    /// Every statement sent here is safe to repeat: reads, and appends, which are idempotent by
    /// event id (a repeat of a committed append is answered as its repeat).
    async fn query_raw(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>, StoreError> {
        let mut attempt = 1;
        loop {
            let client = self.shared.pool.get().await.map_err(from_pool)?;
            let result = match client.prepare_cached(sql).await {
                Ok(statement) => client.query(&statement, params).await,
                Err(error) => Err(error),
            };
            let failure = match &result {
                Err(error) if error::is_retryable(error) => error.to_string(),
                _ => return Ok(result),
            };
            drop(deadpool_postgres::Object::take(client));
            if attempt == QUERY_ATTEMPTS {
                return Ok(result);
            }
            tracing::debug!(attempt, %failure, "a pooled connection failed; trying another");
            attempt += 1;
        }
    }
}

/// How often a statement is sent, on as many connections, when connections fail under it.
const QUERY_ATTEMPTS: usize = 3;

fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// How often an `append_events` call is made when fast-path appends keep taking the revision it
/// chose. Each repeat sees the append that beat it, so one is nearly always enough; under a
/// stream hammered by `Exact` writers on a loaded machine, an `Any` append was seen to lose five
/// races in a row, so the repeats back off a little, with jitter, and the last failure is
/// `Unavailable` (nothing was written; retrying is safe) rather than the unique violation.
const FUNCTION_ATTEMPTS: u32 = 20;

/// Checks that `schema` is a plain identifier, so it can be quoted into SQL safely.
fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let plain = schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let starts_well = schema.bytes().next().is_some_and(|b| !b.is_ascii_digit());
    // 48 bytes leaves room for the notification channel name, `<schema>.events`, within
    // PostgreSQL's 63-byte identifier limit.
    if plain && starts_well && schema.len() <= 48 {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(format!(
            "schema name {schema:?} must be 1 to 48 lowercase ASCII letters, digits or '_', \
             not starting with a digit"
        )))
    }
}

/// The arrays the append function takes, one element per event.
struct AppendArrays<'a> {
    ids: Vec<uuid::Uuid>,
    types: Vec<&'a str>,
    data: Vec<Option<JsonText<'a>>>,
    binary_data: Vec<Option<&'a [u8]>>,
    metadata: Vec<Vec<u8>>,
}

/// Checks a batch ([`decider_core::check_append`]) and lays it out as arrays.
fn append_arrays<'a>(
    stream: &StreamId,
    events: &'a [EventData],
) -> Result<AppendArrays<'a>, StoreError> {
    decider_core::check_append(stream, events)?;
    let mut arrays = AppendArrays {
        ids: Vec::with_capacity(events.len()),
        types: Vec::with_capacity(events.len()),
        data: Vec::with_capacity(events.len()),
        binary_data: Vec::with_capacity(events.len()),
        metadata: Vec::with_capacity(events.len()),
    };
    for (index, event) in events.iter().enumerate() {
        let refuse = |why: String| {
            StoreError::InvalidInput(format!(
                "event {index} ({:?}, id {}) of the append to {stream}: {why}",
                event.event_type, event.id
            ))
        };
        match event.content_type {
            ContentType::Json => {
                arrays.data.push(Some(JsonText(&event.payload)));
                arrays.binary_data.push(None);
            }
            ContentType::Binary => {
                arrays.data.push(None);
                arrays.binary_data.push(Some(&event.payload));
            }
        }
        let metadata = serde_json::to_vec(&event.metadata)
            .map_err(|e| refuse(format!("the metadata does not serialise: {e}")))?;
        arrays.ids.push(event.id);
        arrays.types.push(&event.event_type);
        arrays.metadata.push(metadata);
    }
    Ok(arrays)
}

/// The first revision a fast-path append writes, for the expectations that name it.
fn fast_first_revision(expected: ExpectedVersion) -> Option<i64> {
    match expected {
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(last) => i64::try_from(last).ok()?.checked_add(1),
        ExpectedVersion::Any | ExpectedVersion::StreamExists => None,
    }
}

/// The append function's encoding of an expectation: (kind, revision).
fn expected_kind(expected: ExpectedVersion) -> (i16, Option<i64>) {
    match expected {
        ExpectedVersion::Any => (0, None),
        ExpectedVersion::NoStream => (1, None),
        ExpectedVersion::StreamExists => (2, None),
        // Revisions above i64::MAX cannot exist in PostgreSQL, so such an expectation fails.
        ExpectedVersion::Exact(revision) => (3, Some(i64::try_from(revision).unwrap_or(-1))),
    }
}

impl PostgresStore {
    /// [`EventStore::append`] without its metrics, which [`decider_core::measured_append`]
    /// records around it.
    async fn append_unmeasured(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        // Tagged events take the DCB locks (see `dcb.rs`): conditional appends must see them.
        if events.iter().any(|event| !event.metadata.tags.is_empty()) {
            return self.append_tagged(stream, expected, events, None).await;
        }
        let arrays = append_arrays(stream, &events)?;
        let metadata: Vec<JsonText<'_>> = arrays.metadata.iter().map(|m| JsonText(m)).collect();
        // The fast path: one INSERT with a version guard. It answers only success; anything
        // else (a failed guard, a revision or an id already taken) is told apart by the function.
        if let Some(first) = fast_first_revision(expected) {
            let fast = self
                .query_raw(
                    &self.shared.queries.fast_append,
                    &[
                        &stream.as_str(),
                        &first,
                        &arrays.ids,
                        &arrays.types,
                        &arrays.data,
                        &arrays.binary_data,
                        &metadata,
                    ],
                )
                .await?;
            match fast {
                Ok(rows) if rows.len() == events.len() => {
                    let last = rows
                        .iter()
                        .map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1)))
                        .max()
                        .ok_or_else(|| StoreError::backend("append returned no row"))?;
                    self.shared
                        .live
                        .appended(&self.shared.pool, stream.as_str());
                    return Ok(AppendResult {
                        next_revision: (first as u64) + events.len() as u64,
                        position: Position::new(last.0 as u64, last.1 as u64),
                        repeated: false,
                    });
                }
                Ok(_) => {}
                Err(error) if is_unique_violation(&error) => {}
                Err(error) => return Err(from_pg(error)),
            }
        }
        let (kind, revision) = expected_kind(expected);
        let rows = self
            .call_append_function(
                &self.shared.queries.append,
                &[
                    &stream.as_str(),
                    &kind,
                    &revision,
                    &arrays.ids,
                    &arrays.types,
                    &arrays.data,
                    &arrays.binary_data,
                    &metadata,
                ],
                stream,
            )
            .await?;
        self.append_outcome(&rows, stream, expected, None)
    }

    /// Calls an append function (`append_events`, `append_tagged_events`) and returns its rows.
    /// A unique violation means that a fast-path append took the revision the function chose
    /// (nothing was written): the call is made again, see [`FUNCTION_ATTEMPTS`].
    pub(crate) async fn call_append_function(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        stream: &StreamId,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.query_raw(sql, params).await? {
                Ok(rows) => return Ok(rows),
                Err(error) if is_unique_violation(&error) && attempt < FUNCTION_ATTEMPTS => {
                    let pause = Duration::from_micros(fastrand::u64(0..=100 * u64::from(attempt)));
                    tokio::time::sleep(pause).await;
                }
                Err(error) if is_unique_violation(&error) => {
                    return Err(StoreError::unavailable(format!(
                        "append to {stream}: other appends took the next revision {FUNCTION_ATTEMPTS} times in a row; nothing was written, try again"
                    )));
                }
                Err(error) => return Err(from_pg(error)),
            }
        }
    }

    /// The result of an append function's row: (outcome, next_revision, transaction_id,
    /// global_position), and for `append_tagged_events` (matched_stream, matched_type), read
    /// only when the outcome is `condition_failed`, whose position is the matched event's.
    /// `after` is the condition's.
    pub(crate) fn append_outcome(
        &self,
        rows: &[tokio_postgres::Row],
        stream: &StreamId,
        expected: ExpectedVersion,
        after: Option<Position>,
    ) -> Result<AppendResult, StoreError> {
        let row = rows
            .first()
            .ok_or_else(|| StoreError::backend("append returned no row"))?;
        let outcome: &str = row.get(0);
        let next_revision: Option<i64> = row.get(1);
        let position = || -> Result<Position, StoreError> {
            let transaction: Option<i64> = row.get(2);
            let global: Option<i64> = row.get(3);
            match (transaction, global) {
                (Some(t), Some(g)) => Ok(Position::new(t as u64, g as u64)),
                _ => Err(StoreError::backend("append returned no position")),
            }
        };
        match (outcome, next_revision) {
            ("ok", Some(next)) => {
                self.shared
                    .live
                    .appended(&self.shared.pool, stream.as_str());
                Ok(AppendResult {
                    next_revision: next as u64,
                    position: position()?,
                    repeated: false,
                })
            }
            ("repeat", Some(next)) => Ok(AppendResult {
                next_revision: next as u64,
                position: position()?,
                repeated: true,
            }),
            ("conflict", next) => Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: next.map(|n| (n - 1) as u64),
            }),
            ("reused_ids", _) => Err(StoreError::InvalidInput(format!(
                "append to {stream} reuses event ids of an earlier append but is not that \
                 append repeated (event ids must be unique)"
            ))),
            ("condition_failed", _) => {
                let matched_stream: &str = row.get(4);
                Err(StoreError::ConditionFailed {
                    after,
                    matched: position()?,
                    stream: StreamId::new(matched_stream).map_err(|e| {
                        StoreError::backend_caused_by(
                            format!("stored stream id is invalid: {e}"),
                            e,
                        )
                    })?,
                    event_type: row.get(5),
                })
            }
            (other, _) => Err(StoreError::backend(format!(
                "append returned the unknown outcome {other:?}"
            ))),
        }
    }
}

impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        decider_core::measured_append(
            "postgres",
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
        reads::read_stream(self.clone(), stream.clone(), from, direction, limit)
    }

    fn read_all(
        &self,
        after: Option<Position>,
        limit: Option<u64>,
        filter: &EventFilter,
    ) -> impl EventStream + use<> {
        reads::read_all(self.clone(), after, limit, filter.clone())
    }

    async fn head_position(&self) -> Result<Option<Position>, StoreError> {
        // Like a read, the head includes events committed before this call but held back by an
        // older transaction still running: wait for them.
        self.settle(None, &EventFilter::all()).await?;
        let rows = self.query(&self.shared.queries.head_position, &[]).await?;
        let row = rows.first();
        Ok(row.map(|row| Position::new(row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64)))
    }

    fn subscribe_all(
        &self,
        after: Option<Position>,
        filter: &EventFilter,
    ) -> impl Subscription + use<> {
        reads::subscribe_all(self.clone(), after, filter.clone())
    }

    fn subscribe_stream(&self, stream: &StreamId, after: Option<u64>) -> impl Subscription + use<> {
        reads::subscribe_stream(self.clone(), stream.clone(), after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["decider", "tenant_42", "_x", &"a".repeat(48)] {
            assert!(validate_schema(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Upper",
            "a-b",
            "a\"b",
            "a;drop",
            &"a".repeat(49),
            "é",
        ] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_payload_that_is_not_json_is_refused_naming_the_event() {
        let stream = StreamId::new("s").unwrap();
        let events = [
            EventData::json("Good", "{}"),
            EventData::json("Bad", "{not json"),
        ];
        let Err(StoreError::InvalidInput(message)) = append_arrays(&stream, &events) else {
            panic!("accepted")
        };
        assert!(message.contains("event 1 (\"Bad\""), "{message}");
    }
}
