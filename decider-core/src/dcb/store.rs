//! The store side of dynamic consistency boundaries: reading by query, and appending on the
//! condition that nothing matching a query was appended since.

use std::future::Future;

use crate::dcb::Query;
use crate::event::EventData;
use crate::position::Position;
use crate::store::{AppendResult, EventStore, EventStream, StoreError};
use crate::stream::{ExpectedVersion, StreamId};

/// The condition of an append: fail if any event matching `fail_if_events_match` was appended
/// after `after` (`None`: at all).
///
/// A decision sets `after` to the position of the last event its read returned: every event
/// matching the query that the decision did not see is then after it (stores order reads so
/// that an event committed later is never before one read earlier; see ADR 11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendCondition {
    /// The decision's query.
    pub fail_if_events_match: Query,
    /// The last position the decision read (`None`: it read nothing).
    pub after: Option<Position>,
}

impl AppendCondition {
    /// Fail if anything matching `query` was appended after `after`.
    pub fn new(query: Query, after: Option<Position>) -> Self {
        Self {
            fail_if_events_match: query,
            after,
        }
    }
}

/// An [`EventStore`] that also finds events by [`Query`] and appends on an
/// [`AppendCondition`]: dynamic consistency boundaries (ADR 11). An extension, so that a store
/// that cannot serialise conditional appends (EventStoreDB) does not pretend to.
///
/// Both views are one log. Events carry their tags in
/// [`Metadata::tags`](crate::Metadata::tags), whichever way they were appended; an event
/// appended to a stream with [`EventStore::append`] is found by a query on its tags, and an
/// event appended with a condition is in its stream, in global reads and in subscriptions, so
/// projections see it unchanged.
///
/// The guarantee: a conditional append commits only if no event matching its query, other than
/// its own, was committed after `after` — whoever wrote it, conditionally or not, to whatever
/// stream — and it is refused with [`StoreError::ConditionFailed`] otherwise, with nothing
/// written. Appends whose queries and tags cannot overlap never wait for each other.
pub trait DcbStore: EventStore {
    /// The events matching `query` after `after` (`None`: from the start), in global order, at
    /// most `limit` (`None`: all). Like [`read_all`](EventStore::read_all), it never returns an
    /// event before one that may still commit earlier in the log.
    fn read_query(
        &self,
        query: &Query,
        after: Option<Position>,
        limit: Option<u64>,
    ) -> impl EventStream + use<Self>;

    /// Appends `events` to `stream` if it is at `expected` and `condition` holds, atomically.
    ///
    /// The stream's expectation is checked first ([`StoreError::WrongExpectedVersion`]), then
    /// the condition ([`StoreError::ConditionFailed`], naming the first event that matched).
    /// An exact repeat of an append that was written (the same event ids) returns its original
    /// result marked [`repeated`](AppendResult::repeated), whatever the condition says: its own
    /// events match it now.
    fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: AppendCondition,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send;
}
