//! Leases: at most one active runner per projection.
//!
//! A runner acquires its projection's lease before it reads anything and gives up as soon as the
//! lease is lost. [`LocalLeases`] serialise runners of one process; `decider-store-postgres`
//! holds a PostgreSQL advisory lock on a dedicated connection, so runners in different processes
//! take over from each other when one dies.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::store::StoreError;

/// A held lease. Dropping it releases the lease.
pub struct LeaseGuard {
    lost: watch::Receiver<bool>,
    _release: Box<dyn Send + Sync>,
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("lost", &*self.lost.borrow())
            .finish_non_exhaustive()
    }
}

impl LeaseGuard {
    /// A guard that holds `release` until dropped and reports the lease lost once `lost` says
    /// `true` (or its sender is dropped).
    pub fn new(lost: watch::Receiver<bool>, release: impl Send + Sync + 'static) -> Self {
        Self {
            lost,
            _release: Box::new(release),
        }
    }

    /// A guard that is never lost.
    pub fn held(release: impl Send + Sync + 'static) -> Self {
        let (keep, lost) = watch::channel(false);
        Self::new(lost, (keep, release))
    }

    /// Whether the lease is lost already.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow() || self.lost.has_changed().is_err()
    }

    /// Resolves when the lease is lost.
    pub async fn lost(&mut self) {
        // An error means the sender is gone, which also means the lease is gone.
        let _ = self.lost.wait_for(|lost| *lost).await;
    }
}

/// Grants one holder at a time per projection name.
pub trait Lease: Send + Sync + 'static {
    /// Waits until the lease of `projection` is free, then holds it.
    fn acquire(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<LeaseGuard, StoreError>> + Send;

    /// Holds the lease of `projection` if it is free now; `None` if another holder has it.
    /// Partitioned runners claim free partitions with it, rather than wait for a taken one.
    fn try_acquire(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<LeaseGuard>, StoreError>> + Send;
}

/// No lease: every runner runs. For a single process that starts each projection once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unleased;

impl Lease for Unleased {
    async fn acquire(&self, _projection: &str) -> Result<LeaseGuard, StoreError> {
        Ok(LeaseGuard::held(()))
    }

    async fn try_acquire(&self, _projection: &str) -> Result<Option<LeaseGuard>, StoreError> {
        Ok(Some(LeaseGuard::held(())))
    }
}

/// Leases within one process: a second runner of the same projection waits for the first.
#[derive(Debug, Clone, Default)]
pub struct LocalLeases(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl LocalLeases {
    fn lock_of(&self, projection: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(projection.to_owned())
            .or_default()
            .clone()
    }
}

impl Lease for LocalLeases {
    async fn acquire(&self, projection: &str) -> Result<LeaseGuard, StoreError> {
        Ok(LeaseGuard::held(
            self.lock_of(projection).lock_owned().await,
        ))
    }

    async fn try_acquire(&self, projection: &str) -> Result<Option<LeaseGuard>, StoreError> {
        Ok(self
            .lock_of(projection)
            .try_lock_owned()
            .ok()
            .map(LeaseGuard::held))
    }
}

impl<T: Lease> Lease for Arc<T> {
    fn acquire(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<LeaseGuard, StoreError>> + Send {
        (**self).acquire(projection)
    }

    fn try_acquire(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<LeaseGuard>, StoreError>> + Send {
        (**self).try_acquire(projection)
    }
}
