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
use crate::reads::{position_params, row_to_event};
use crate::sql::{self, ItemScan};
use crate::{PostgresStore, append_arrays, expected_kind};

/// The column of a query page holding the newest transaction holding events back.
const HELD_BACK_COLUMN: usize = 10;

/// A statement parameter owned by a read.
type Param = Box<dyn ToSql + Sync + Send>;

/// The statement reading one query, with the parameters of its items (`$3` on; `$1`, `$2`
/// are the position read after, and the page's limit follows the items' parameters).
struct QueryStatements {
    page: String,
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
            params,
        }
    }
}

/// A page of a query read, and the newest transaction holding back events it matches.
struct QueryPage {
    events: Vec<RecordedEvent>,
    newest_held_back: Option<i64>,
}

impl PostgresStore {
    /// The next page of `statements`' query after `after`.
    async fn query_page(
        &self,
        statements: &QueryStatements,
        after: Option<Position>,
        limit: i64,
    ) -> Result<QueryPage, StoreError> {
        let (transaction, global) = position_params(after);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&transaction, &global];
        params.extend(
            statements
                .params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync)),
        );
        params.push(&limit);
        let rows = self.query(&statements.page, &params).await?;
        let newest_held_back = rows.first().and_then(|row| row.get(HELD_BACK_COLUMN));
        // An empty page is one row without an event.
        let events = rows
            .iter()
            .filter(|row| row.get::<_, Option<&str>>(0).is_some())
            .map(row_to_event)
            .collect::<Result<_, _>>()?;
        Ok(QueryPage {
            events,
            newest_held_back,
        })
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
            let page = match r.store.query_page(&r.statements, r.after, size).await {
                Ok(page) => page,
                Err(error) => {
                    r.exhausted = true;
                    return Some((Err(error), r));
                }
            };
            r.after = page.events.last().map(|e| e.position).or(r.after);
            let short = (page.events.len() as i64) < size;
            r.page.extend(page.events);
            if short {
                // Everything matching that had committed when the page was read is in it,
                // except what older transactions still running hold back: wait those out
                // once (so that a read after an append includes it), then read on; the
                // next short page ends the read.
                match page.newest_held_back {
                    Some(newest) if !r.settled => {
                        r.settled = true;
                        if let Err(error) = r.store.settle_up_to(Some(newest)).await {
                            r.exhausted = true;
                            return Some((Err(error), r));
                        }
                    }
                    _ => r.exhausted = true,
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

#[cfg(test)]
mod tests {
    use decider_core::dcb::{QueryItem, Tag};

    use super::*;
    use crate::PostgresOptions;

    fn tag(text: &str) -> Tag {
        Tag::new(text).unwrap()
    }

    /// The plans PostgreSQL picks for `statements`, custom and generic, as text.
    async fn plans(
        client: &tokio_postgres::Client,
        statements: &QueryStatements,
        values: &str,
    ) -> String {
        let mut out = String::new();
        for (name, sql) in [("page", &statements.page)] {
            client
                .batch_execute(&format!("DEALLOCATE ALL; PREPARE {name} AS {sql}"))
                .await
                .unwrap();
            let values = format!("{values}, 100");
            for mode in ["force_custom_plan", "force_generic_plan"] {
                client
                    .batch_execute(&format!("SET plan_cache_mode = {mode}"))
                    .await
                    .unwrap();
                for row in client
                    .query(&format!("EXPLAIN EXECUTE {name}({values})"), &[])
                    .await
                    .unwrap()
                {
                    out.push_str(row.get::<_, &str>(0));
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Reads by tag stay on the `event_tags` index, whatever plan PostgreSQL caches for the
    /// prepared statement: never a walk of the log.
    #[tokio::test]
    async fn tagged_query_reads_are_index_scans_not_scans_of_the_log() {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let schema = format!("decider_test_{}", uuid::Uuid::new_v4().simple());
        let store = PostgresStore::connect_with(
            &url,
            PostgresOptions {
                schema: schema.clone(),
                pool_size: 2,
                ..PostgresOptions::default()
            },
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let client = store.pool().get().await.unwrap();
        // 40,000 events, a quarter of them tagged with one of 500 tags.
        client
            .batch_execute(&format!(
                "INSERT INTO \"{schema}\".events \
                     (stream_id, revision, event_id, event_type, data, metadata, tags) \
                 SELECT 'bulk-' || i, 0, gen_random_uuid(), \
                     CASE WHEN i % 2 = 0 THEN 'A' ELSE 'B' END, '{{}}', '{{}}', \
                     CASE WHEN i % 4 = 0 THEN ARRAY['t:' || (i % 500), 'u:' || (i % 7)] END \
                 FROM generate_series(1, 40000) AS i; \
                 INSERT INTO \"{schema}\".event_tags \
                 SELECT unnest(tags), transaction_id, global_position \
                 FROM \"{schema}\".events WHERE tags IS NOT NULL; \
                 ANALYZE \"{schema}\".events; ANALYZE \"{schema}\".event_tags"
            ))
            .await
            .unwrap();
        let quoted = format!("\"{schema}\"");
        let one_tag = Query::from(QueryItem::tagged([tag("t:4")]));
        let checked = Query::from(QueryItem::tagged([tag("t:4"), tag("u:1")]).with_types(["A"]))
            .or(QueryItem::tagged([tag("t:8")]));
        for (query, values) in [
            (&one_tag, "0, 0, 't:4'"),
            (
                &checked,
                "0, 0, 't:4', ARRAY['t:4', 'u:1'], ARRAY['A'], 't:8'",
            ),
        ] {
            let plans = plans(&client, &QueryStatements::new(query, &quoted), values).await;
            assert!(!plans.contains("Seq Scan"), "{plans}");
            assert!(plans.contains("event_tags_pkey"), "{plans}");
        }
        drop(client);
        store.drop_schema().await.unwrap();
    }
}
