//! Snapshots of long streams: [`Snapshot`], [`SnapshotStore`] (where the overview is),
//! [`SnapshotPolicy`], and the handler's private view of them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;
use crate::stream::StreamId;

/// The saved state of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream whose state this is.
    pub stream: StreamId,
    /// The last revision folded into the state: loading goes on from `revision + 1`.
    pub revision: u64,
    /// The version of the state's shape it was written with
    /// ([`SnapshotPolicy::with_state_version`]).
    pub state_version: u32,
    /// The state, as JSON.
    pub payload: Bytes,
}

/// Where snapshots are kept: the latest one of each stream.
///
/// # Contract
/// - [`save`](Self::save) keeps the snapshot if the stream has none or only one of a lower
///   revision; a snapshot of the same or a lower revision than the stored one is ignored
///   (success, nothing written), so that writers finishing out of order never move a stream's
///   snapshot backwards.
/// - [`load`](Self::load) returns the stored snapshot of a stream, `None` if it has none.
/// - Errors are [`StoreError`]s; the command handler logs and otherwise ignores them.
///
/// Snapshots: the folded state of a stream saved every so often, so that loading a long stream
/// reads the latest snapshot and only the events after it.
///
/// A snapshot is only an optimisation. The [`CommandHandler`](crate::CommandHandler) ignores a
/// snapshot it cannot use — none, one written for another shape of the state (its
/// [`state_version`](Snapshot::state_version) is not the policy's), one that does not decode,
/// a store that fails — and reads the whole stream instead; deleting every snapshot changes no
/// result, only the time it takes. A failed snapshot write is logged and never fails the
/// command that triggered it.
///
/// States are stored as serde JSON. When the shape of the state changes, raise
/// [`SnapshotPolicy::with_state_version`]: older snapshots are then ignored instead of being
/// mis-decoded, and replaced as commands write new ones.
///
/// ```
/// use decider_core::{CommandHandler, Decider, SnapshotPolicy, SnapshotStore, StreamId};
/// use decider_store_memory::{MemorySnapshotStore, MemoryStore};
/// # use serde::{Deserialize, Serialize};
/// # struct Counter;
/// # #[derive(Serialize, Deserialize)] enum Event { Added { n: u64 } }
/// # impl Decider for Counter {
/// #     type Command = u64; type Event = Event; type State = u64; type Error = std::convert::Infallible;
/// #     fn initial_state(&self) -> u64 { 0 }
/// #     fn decide(&self, n: &u64, _: &u64) -> Result<Vec<Event>, Self::Error> { Ok(vec![Event::Added { n: *n }]) }
/// #     fn evolve(&self, s: u64, Event::Added { n }: &Event) -> u64 { s + n }
/// # }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let snapshots = MemorySnapshotStore::new();
/// let counters = CommandHandler::new(Counter, MemoryStore::new())
///     .with_snapshots(snapshots.clone(), SnapshotPolicy::every(100));
/// let stream = StreamId::new("counter-1")?;
/// for _ in 0..250 {
///     counters.handle(&stream, 1).await?;
/// }
/// // Taken when the stream reached 100 and 200 events: the state after revision 199.
/// let latest = snapshots.load(&stream).await?.unwrap();
/// assert_eq!(latest.revision, 199);
/// // Loading reads that snapshot and the 50 events after it.
/// assert_eq!(counters.load(&stream).await?.state, 250);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub trait SnapshotStore: Send + Sync + 'static {
    /// Keeps `snapshot` unless the stream's stored snapshot is as new or newer.
    fn save(&self, snapshot: Snapshot) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest snapshot of `stream`, if any.
    fn load(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;
}

/// When the command handler takes snapshots, and which shape of the state they hold.
///
/// A snapshot is written after an append that brings the stream to a multiple of `every`
/// events (or past one, for a batch), and after an append whose command had to read `every`
/// events or more to load its state (no snapshot yet, or a stale one).
///
/// ```
/// # use decider_core::SnapshotPolicy;
/// // The state gained a field: snapshots of version 1 no longer describe it.
/// let policy = SnapshotPolicy::every(500).with_state_version(2);
/// assert_eq!((policy.interval(), policy.state_version()), (500, 2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every: u64,
    state_version: u32,
}

impl SnapshotPolicy {
    /// A snapshot every `events` events (`0` is taken as 1), state version 1.
    pub fn every(events: u64) -> Self {
        Self {
            every: events.max(1),
            state_version: 1,
        }
    }

    /// The same policy for another version of the state's shape. Raise it whenever a change of
    /// the state type would make old snapshots decode wrongly, or not at all.
    pub fn with_state_version(mut self, state_version: u32) -> Self {
        self.state_version = state_version;
        self
    }

