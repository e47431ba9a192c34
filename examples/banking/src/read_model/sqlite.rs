//! The read models as tables in the SQLite store's own file, written by a
//! [`SqliteTransactionalSink`](decider_store_sqlite::SqliteTransactionalSink): each batch's rows
//! and the projection's checkpoint commit together, so every event is applied exactly once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use decider_core::projection::{
    BlueGreen, CheckpointStore, ProjectionControl, SinkError, version_name,
};
use decider_core::{Position, RecordedEvent, StoreError};
use decider_store_sqlite::{
    SqliteControl, SqliteStore, SqliteTransactionalHandler, handle_error, store_error,
};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use uuid::Uuid;

use crate::account::AccountId;
use crate::read_model::{
    AccountView, LedgerEntry, MovementKind, PROJECTION, ReadModels, Statement, account_events,
    apply, tables,
};
use crate::transfer::TransferId;

/// The statements, for the tables `{accounts}` and `{ledger}` of one version.
mod sql {
    pub(super) const CREATE: &str = "
        CREATE TABLE IF NOT EXISTS {accounts} (
            account_id BLOB PRIMARY KEY,
            owner TEXT NOT NULL,
            currency TEXT NOT NULL,
            overdraft_limit INTEGER NOT NULL,
            balance INTEGER NOT NULL,
            closed INTEGER NOT NULL,
            version INTEGER NOT NULL,
            position_commit INTEGER NOT NULL,
            position_prepare INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS {ledger} (
            account_id BLOB NOT NULL,
            revision INTEGER NOT NULL,
            kind TEXT NOT NULL,
            amount INTEGER NOT NULL,
            balance INTEGER NOT NULL,
            transfer_id BLOB,
            counterparty BLOB,
            recorded_at_ms INTEGER NOT NULL,
            PRIMARY KEY (account_id, revision)
        ) WITHOUT ROWID;";

    pub(super) const ACCOUNT: &str = "
        SELECT account_id, owner, currency, overdraft_limit, balance, closed, version,
               position_commit, position_prepare
        FROM {accounts} WHERE account_id = ?1";

    pub(super) const UPSERT_ACCOUNT: &str = "
        INSERT INTO {accounts} VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
        ON CONFLICT (account_id) DO UPDATE SET
            balance = excluded.balance, closed = excluded.closed, version = excluded.version,
            position_commit = excluded.position_commit,
            position_prepare = excluded.position_prepare";

    pub(super) const INSERT_LEDGER: &str =
        "INSERT INTO {ledger} VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

    pub(super) const LEDGER: &str = "
        SELECT revision, kind, amount, balance, transfer_id, counterparty, recorded_at_ms
        FROM {ledger} WHERE account_id = ?1 ORDER BY revision";

    pub(super) const RESET: &str = "DELETE FROM {accounts}; DELETE FROM {ledger};";

    pub(super) const DROP: &str = "DROP TABLE IF EXISTS {accounts}; DROP TABLE IF EXISTS {ledger};";
}

/// Balances and ledgers in the tables of one version ([`tables`]) in the store's file; a
/// [`SqliteTransactionalHandler`] for the projection runner of that version, and a reader of
/// every version.
#[derive(Debug, Clone)]
pub struct SqliteReadModels {
    store: SqliteStore,
    statements: Arc<Statements>,
    versions: BlueGreen<SqliteControl>,
}

#[derive(Debug)]
struct Statements {
    version: u32,
    create: String,
    account: String,
    upsert_account: String,
    insert_ledger: String,
    ledger: String,
    reset: String,
    drop: String,
}

impl Statements {
    fn new(version: u32) -> Self {
        let (accounts, ledger) = tables(version);
        let named = |statement: &str| {
            statement
                .replace("{accounts}", &accounts)
                .replace("{ledger}", &ledger)
        };
        Self {
            version,
            create: named(sql::CREATE),
            account: named(sql::ACCOUNT),
            upsert_account: named(sql::UPSERT_ACCOUNT),
            insert_ledger: named(sql::INSERT_LEDGER),
            ledger: named(sql::LEDGER),
            reset: named(sql::RESET),
            drop: named(sql::DROP),
        }
    }
}

impl SqliteReadModels {
    /// The read models of `version`, its tables created if they are missing.
    pub async fn new(store: SqliteStore, version: u32) -> Result<Self, StoreError> {
        let statements = Arc::new(Statements::new(version));
        let create = statements.clone();
        store
            .write(move |connection| connection.execute_batch(&create.create))
            .await?
            .map_err(store_error)?;
        let versions = BlueGreen::new(PROJECTION, store.control());
        Ok(Self {
            store,
            statements,
            versions,
        })
    }

