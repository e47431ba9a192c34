//! The read models as PostgreSQL tables beside the store's own, written by a
//! [`PgTransactionalSink`](decider_store_postgres::PgTransactionalSink): each batch's rows and the
//! projection's checkpoint commit together, so every event is applied exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use decider_core::projection::{
    BlueGreen, CheckpointStore, ProjectionControl, SinkError, version_name,
};
use decider_core::{Position, RecordedEvent, StoreError};
use decider_store_postgres::{
    PgCheckpoints, PgControl, PostgresStore, TransactionalHandler, handle_error, pool_error,
    store_error,
};
use tokio_postgres::{GenericClient, IsolationLevel, Row, Transaction};
use uuid::Uuid;

use crate::account::AccountId;
use crate::read_model::{
    AccountView, LedgerEntry, MovementKind, PROJECTION, ReadModels, Statement, account_events,
    apply, tables,
};
use crate::transfer::TransferId;

/// The statements, for the tables `{accounts}` and `{ledger}` of one version, in the store's schema.
mod sql {
    pub(super) const CREATE: &str = "
        SELECT pg_advisory_xact_lock(hashtext('{accounts}'));
        CREATE TABLE IF NOT EXISTS {accounts} (
            account_id uuid PRIMARY KEY,
            owner text NOT NULL,
            currency text NOT NULL,
            overdraft_limit bigint NOT NULL,
            balance bigint NOT NULL,
            closed boolean NOT NULL,
            version bigint NOT NULL,
            position_commit bigint NOT NULL,
            position_prepare bigint NOT NULL
        );
        CREATE TABLE IF NOT EXISTS {ledger} (
            account_id uuid NOT NULL,
            revision bigint NOT NULL,
            kind text NOT NULL,
            amount bigint NOT NULL,
            balance bigint NOT NULL,
            transfer_id uuid,
            counterparty uuid,
            recorded_at_ms bigint NOT NULL,
            PRIMARY KEY (account_id, revision)
        );";

    pub(super) const ACCOUNTS: &str = "
        SELECT account_id, owner, currency, overdraft_limit, balance, closed, version,
               position_commit, position_prepare
        FROM {accounts} WHERE account_id = ANY($1)";

    pub(super) const UPSERT_ACCOUNTS: &str = "
        INSERT INTO {accounts}
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                             $6::boolean[], $7::bigint[], $8::bigint[], $9::bigint[])
        ON CONFLICT (account_id) DO UPDATE SET
            balance = excluded.balance, closed = excluded.closed, version = excluded.version,
            position_commit = excluded.position_commit,
            position_prepare = excluded.position_prepare";

    pub(super) const INSERT_LEDGER: &str = "
        INSERT INTO {ledger}
        SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
                             $6::uuid[], $7::uuid[], $8::bigint[])";

    pub(super) const LEDGER: &str = "
        SELECT revision, kind, amount, balance, transfer_id, counterparty, recorded_at_ms
        FROM {ledger} WHERE account_id = $1 ORDER BY revision";

    pub(super) const RESET: &str = "TRUNCATE {accounts}, {ledger}";

    pub(super) const DROP: &str = "DROP TABLE IF EXISTS {accounts}, {ledger}";
}

/// Balances and ledgers in the tables of one version ([`tables`]) in the store's schema; a
/// [`TransactionalHandler`] for the projection runner of that version, and a reader of every
/// version.
#[derive(Debug, Clone)]
pub struct PgReadModels {
    store: PostgresStore,
    statements: Arc<Statements>,
    versions: BlueGreen<PgControl>,
}

#[derive(Debug)]
struct Statements {
    version: u32,
    create: String,
    accounts: String,
    upsert_accounts: String,
    insert_ledger: String,
    ledger: String,
    reset: String,
    drop: String,
}

impl Statements {
    fn new(schema: &str, version: u32) -> Self {
        let (accounts, ledger) = tables(version);
        let (accounts, ledger) = (format!("{schema}.{accounts}"), format!("{schema}.{ledger}"));
        let named = |statement: &str| {
            statement
                .replace("{accounts}", &accounts)
                .replace("{ledger}", &ledger)
        };
        Self {
            version,
            create: named(sql::CREATE),
            accounts: named(sql::ACCOUNTS),
            upsert_accounts: named(sql::UPSERT_ACCOUNTS),
            insert_ledger: named(sql::INSERT_LEDGER),
            ledger: named(sql::LEDGER),
            reset: named(sql::RESET),
            drop: named(sql::DROP),
        }
    }
}

