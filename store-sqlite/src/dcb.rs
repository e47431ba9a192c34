//! Dynamic consistency boundaries on SQLite: events found by query through `event_tags`, and
//! conditional appends checked by the writer.
//!
//! Race-freedom comes from SQLite itself: one writer at a time per file (`BEGIN IMMEDIATE`
//! takes the write lock, also against other processes), and the condition is checked on the
//! write connection, inside the append's transaction, before its rows are inserted. Nothing can
//! be written between the check and the insert, by this process or another; appends grouped in
//! one commit see the rows of those before them. Positions are assigned in commit order, so a
//! read never misses an event that commits before one it returned.

use decider_core::dcb::{AppendCondition, DcbStore, Query};
use decider_core::{AppendResult, EventData, EventStream, ExpectedVersion, Position};
use decider_core::{StoreError, StreamId};
use rusqlite::types::Value;

use crate::writer::{self, Condition};
use crate::{SqliteStore, sql};

/// The seqs of the events matching `query` after seq `after`, at most `limit` per item (so a
/// page reads no more than it needs), as a compound `SELECT seq` and its parameters.
///
/// An item with tags is driven by `event_tags` (its primary key `(tag, seq)` is the index): the
/// rows of its first tag after `after`, joined with those of its other tags, filtered by type.
/// An item without tags reads the log itself (no index by type: such items are for rare, broad
/// conditions).
fn matching(query: &Query, after: i64, limit: i64) -> (String, Vec<Value>) {
    let mut parts = Vec::with_capacity(query.items().len());
    let mut params = Vec::new();
    for item in query.items() {
        let types: Vec<&str> = item.event_types().collect();
        let tags: Vec<&str> = item.tags().map(|tag| tag.as_str()).collect();
        let in_types = |column: &str, params: &mut Vec<Value>| {
            if types.is_empty() {
                return String::new();
            }
            params.extend(types.iter().map(|t| Value::Text((*t).to_owned())));
            format!(" AND {column} IN ({})", vec!["?"; types.len()].join(", "))
        };
        let part = match tags.split_first() {
            Some((first, rest)) => {
                let mut part = "SELECT t0.seq AS seq FROM event_tags t0".to_owned();
                for (n, tag) in (1..).zip(rest) {
                    part.push_str(&format!(
                        " JOIN event_tags t{n} ON t{n}.tag = ? AND t{n}.seq = t0.seq"
                    ));
                    params.push(Value::Text((*tag).to_owned()));
                }
                part.push_str(" WHERE t0.tag = ? AND t0.seq > ?");
                params.push(Value::Text((*first).to_owned()));
                params.push(Value::Integer(after));
                part.push_str(&in_types("t0.event_type", &mut params));
                part.push_str(" ORDER BY t0.seq");
                part
            }
            None => {
                params.push(Value::Integer(after));
                let mut part = "SELECT seq FROM events WHERE seq > ?".to_owned();
                part.push_str(&in_types("event_type", &mut params));
                part.push_str(" ORDER BY seq");
                part
            }
        };
        parts.push(format!("SELECT seq FROM ({part} LIMIT {limit})"));
    }
    (parts.join(" UNION "), params)
}

fn seq_after(after: Option<Position>) -> i64 {
    after.map_or(0, |p| i64::try_from(p.commit()).unwrap_or(i64::MAX))
}

impl SqliteStore {
    async fn query_page(
        &self,
        query: &Query,
        after: Option<Position>,
        size: i64,
    ) -> Result<Vec<decider_core::RecordedEvent>, StoreError> {
        let (seqs, mut params) = matching(query, seq_after(after), size);
        let statement = format!(
            "SELECT {} FROM events WHERE seq IN ({seqs}) ORDER BY seq LIMIT ?",
            sql::EVENT_COLUMNS
        );
        params.push(Value::Integer(size));
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(&statement)
                .map_err(crate::store_error)?;
            crate::reads::decode_page(&mut statement, rusqlite::params_from_iter(params), size)
        })
        .await
    }
}

impl DcbStore for SqliteStore {
    fn read_query(
        &self,
        query: &Query,
        after: Option<Position>,
        limit: Option<u64>,
    ) -> impl EventStream + use<> {
        let query = query.clone();
        crate::reads::forward_pages(self.clone(), after, limit, move |store, after, size| {
            let query = query.clone();
            async move { store.query_page(&query, after, size).await }
        })
    }

    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: AppendCondition,
    ) -> Result<AppendResult, StoreError> {
        let count = events.len();
        let append = async {
            let events = writer::prepare(stream, events)?;
            let (seqs, params) = matching(
                &condition.fail_if_events_match,
                seq_after(condition.after),
                1,
            );
            let first_match = format!(
                "SELECT seq, stream_id, event_type FROM events \
                 WHERE seq = (SELECT MIN(seq) FROM ({seqs}))"
            );
            let condition = Condition {
                after: condition.after,
                first_match,
                params,
            };
            self.shared
                .writer
                .append(stream.clone(), expected, events, Some(condition))
                .await
        };
        decider_core::measured_append("sqlite", count, append).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use decider_core::dcb::{QueryItem, Tag};

    fn tag(text: &str) -> Tag {
        Tag::new(text).unwrap()
    }

    #[test]
    fn each_item_is_one_indexed_part_and_parameters_follow_the_text() {
        let query = Query::from(QueryItem::tagged([tag("a"), tag("b")]).with_types(["X"]))
            .or(QueryItem::any().with_types(["Y", "Z"]));
        let (sql, params) = matching(&query, 7, 10);
        assert_eq!(
            sql,
            "SELECT seq FROM (SELECT t0.seq AS seq FROM event_tags t0 \
             JOIN event_tags t1 ON t1.tag = ? AND t1.seq = t0.seq \
             WHERE t0.tag = ? AND t0.seq > ? AND t0.event_type IN (?) ORDER BY t0.seq LIMIT 10) \
             UNION SELECT seq FROM (SELECT seq FROM events WHERE seq > ? \
             AND event_type IN (?, ?) ORDER BY seq LIMIT 10)"
        );
        let text = |v: &str| Value::Text(v.to_owned());
        assert_eq!(
            params,
            [
                text("b"),
                text("a"),
                Value::Integer(7),
                text("X"),
                Value::Integer(7),
                text("Y"),
                text("Z")
            ]
        );
    }
}