    /// The statements of `version`: this one's, or made for a read of another.
    fn statements(&self, version: u32) -> Arc<Statements> {
        if version == self.statements.version {
            self.statements.clone()
        } else {
            Arc::new(Statements::new(version))
        }
    }
}

fn account_view(
    connection: &Connection,
    statements: &Statements,
    id: AccountId,
) -> rusqlite::Result<Option<AccountView>> {
    connection
        .prepare_cached(&statements.account)?
        .query_row(params![id.0], |row| {
            Ok(AccountView {
                id: AccountId(row.get(0)?),
                owner: row.get(1)?,
                currency: row.get(2)?,
                overdraft_limit: row.get(3)?,
                balance: row.get(4)?,
                closed: row.get(5)?,
                version: row.get::<_, i64>(6)? as u64,
                position: Position::new(row.get::<_, i64>(7)? as u64, row.get::<_, i64>(8)? as u64),
            })
        })
        .optional()
}

fn ledger(
    connection: &Connection,
    statements: &Statements,
    id: AccountId,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let mut statement = connection
        .prepare_cached(&statements.ledger)
        .map_err(store_error)?;
    let rows = statement
        .query_map(params![id.0], ledger_entry)
        .map_err(store_error)?;
    rows.map(|row| row.map_err(store_error).and_then(|entry| entry))
        .collect()
}

impl SqliteTransactionalHandler for SqliteReadModels {
    fn handle(
        &self,
        transaction: &Transaction<'_>,
        batch: &[RecordedEvent],
    ) -> Result<(), SinkError> {
        let fail = handle_error;
        let mut views: HashMap<AccountId, Option<AccountView>> = HashMap::new();
        let mut insert_ledger = transaction
            .prepare_cached(&self.statements.insert_ledger)
            .map_err(fail)?;
        for (id, event) in account_events(batch)? {
            if let Entry::Vacant(unread) = views.entry(id) {
                unread.insert(account_view(transaction, &self.statements, id).map_err(fail)?);
            }
            let view = views.get(&id).and_then(Option::as_ref);
            let Some((next, entry)) = apply(view, &event) else {
                continue;
            };
            if let Some(entry) = entry {
                insert_ledger
                    .execute(params![
                        id.0,
                        entry.revision as i64,
                        entry.kind.as_str(),
                        entry.amount,
                        entry.balance,
                        entry.transfer.map(|t| t.0),
                        entry.counterparty.map(|a| a.0),
                        entry.recorded_at_ms as i64,
                    ])
                    .map_err(fail)?;
            }
            views.insert(id, Some(next));
        }
        let mut upsert = transaction
            .prepare_cached(&self.statements.upsert_account)
            .map_err(fail)?;
        for view in views.values().flatten() {
            upsert
                .execute(params![
                    view.id.0,
                    view.owner,
                    view.currency,
                    view.overdraft_limit,
                    view.balance,
                    view.closed,
                    view.version as i64,
                    view.position.commit() as i64,
                    view.position.prepare() as i64,
                ])
                .map_err(fail)?;
        }
        Ok(())
    }

    fn reset(&self, transaction: &Transaction<'_>) -> Result<(), SinkError> {
        transaction
            .execute_batch(&self.statements.reset)
            .map_err(handle_error)
    }
}

impl ReadModels for SqliteReadModels {
    async fn active_version(&self) -> Result<u32, StoreError> {
        self.versions.active().await
    }

    async fn account(
        &self,
        version: u32,
        id: AccountId,
    ) -> Result<Option<AccountView>, StoreError> {
        let statements = self.statements(version);
        self.store
            .read(move |connection| account_view(connection, &statements, id).map_err(store_error))
            .await
    }

    async fn statement(
        &self,
        version: u32,
        id: AccountId,
    ) -> Result<Option<Statement>, StoreError> {
        let statements = self.statements(version);
        self.store
            .read(move |connection| {
                // One read transaction for both: one snapshot of the file.
                let snapshot = connection.unchecked_transaction().map_err(store_error)?;
                let Some(account) =
                    account_view(&snapshot, &statements, id).map_err(store_error)?
                else {
                    return Ok(None);
                };
                let entries = ledger(&snapshot, &statements, id)?;
                Ok(Some(Statement { account, entries }))
            })
            .await
    }

    async fn partition_count(&self, version: u32) -> Result<Option<u32>, StoreError> {
        let name = version_name(PROJECTION, version);
        self.store.control().partition_count(&name).await
    }

    async fn drop_version(&self, version: u32) -> Result<(), StoreError> {
        let statements = self.statements(version);
        self.store
            .write(move |connection| connection.execute_batch(&statements.drop))
            .await?
            .map_err(store_error)
    }

    async fn position(&self, projection: &str) -> Result<Option<Position>, StoreError> {
        self.store.checkpoints().load(projection).await
    }
}

/// A ledger row, or the stored kind it does not know.
fn ledger_entry(row: &Row<'_>) -> rusqlite::Result<Result<LedgerEntry, StoreError>> {
    let kind: String = row.get(1)?;
    let Some(kind) = MovementKind::from_name(&kind) else {
        return Ok(Err(StoreError::backend(format!(
            "unknown movement kind {kind:?} in the ledger"
        ))));
    };
    Ok(Ok(LedgerEntry {
        revision: row.get::<_, i64>(0)? as u64,
        kind,
        amount: row.get(2)?,
        balance: row.get(3)?,
        transfer: row.get::<_, Option<Uuid>>(4)?.map(TransferId),
        counterparty: row.get::<_, Option<Uuid>>(5)?.map(AccountId),
        recorded_at_ms: row.get::<_, i64>(6)? as u64,
    }))
}