impl PgReadModels {
    /// The read models of `version`, its tables created if they are missing (safe to race
    /// from several processes).
    pub async fn new(store: PostgresStore, version: u32) -> Result<Self, StoreError> {
        let statements = Arc::new(Statements::new(store.schema(), version));
        let client = store.pool().get().await.map_err(pool_error)?;
        client
            .batch_execute(&format!("BEGIN; {} COMMIT;", statements.create))
            .await
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
            Arc::new(Statements::new(self.store.schema(), version))
        }
    }

    async fn views(
        statements: &Statements,
        client: &impl GenericClient,
        ids: &[Uuid],
    ) -> Result<HashMap<AccountId, AccountView>, tokio_postgres::Error> {
        let rows = client.query(&statements.accounts, &[&ids]).await?;
        rows.iter()
            .map(|row| {
                let view = account_view(row)?;
                Ok((view.id, view))
            })
            .collect()
    }
}

fn account_view(row: &Row) -> Result<AccountView, tokio_postgres::Error> {
    Ok(AccountView {
        id: AccountId(row.try_get(0)?),
        owner: row.try_get(1)?,
        currency: row.try_get(2)?,
        overdraft_limit: row.try_get(3)?,
        balance: row.try_get(4)?,
        closed: row.try_get(5)?,
        version: row.try_get::<_, i64>(6)? as u64,
        position: Position::new(
            row.try_get::<_, i64>(7)? as u64,
            row.try_get::<_, i64>(8)? as u64,
        ),
    })
}

impl TransactionalHandler for PgReadModels {
    async fn handle(
        &self,
        transaction: &Transaction<'_>,
        batch: &[RecordedEvent],
    ) -> Result<(), SinkError> {
        let decoded = account_events(batch)?;
        let ids: Vec<Uuid> = decoded
            .iter()
            .map(|(id, ..)| id.0)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut views = Self::views(&self.statements, transaction, &ids)
            .await
            .map_err(handle_error)?;
        let mut changed = HashSet::new();
        let mut ledger = Ledger::default();
        for (id, event) in &decoded {
            if let Some((view, entry)) = apply(views.get(id), event) {
                views.insert(*id, view);
                changed.insert(*id);
                if let Some(entry) = entry {
                    ledger.push(*id, entry);
                }
            }
        }
        let mut accounts = Accounts::default();
        for view in changed.iter().filter_map(|id| views.get(id)) {
            accounts.push(view);
        }
        transaction
            .execute(
                &self.statements.upsert_accounts,
                &[
                    &accounts.ids,
                    &accounts.owners,
                    &accounts.currencies,
                    &accounts.overdraft_limits,
                    &accounts.balances,
                    &accounts.closed,
                    &accounts.versions,
                    &accounts.commits,
                    &accounts.prepares,
                ],
            )
            .await
            .map_err(handle_error)?;
        transaction
            .execute(
                &self.statements.insert_ledger,
                &[
                    &ledger.accounts,
                    &ledger.revisions,
                    &ledger.kinds,
                    &ledger.amounts,
                    &ledger.balances,
                    &ledger.transfers,
                    &ledger.counterparties,
                    &ledger.recorded_at_ms,
                ],
            )
            .await
            .map_err(handle_error)?;
        Ok(())
    }

    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), SinkError> {
        transaction
            .batch_execute(&self.statements.reset)
            .await
            .map_err(handle_error)
    }
}

impl ReadModels for PgReadModels {
    async fn active_version(&self) -> Result<u32, StoreError> {
        self.versions.active().await
    }

    async fn account(
        &self,
        version: u32,
        id: AccountId,
    ) -> Result<Option<AccountView>, StoreError> {
        let statements = self.statements(version);
        let client = self.store.pool().get().await.map_err(pool_error)?;
        let mut views = Self::views(&statements, &**client, &[id.0])
            .await
            .map_err(store_error)?;
        Ok(views.remove(&id))
    }

