//! Dynamic consistency boundaries on PostgreSQL: [`DcbStore`] for [`PostgresStore`].
//!
//! Tags live twice: in the event's metadata (`$tags`, what readers decode) and, for the index,
//! in `events.tags` and one `event_tags (tag, transaction_id, global_position)` row per tag
//! (migration 4). Untagged events have neither, and their plain appends keep the fast path
//! untouched. Every tagged or conditional append goes through `append_tagged_events`, whose
//! locking protocol and check are described in `sql.rs` and ADR 11.

use std::collections::VecDeque;
use std::sync::Arc;

use decider_core::dcb::{AppendCondition, DcbStore, Query};
use decider_core::{
    AppendResult, EventData, EventFilter, EventStream, ExpectedVersion, Position, RecordedEvent,
    StoreError, StreamId,
};
use futures::{StreamExt, stream};
use serde::Serialize;
use tokio_postgres::types::ToSql;

use crate::json::JsonText;
use crate::reads::position_params;
use crate::sql::{self, ItemScan};
use crate::{PostgresStore, append_arrays, expected_kind};

/// A statement parameter owned by a read.
type Param = Box<dyn ToSql + Sync + Send>;

/// The statements reading one query, with the parameters of its items (`$3` on; `$1`, `$2`
/// are the position read after, and the page's limit follows the items' parameters).
struct QueryStatements {
    page: String,
    newest_held_back: String,
    params: Vec<Param>,
}

impl QueryStatements {
    /// The statements of `query`, which does not match everything (that is `read_all`).
    fn new(query: &Query, quoted_schema: &str) -> Self {
        let mut params: Vec<Param> = Vec::new();
        let mut bind = |value: Param| {
            params.push(value);
            params.len() + 2
        };
        let scans: Vec<ItemScan> = query
            .items()
            .iter()
            .map(|item| {
                let tags: Vec<String> = item.tags().map(|tag| tag.as_str().to_owned()).collect();
                let types: Vec<String> = item.event_types().map(str::to_owned).collect();
                match tags.first() {
                    // Every event the item matches carries its first tag: that tag's index
                    // range holds them all.
                    Some(first) => {
                        let tag = bind(Box::new(first.clone()));
                        let all_tags = (tags.len() > 1).then(|| bind(Box::new(tags.clone())));
                        let types = (!types.is_empty()).then(|| bind(Box::new(types)));
                        ItemScan::Tag {
                            tag,
                            all_tags,
                            types,
                        }
                    }
                    None => ItemScan::Types {
                        types: bind(Box::new(types)),
                    },
                }
            })
            .collect();
        let limit = params.len() + 3;
        Self {
            page: sql::in_schema(&sql::query_page(&scans, limit), quoted_schema),
            newest_held_back: sql::in_schema(&sql::query_newest_held_back(&scans), quoted_schema),
            params,
        }
    }
}

impl PostgresStore {
    /// The next page of `statements`' query after `after`.
    async fn query_page(
        &self,
        statements: &QueryStatements,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let (transaction, global) = position_params(after);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&transaction, &global];
        params.extend(
            statements
                .params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync)),
        );
        params.push(&limit);
        self.page(&statements.page, &params).await
    }

    /// Waits out the transactions holding back committed events of the query after `after`,
    /// as [`settle`](Self::settle) does for a filter.
    async fn settle_query(
        &self,
        statements: &QueryStatements,
        after: Option<Position>,
    ) -> Result<(), StoreError> {
        let (transaction, global) = position_params(after);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&transaction, &global];
        params.extend(
            statements
                .params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync)),
        );
        let rows = self.query(&statements.newest_held_back, &params).await?;
        self.settle_up_to(rows.first().and_then(|row| row.get(0)))
            .await
    }

    /// Appends `events`, which carry tags or are appended on `condition`, through
    /// `append_tagged_events`: under the DCB locks, after the stream's expectation and the
    /// repeat check, and after the condition's check.
    pub(crate) async fn append_tagged(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) -> Result<AppendResult, StoreError> {
        let arrays = append_arrays(stream, &events)?;
        let metadata: Vec<JsonText<'_>> = arrays.metadata.iter().map(|m| JsonText(m)).collect();
        let (kind, revision) = expected_kind(expected);
        let items = condition
            .as_ref()
            .map(|condition| condition_items(&condition.fail_if_events_match))
            .transpose()?;
        let items = items.as_deref().map(JsonText);
        let after = condition.and_then(|condition| condition.after);
        let (after_transaction, after_global) = position_params(after);
        let rows = self
            .call_append_function(
                &self.shared.queries.append_tagged,
                &[
                    &stream.as_str(),
                    &kind,
                    &revision,
                    &arrays.ids,
                    &arrays.types,
                    &arrays.data,
                    &arrays.binary_data,
                    &metadata,
                    &items,
                    &after_transaction,
                    &after_global,
                ],
                stream,
            )
            .await?;
        self.append_outcome(&rows, stream, expected, after)
    }
}

