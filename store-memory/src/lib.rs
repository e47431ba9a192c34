//! # decider-store-memory
//!
//! An in-process [`EventStore`]: for tests, demos and embedded use. It keeps the whole log in
//! memory and implements the full contract — atomic optimistic-concurrency appends, idempotent
//! re-appends, stream and global reads, catch-up-then-live subscriptions — and passes the
//! `decider-tests` conformance kit.
//!
//! Global positions are `Position::new(n, n)` for the `n`-th event (1-based). Live subscribers
//! are woken by a watch of the log's head and read the log by position, page by page: a slow
//! subscriber never loses an event, never holds more than one page, and never makes a writer
//! wait.
//!
//! For the runtime's own tests the store can inject faults ([`MemoryStore::fail_append`],
//! [`MemoryStore::commit_then_fail_append`]).
//!
//! [`MemorySnapshotStore`] keeps the command handler's snapshots in memory.
//!
//! ```
//! use decider_core::{EventData, EventFilter, EventStore, ExpectedVersion, StreamId, SubscriptionMessage};
//! use decider_store_memory::MemoryStore;
//! use futures::StreamExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let stream = StreamId::new("order-1")?;
//! store.append(&stream, ExpectedVersion::NoStream, vec![EventData::json("Placed", "{}")]).await?;
//!
//! let mut subscription = std::pin::pin!(store.subscribe_all(None, &EventFilter::all()));
//! assert!(matches!(subscription.next().await, Some(Ok(SubscriptionMessage::Event(_)))));
//! assert_eq!(subscription.next().await, Some(Ok(SubscriptionMessage::CaughtUp)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]

mod faults;
mod log;
mod reads;
mod snapshots;

use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use decider_core::dcb::{AppendCondition, DcbStore, Query};
use decider_core::{
    AppendResult, Clock, Direction, EventData, EventFilter, EventStore, EventStream,
    ExpectedVersion, Position, StoreError, StreamFrom, StreamId, Subscription, SystemClock,
};
use tokio::sync::watch;

use crate::faults::{Fault, Faults};
use crate::log::Log;

pub use crate::snapshots::MemorySnapshotStore;

/// An event store held in memory. Clones share the same log.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    log: RwLock<Log>,
    /// Number of events in the log, published after every append so that live subscribers wake.
    head: watch::Sender<u64>,
    clock: Box<dyn Clock>,
    faults: Faults,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("events", &*self.shared.head.borrow())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store stamping events with the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    /// An empty store stamping events' `recorded_at` with `clock`.
    pub fn with_clock(clock: impl Clock) -> Self {
        Self {
            shared: Arc::new(Shared {
                log: RwLock::new(Log::default()),
                head: watch::Sender::new(0),
                clock: Box::new(clock),
                faults: Faults::default(),
            }),
        }
    }

    /// The number of events in the store.
    pub fn len(&self) -> u64 {
        *self.shared.head.borrow()
    }

    /// Whether the store holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the `nth` append from now (1-based) fail with `error` without writing anything.
    pub fn fail_append(&self, nth: u64, error: StoreError) {
        self.shared.faults.schedule(nth, Fault::Refuse(error));
    }

    /// Makes the `nth` append from now (1-based) write its events and then fail with
    /// [`StoreError::Unavailable`], as when a reply is lost after the commit.
    pub fn commit_then_fail_append(&self, nth: u64) {
        self.shared.faults.schedule(nth, Fault::LoseReply);
    }

    pub(crate) fn read_log(&self) -> RwLockReadGuard<'_, Log> {
        // The log is only mutated after every check has passed, by code that cannot panic
        // midway, so a poisoned lock still guards a consistent log.
        self.shared
            .log
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_log(&self) -> RwLockWriteGuard<'_, Log> {
        self.shared
            .log
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }
}

impl MemoryStore {
    /// Runs `write` on the log under its write lock, with the injected faults, and publishes
    /// the new head. Without metrics: [`decider_core::measured_append`] records them around it.
    fn append_with(
        &self,
        write: impl FnOnce(&mut Log, std::time::SystemTime) -> Result<AppendResult, StoreError>,
    ) -> Result<AppendResult, StoreError> {
        let fault = self.shared.faults.next();
        if let Some(Fault::Refuse(error)) = fault {
            return Err(error);
        }
        let (result, len) = {
            let mut log = self.write_log();
            let result = write(&mut log, self.shared.clock.now())?;
            (result, log.len())
        };
        // Published after the lock is released: a subscriber that saw the old head and found
        // nothing new is woken by this; one that reads after it finds the events in the log.
        self.shared.head.send_replace(len);
        match fault {
            Some(Fault::LoseReply) => Err(StoreError::unavailable(
                "injected fault: the append was committed but its reply was lost",
            )),
            _ => Ok(result),
        }
    }
}

impl DcbStore for MemoryStore {
    fn read_query(
        &self,
        query: &Query,
        after: Option<Position>,
        limit: Option<u64>,
    ) -> impl EventStream + use<> {
        reads::read_query(self.clone(), query.clone(), after, limit)
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
            self.append_with(|log, now| log.append_if(stream, expected, events, &condition, now))
        };
        decider_core::measured_append("memory", count, append).await
    }
}

impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        let count = events.len();
        let append =
            async { self.append_with(|log, now| log.append(stream, expected, events, now)) };
        decider_core::measured_append("memory", count, append).await
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
        let len = self.len();
        Ok((len > 0).then(|| Position::new(len, len)))
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
