//! How many HTTP/2 streams one store keeps open on its connection.
//!
//! A server limits the streams open at once on one HTTP/2 connection (KurrentDB: Kestrel's
//! `MaxStreamsPerConnection`, 100 unless configured; see ADR 7). The client opens one stream per
//! call (an append, a read while it is being read) and one per subscription for as long as it
//! lives, and queues what is over the server's limit inside HTTP/2 where nothing tells one call
//! from another: 100 live subscriptions would leave every append waiting for one of them to end.
//! The store therefore counts its own streams in two budgets, so that subscriptions can never
//! take the streams that calls need, and both together stay below the server's limit.

use std::num::NonZeroUsize;
use std::sync::Arc;

use decider_core::StoreError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The streams an [`EventStoreDbStore`](crate::EventStoreDbStore) keeps open at once on its
/// connection: `calls` for appends and reads (a read holds its stream until it has been read to
/// its end or dropped), `subscriptions` for subscriptions (each for its whole life).
///
/// A call or subscription over its budget waits for a stream of that budget to be released; a
/// task that keeps a read open while it appends holds two call streams meanwhile, so more such
/// tasks than `calls` wait for each other.
/// The defaults (64 and 32) stay below the 100 streams a KurrentDB server admits on one
/// connection by default, leaving room for the client's own calls (server features, gossip);
/// against a server configured with another `Kestrel:Limits:Http2:MaxStreamsPerConnection`,
/// choose budgets whose sum stays below it. Clones of a store share its budgets.
///
/// ```
/// use std::num::NonZeroUsize;
/// use decider_store_eventstoredb::Limits;
///
/// let limits = Limits {
///     subscriptions: NonZeroUsize::new(8).expect("not zero"),
///     ..Limits::default()
/// };
/// assert_eq!(limits.calls.get(), 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Appends and reads in flight at once.
    pub calls: NonZeroUsize,
    /// Subscriptions open at once.
    pub subscriptions: NonZeroUsize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            calls: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            subscriptions: NonZeroUsize::new(32).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// The two budgets of one store.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: Limits,
    calls: Arc<Semaphore>,
    subscriptions: Arc<Semaphore>,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Self {
        let permits = |wanted: NonZeroUsize| wanted.get().min(Semaphore::MAX_PERMITS);
        Self {
            limits,
            calls: Arc::new(Semaphore::new(permits(limits.calls))),
            subscriptions: Arc::new(Semaphore::new(permits(limits.subscriptions))),
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// A stream for one append or read, released when the permit is dropped.
    pub(crate) async fn call(&self) -> Result<OwnedSemaphorePermit, StoreError> {
        acquire(&self.calls).await
    }

    /// A stream for one subscription, released when the permit is dropped. Waiting for one is
    /// logged: a subscription that does not start looks like a hang otherwise.
    pub(crate) async fn subscription(&self) -> Result<OwnedSemaphorePermit, StoreError> {
        if let Ok(permit) = Arc::clone(&self.subscriptions).try_acquire_owned() {
            return Ok(permit);
        }
        tracing::warn!(
            limit = self.limits.subscriptions.get(),
            "every subscription stream of this EventStoreDB store is in use; the new subscription waits for one to end"
        );
        acquire(&self.subscriptions).await
    }
}

async fn acquire(semaphore: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, StoreError> {
    // The semaphores are never closed; an error would mean a bug, reported rather than hidden.
    Arc::clone(semaphore)
        .acquire_owned()
        .await
        .map_err(|_| StoreError::backend("the EventStoreDB store's stream budget was closed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscriptions_do_not_take_the_streams_of_calls() {
        let one = NonZeroUsize::MIN;
        let budget = Budget::new(Limits {
            calls: one,
            subscriptions: one,
        });
        let _subscription = budget.subscription().await;
        let call = budget.call().await;
        assert!(call.is_ok(), "a call waited for a subscription's stream");
        assert!(
            Arc::clone(&budget.calls).try_acquire_owned().is_err(),
            "the call budget admits more than its limit"
        );
    }
}