    /// Events between snapshots.
    pub fn interval(&self) -> u64 {
        self.every
    }

    /// The version of the state's shape snapshots are written with and read at.
    pub fn state_version(&self) -> u32 {
        self.state_version
    }

    /// Whether an append that took the stream from `before` to `after` events, in a command that
    /// read `read` events to load its state, should be followed by a snapshot.
    pub(crate) fn is_due(&self, before: u64, after: u64, read: u64) -> bool {
        after / self.every > before / self.every || read >= self.every
    }
}

/// A [`SnapshotStore`] behind a pointer, so that a handler's type does not name its snapshot
/// store. Boxing a future costs an allocation, once per snapshot read or write, not per event.
trait DynSnapshotStore: Send + Sync {
    fn save(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>>;
    fn load<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>>;
}

impl<T: SnapshotStore> DynSnapshotStore for T {
    fn save(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(SnapshotStore::save(self, snapshot))
    }

    fn load<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>> {
        Box::pin(SnapshotStore::load(self, stream))
    }
}

/// The handler's snapshot machinery: a store, a policy, and the state's serde functions,
/// captured where `S: Serialize + DeserializeOwned` is known.
pub(crate) struct Snapshots<S> {
    store: Arc<dyn DynSnapshotStore>,
    policy: SnapshotPolicy,
    encode: fn(&S) -> serde_json::Result<Vec<u8>>,
    decode: fn(&[u8]) -> serde_json::Result<S>,
}

impl<S> fmt::Debug for Snapshots<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshots")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S: Serialize + DeserializeOwned> Snapshots<S> {
    pub(crate) fn new(store: impl SnapshotStore, policy: SnapshotPolicy) -> Self {
        Self {
            store: Arc::new(store),
            policy,
            encode: |state| serde_json::to_vec(state),
            decode: |payload| serde_json::from_slice(payload),
        }
    }
}

impl<S> Snapshots<S> {
    pub(crate) fn policy(&self) -> &SnapshotPolicy {
        &self.policy
    }

    /// The latest usable snapshot of `stream`: its state and last revision. Anything unusable
    /// is logged and read past.
    pub(crate) async fn load(&self, stream: &StreamId) -> Option<(S, u64)> {
        let snapshot = match self.store.load(stream).await {
            Ok(snapshot) => snapshot?,
            Err(error) => {
                tracing::warn!(%error, "cannot load the snapshot; reading the whole stream");
                return None;
            }
        };
        if snapshot.state_version != self.policy.state_version {
            tracing::debug!(
                revision = snapshot.revision,
                snapshot_state_version = snapshot.state_version,
                state_version = self.policy.state_version,
                "ignoring a snapshot of another state version"
            );
            return None;
        }
        match (self.decode)(&snapshot.payload) {
            Ok(state) => Some((state, snapshot.revision)),
            Err(error) => {
                tracing::warn!(
                    revision = snapshot.revision,
                    %error,
                    "the snapshot does not decode; reading the whole stream"
                );
                None
            }
        }
    }

    /// The snapshot of `state` as of `revision`, if the state encodes (a failure is logged).
    pub(crate) fn take(&self, stream: &StreamId, revision: u64, state: &S) -> Option<Snapshot> {
        match (self.encode)(state) {
            Ok(payload) => Some(Snapshot {
                stream: stream.clone(),
                revision,
                state_version: self.policy.state_version,
                payload: Bytes::from(payload),
            }),
            Err(error) => {
                tracing::warn!(revision, %error, "the state does not encode; no snapshot taken");
                None
            }
        }
    }

    /// Saves `snapshot`; a failure is logged, not returned, since the command it follows has
    /// succeeded.
    pub(crate) async fn save(&self, snapshot: Snapshot) {
        let revision = snapshot.revision;
        if let Err(error) = self.store.save(snapshot).await {
            tracing::warn!(revision, %error, "cannot save the snapshot");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_when_the_stream_crosses_a_multiple_or_the_load_read_too_much() {
        let policy = SnapshotPolicy::every(10);
        assert!(!policy.is_due(0, 9, 0));
        assert!(policy.is_due(9, 10, 0));
        assert!(!policy.is_due(10, 11, 0));
        // A batch that jumps over a multiple.
        assert!(policy.is_due(8, 13, 0));
        // A load that folded 10 events or more: the snapshot is missing or stale.
        assert!(policy.is_due(24, 25, 10));
        assert!(!policy.is_due(24, 25, 9));
        assert_eq!(SnapshotPolicy::every(0).interval(), 1);
    }
}