/// One query item as `append_tagged_events` reads it.
#[derive(Serialize)]
struct ConditionItem<'a> {
    types: Vec<&'a str>,
    /// In order: the first is the one locked and scanned.
    tags: Vec<&'a str>,
}

/// `query`'s items as the JSON array `append_tagged_events` takes.
fn condition_items(query: &Query) -> Result<Vec<u8>, StoreError> {
    let items: Vec<ConditionItem<'_>> = query
        .items()
        .iter()
        .map(|item| ConditionItem {
            types: item.event_types().collect(),
            tags: item.tags().map(|tag| tag.as_str()).collect(),
        })
        .collect();
    serde_json::to_vec(&items)
        .map_err(|e| StoreError::backend(format!("a query does not serialise: {e}")))
}

/// Where a query read stands.
struct QueryRead {
    store: PostgresStore,
    statements: Arc<QueryStatements>,
    after: Option<Position>,
    remaining: u64,
    /// Whether the read has waited out transactions holding matching events back, once it
    /// first found no more visible ones; the next empty page then ends it.
    settled: bool,
    exhausted: bool,
    page: VecDeque<RecordedEvent>,
}

/// The events matching `query` after `after`, page by page, as `read_all` reads the log.
fn read_query(
    store: PostgresStore,
    query: &Query,
    after: Option<Position>,
    limit: Option<u64>,
) -> impl EventStream + use<> {
    let quoted = format!("\"{}\"", store.shared.schema);
    let read = QueryRead {
        statements: Arc::new(QueryStatements::new(query, &quoted)),
        store,
        after,
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
            let fetched = match r.store.query_page(&r.statements, r.after, size).await {
                Ok(events) if events.is_empty() && !r.settled => {
                    r.settled = true;
                    r.store
                        .settle_query(&r.statements, r.after)
                        .await
                        .map(|()| events)
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

/// Dynamic consistency boundaries on PostgreSQL, race-free without a global lock and without
/// `SERIALIZABLE` (ADR 11).
///
/// - [`read_query`](DcbStore::read_query) reads each tagged item off the `event_tags` index,
///   page by page in global order, below the read horizon as `read_all` does (an event whose
///   transaction commits late is held back, never skipped).
/// - [`append_if`](DcbStore::append_if) is one round trip, one PL/pgSQL call: it takes
///   transaction-scoped advisory locks in key order (shared on every tag and type it writes
///   and on `all`; exclusive per query item on its first tag, else on each of its types, else
///   on `all`), then, in later statements (new snapshots), checks the stream's expectation,
///   recognises a repeat, checks the condition, and inserts. Tagged appends through
///   [`EventStore::append`](decider_core::EventStore::append) take the same shared locks, so
///   a conditional append waits for every tagged writer that could match it, conditional or
///   not, to commit, and then sees its events. Appends whose tags and queries cannot overlap
///   take no common exclusive lock: they neither wait for nor abort each other.
///
/// # Limits
/// - Untagged events appended with `EventStore::append` take no lock (their appends stay one
///   plain `INSERT`). A query item without tags (only types, or [`Query::all`]) therefore
///   serialises only against tagged and conditional writers: an untagged plain append of a
///   type such an item names can commit beside a conditional append that did not see it.
///   Tag the events a decision depends on, or write them with `append_if`.
/// - Items without tags are read and checked by walking the log in global order from the
///   position read after (there is no index on the event type, which every append would pay
///   for): cheap when that position is recent, a scan of the log when it is the start. Give
///   every item a tag for reads that stay on an index.
impl DcbStore for PostgresStore {
    fn read_query(
        &self,
        query: &Query,
        after: Option<Position>,
        limit: Option<u64>,
    ) -> impl EventStream + use<> {
        if query.is_all() {
            crate::reads::read_all(self.clone(), after, limit, EventFilter::all()).left_stream()
        } else {
            read_query(self.clone(), query, after, limit).right_stream()
        }
    }

    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: AppendCondition,
    ) -> Result<AppendResult, StoreError> {
        decider_core::measured_append(
            "postgres",
            events.len(),
            self.append_tagged(stream, expected, events, Some(condition)),
        )
        .await
    }
}
