//! What an operator's tools ask of a store beyond the [`EventStore`] contract: which streams
//! exist. Kept apart from `EventStore` because a command handler or a runner never needs it,
//! and a store whose backend cannot list streams cheaply (EventStoreDB) need not pretend to.

use std::future::Future;

use crate::store::StoreError;
use crate::{EventStore, StreamId};

/// One stream as [`StoreCatalog::list_streams`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// The stream.
    pub stream: StreamId,
    /// How many events it holds.
    pub events: u64,
    /// The revision of its last event (0-based).
    pub last_revision: u64,
}

/// Listing streams, for inspection tools such as the `decider` CLI.
pub trait StoreCatalog: EventStore {
    /// The streams whose id starts with `prefix` (every stream when it is empty), in id order,
    /// at most `limit` of them.
    fn list_streams(
        &self,
        prefix: &str,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<StreamSummary>, StoreError>> + Send;
}
