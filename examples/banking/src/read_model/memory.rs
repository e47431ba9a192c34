//! The read models in process memory, for the memory store (and for EventStoreDB, where they
//! are rebuilt from the log at start).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use decider_core::projection::{EventHandler, SinkError};
use decider_core::{Position, RecordedEvent, StoreError};

use crate::account::AccountId;
use crate::read_model::{AccountView, LedgerEntry, ReadModels, Statement, account_events, apply};

/// Balances and ledgers in memory; an [`EventHandler`] for the projection runner. Cheap to
/// clone: clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemoryReadModels {
    inner: Arc<RwLock<Models>>,
}

#[derive(Debug, Default)]
struct Models {
    accounts: HashMap<AccountId, AccountView>,
    ledgers: HashMap<AccountId, Vec<LedgerEntry>>,
    position: Option<Position>,
}

impl MemoryReadModels {
    /// Empty read models.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Models> {
        // A panic while holding the lock leaves whole entries only: each is replaced at once.
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Models> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EventHandler for MemoryReadModels {
    async fn handle(&self, batch: &[RecordedEvent]) -> Result<(), SinkError> {
        let events = account_events(batch)?;
        let mut models = self.write();
        for (id, event) in &events {
            if let Some((view, entry)) = apply(models.accounts.get(id), event) {
                models.accounts.insert(*id, view);
                if let Some(entry) = entry {
                    models.ledgers.entry(*id).or_default().push(entry);
                }
            }
        }
        // Positions grow through a batch: its last one is the furthest the models have got.
        models.position = models.position.max(batch.last().map(|e| e.position));
        Ok(())
    }

    async fn reset(&self) -> Result<(), SinkError> {
        *self.write() = Models::default();
        Ok(())
    }
}

impl ReadModels for MemoryReadModels {
    /// Always 1: one process sees these read models, rebuilt from the log at every start, so
    /// there is no version to switch to.
    async fn active_version(&self) -> Result<u32, StoreError> {
        Ok(1)
    }

    async fn account(
        &self,
        version: u32,
        id: AccountId,
    ) -> Result<Option<AccountView>, StoreError> {
        only_version_1(version)?;
        Ok(self.read().accounts.get(&id).cloned())
    }

    async fn statement(
        &self,
        version: u32,
        id: AccountId,
    ) -> Result<Option<Statement>, StoreError> {
        only_version_1(version)?;
        let models = self.read();
        Ok(models.accounts.get(&id).map(|account| Statement {
            account: account.clone(),
            entries: models.ledgers.get(&id).cloned().unwrap_or_default(),
        }))
    }

    /// `None`: one process builds these, with its own count.
    async fn partition_count(&self, _version: u32) -> Result<Option<u32>, StoreError> {
        Ok(None)
    }

    async fn drop_version(&self, version: u32) -> Result<(), StoreError> {
        only_version_1(version)
    }

    /// The in-memory read models run unpartitioned (one process sees them): their one position
    /// is the projection's.
    async fn position(&self, _projection: &str) -> Result<Option<Position>, StoreError> {
        Ok(self.read().position)
    }
}

fn only_version_1(version: u32) -> Result<(), StoreError> {
    if version == 1 {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(format!(
            "the in-memory read models have version 1 only, not {version}"
        )))
    }
}