    async fn statement(
        &self,
        version: u32,
        id: AccountId,
    ) -> Result<Option<Statement>, StoreError> {
        let statements = self.statements(version);
        let mut client = self.store.pool().get().await.map_err(pool_error)?;
        // One snapshot for both reads: a batch committed between them would make the balance
        // and the ledger disagree.
        let transaction = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(store_error)?;
        let mut views = Self::views(&statements, &*transaction, &[id.0])
            .await
            .map_err(store_error)?;
        let Some(account) = views.remove(&id) else {
            return Ok(None);
        };
        let rows = transaction
            .query(&statements.ledger, &[&id.0])
            .await
            .map_err(store_error)?;
        let entries = rows.iter().map(ledger_entry).collect::<Result<_, _>>()?;
        transaction.commit().await.map_err(store_error)?;
        Ok(Some(Statement { account, entries }))
    }

    async fn partition_count(&self, version: u32) -> Result<Option<u32>, StoreError> {
        let name = version_name(PROJECTION, version);
        self.store.control().partition_count(&name).await
    }

    async fn drop_version(&self, version: u32) -> Result<(), StoreError> {
        let client = self.store.pool().get().await.map_err(pool_error)?;
        client
            .batch_execute(&self.statements(version).drop)
            .await
            .map_err(store_error)
    }

    async fn position(&self, projection: &str) -> Result<Option<Position>, StoreError> {
        PgCheckpoints::load(&self.store.checkpoints(), projection).await
    }
}

fn ledger_entry(row: &Row) -> Result<LedgerEntry, StoreError> {
    let column = store_error;
    let kind: &str = row.try_get(1).map_err(column)?;
    let kind = MovementKind::from_name(kind).ok_or_else(|| {
        StoreError::backend(format!("unknown movement kind {kind:?} in the ledger"))
    })?;
    Ok(LedgerEntry {
        revision: row.try_get::<_, i64>(0).map_err(column)? as u64,
        kind,
        amount: row.try_get(2).map_err(column)?,
        balance: row.try_get(3).map_err(column)?,
        transfer: row
            .try_get::<_, Option<Uuid>>(4)
            .map_err(column)?
            .map(TransferId),
        counterparty: row
            .try_get::<_, Option<Uuid>>(5)
            .map_err(column)?
            .map(AccountId),
        recorded_at_ms: row.try_get::<_, i64>(6).map_err(column)? as u64,
    })
}

/// Account views as columns, for one `unnest` upsert.
#[derive(Default)]
struct Accounts {
    ids: Vec<Uuid>,
    owners: Vec<String>,
    currencies: Vec<String>,
    overdraft_limits: Vec<i64>,
    balances: Vec<i64>,
    closed: Vec<bool>,
    versions: Vec<i64>,
    commits: Vec<i64>,
    prepares: Vec<i64>,
}

impl Accounts {
    fn push(&mut self, view: &AccountView) {
        self.ids.push(view.id.0);
        self.owners.push(view.owner.clone());
        self.currencies.push(view.currency.clone());
        self.overdraft_limits.push(view.overdraft_limit);
        self.balances.push(view.balance);
        self.closed.push(view.closed);
        self.versions.push(view.version as i64);
        self.commits.push(view.position.commit() as i64);
        self.prepares.push(view.position.prepare() as i64);
    }
}

/// Ledger lines as columns, for one `unnest` insert.
#[derive(Default)]
struct Ledger {
    accounts: Vec<Uuid>,
    revisions: Vec<i64>,
    kinds: Vec<&'static str>,
    amounts: Vec<i64>,
    balances: Vec<i64>,
    transfers: Vec<Option<Uuid>>,
    counterparties: Vec<Option<Uuid>>,
    recorded_at_ms: Vec<i64>,
}

impl Ledger {
    fn push(&mut self, account: AccountId, entry: LedgerEntry) {
        self.accounts.push(account.0);
        self.revisions.push(entry.revision as i64);
        self.kinds.push(entry.kind.as_str());
        self.amounts.push(entry.amount);
        self.balances.push(entry.balance);
        self.transfers.push(entry.transfer.map(|t| t.0));
        self.counterparties.push(entry.counterparty.map(|a| a.0));
        self.recorded_at_ms.push(entry.recorded_at_ms as i64);
    }
}
