//! The application: command handlers for accounts and transfers, the read models, and the two
//! projections that keep them moving (the read models and the transfer process manager).
//!
//! The HTTP API and the demo both talk to a [`Bank`]; it knows nothing of HTTP. Every write takes
//! a [`Request`] context (idempotency key, correlation id) and answers with a [`Receipt`] whose
//! position a later read can wait for (read-your-writes).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use decider_core::projection::{
    BlueGreen, CheckpointedSink, ClaimOptions, Lease, MemoryCheckpoints, MemoryDeadLetters,
    PartitionedRunner, PoisonPolicy, ProcessHandler, Projection, ProjectionControl,
    ProjectionError, ProjectionRunner, ProjectionStatus, RunnerOptions, Sink, SinkError,
    StatusHandle, version_name,
};
use decider_core::{
    Codec, CommandError, CommandHandler, CommandOutcome, Decider, Direction, EventFilter,
    EventStore, Loaded, Metadata, Position, RecordedEvent, RetryPolicy, StoreError, StreamFrom,
    SubscriptionMessage, TraceParent,
};
#[cfg(feature = "eventstoredb")]
use decider_store_eventstoredb::EventStoreDbStore;
use decider_store_memory::MemoryStore;
#[cfg(feature = "postgres")]
use decider_store_postgres::{PgTransactionalSink, PostgresOptions, PostgresStore};
#[cfg(feature = "sqlite")]
use decider_store_sqlite::{SqliteStore, SqliteTransactionalSink};
use futures::TryStreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::account::{Account, AccountCommand, AccountError, AccountId};
use crate::money::{Amount, Currency};
use crate::process::TransferProcess;
use crate::read_model::memory::MemoryReadModels;
#[cfg(feature = "postgres")]
use crate::read_model::postgres::PgReadModels;
#[cfg(feature = "sqlite")]
use crate::read_model::sqlite::SqliteReadModels;
use crate::read_model::{AccountView, PROJECTION, ReadModels, Statement};
use crate::transfer::{
    Transfer, TransferCommand, TransferError, TransferId, TransferRequest, TransferState,
};

/// The name of the transfer process manager's projection.
pub const TRANSFER_PROCESS: &str = "banking-transfer-process";

/// The namespace of the v5 UUIDs made from idempotency keys (a fixed UUID of this example's
/// own), so that the same key always names the same account or transfer.
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_4b0e_2a57_5d7c_9e0a_b1d2_c3e4_f506);

/// Why the bank did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The account refused the command (a business rule).
    #[error(transparent)]
    Account(AccountError),
    /// The transfer refused the command.
    #[error(transparent)]
    Transfer(TransferError),
    /// The account is closed and takes no more commands.
    #[error("the account is closed")]
    AccountClosed,
    /// No such account.
    #[error("account not found")]
    AccountNotFound,
    /// No such transfer.
    #[error("transfer not found")]
    TransferNotFound,
    /// Other writers kept changing the stream; every retry lost.
    #[error("the stream kept changing under the command: {0}")]
    Conflict(StoreError),
    /// The store cannot be reached.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    /// The read model did not reach the position asked for in time.
    #[error("the read model has not reached position {wanted} within {waited:?}")]
    ReadModelBehind {
        /// The position waited for.
        wanted: Position,
        /// How long.
        waited: Duration,
    },
    /// The store refused to hold what the request carried (text it cannot keep, such as
    /// U+0000); nothing was written.
    #[error("the store cannot hold this input: {0}")]
    InvalidInput(String),
    /// Anything else: a bug or a broken store.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for BankError {
    fn from(error: StoreError) -> Self {
        match error {
            error if error.is_wrong_expected_version() => Self::Conflict(error),
            error if error.is_retryable() => Self::Unavailable(error.to_string()),
            StoreError::InvalidInput(message) => Self::InvalidInput(message),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl<E> From<CommandError<E>> for BankError
where
    BankError: From<E>,
{
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(refusal) => refusal.into(),
            CommandError::Terminal { .. } => Self::AccountClosed,
            CommandError::Store(error) => error.into(),
            CommandError::Codec(error) => Self::Internal(error.to_string()),
        }
    }
}

impl From<AccountError> for BankError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::NotOpen => Self::AccountNotFound,
            refusal => Self::Account(refusal),
        }
    }
}

impl From<TransferError> for BankError {
    fn from(error: TransferError) -> Self {
        Self::Transfer(error)
    }
}

/// Who asks, for idempotency and tracing.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The client's idempotency key: the same key gets the first outcome again, once.
    pub idempotency_key: Option<String>,
    /// Ties the events of one request together in the logs and the log of events.
    pub correlation_id: Option<Uuid>,
    /// The W3C trace the request belongs to, with the request's span as parent: carried by its
    /// events and by everything they cause.
    pub trace_parent: Option<TraceParent>,
    /// The W3C `tracestate` that came with the trace, passed on.
    pub trace_state: Option<Box<str>>,
}

impl Request {
    /// The metadata of an `operation`'s events. The key is scoped to the operation, so a
    /// deposit and a withdrawal sent with the same key are two requests.
    fn metadata(&self, operation: &str) -> Metadata {
        Metadata {
            correlation_id: self.correlation_id,
            trace_parent: self.trace_parent,
            trace_state: self.trace_state.clone(),
            idempotency_key: self
                .idempotency_key
                .as_ref()
                .map(|key| format!("{operation}:{key}")),
            ..Metadata::default()
        }
    }

    /// The id an `operation` creates: from the key when there is one, else fresh.
    fn new_id(&self, operation: &str) -> Uuid {
        match &self.idempotency_key {
            Some(key) => Uuid::new_v5(&KEY_NAMESPACE, format!("{operation}:{key}").as_bytes()),
            None => Uuid::new_v4(),
        }
    }
}

/// The operation `command` is, which scopes the client's idempotency keys: a deposit and a
/// withdrawal sent with the same key are two requests. The names are in stored keys: changing
/// one would let a request sent again before the change be carried out twice.
fn operation(command: &AccountCommand) -> &'static str {
    match command {
        AccountCommand::Open { .. } => "open",
        AccountCommand::Deposit { .. } => "deposit",
        AccountCommand::Withdraw { .. } => "withdraw",
        AccountCommand::DebitTransfer { .. } => "debit-transfer",
        AccountCommand::CreditTransfer { .. } => "credit-transfer",
        AccountCommand::RefundTransfer { .. } => "refund-transfer",
        AccountCommand::SettleTransfer { .. } => "settle-transfer",
        AccountCommand::Close => "close",
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The stream's revision after the write.
    pub version: Option<u64>,
    /// The global position of the write; wait for it to read your own write.
    pub position: Option<Position>,
    /// Whether this is the outcome of an earlier request with the same idempotency key.
    pub replayed: bool,
}

impl<E> From<CommandOutcome<E>> for Receipt {
    fn from(outcome: CommandOutcome<E>) -> Self {
        Self {
            version: outcome.last_revision,
            position: outcome.position,
            replayed: outcome.replayed,
        }
    }
}

/// How long a read may wait for the read model to catch up with a write.
#[derive(Debug, Clone, Copy)]
pub struct Consistency {
    /// The position of the write.
    pub after: Position,
    /// How long to wait at most.
    pub timeout: Duration,
}

/// How the accounts read model runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSide {
    /// Its partitions: the processes of one bank share them, each claiming free ones. Every
    /// process of a bank uses the same count; changing it is a rebuild into a new version.
    pub partitions: u32,
    /// The version this process builds (PostgreSQL and SQLite). One later than the active
    /// version is a blue/green rebuild: it builds into its own tables beside the live one
    /// (which this process keeps building too, until the switch), readers are switched to it
    /// once it has caught up, and the old version's tables are dropped.
    pub version: u32,
}

impl Default for ReadSide {
    /// One partition, version 1.
    fn default() -> Self {
        Self {
            partitions: 1,
            version: 1,
        }
    }
}

/// The versions a process of version `ours` builds while `active` is active: the active one
/// while it is older than ours (readers read it until the switch, also once every process of
/// the old version is gone), then ours; none if a later version than ours is active already
/// (this process is outdated: it reads the active version and builds nothing).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn versions_to_build(active: u32, ours: u32) -> Vec<u32> {
    use std::cmp::Ordering;
    match active.cmp(&ours) {
        Ordering::Less => vec![active, ours],
        Ordering::Equal => vec![ours],
        Ordering::Greater => Vec::new(),
    }
}

/// The transfer process manager over a store `S`.
pub type TransferProcessHandler<S> = ProcessHandler<TransferProcess, S>;

/// The application over a store `S` with read models `R`.
#[derive(Debug)]
pub struct Bank<S: EventStore, R> {
    accounts: Arc<CommandHandler<Account, S>>,
    transfers: Arc<CommandHandler<Transfer, S>>,
    read_models: R,
    store: S,
    projections: Vec<StatusHandle>,
    /// The accounts projection (version 1's; [`version_name`] names the others) and its
    /// partition count: a read of an account waits on the checkpoint of the partition of the
    /// active version that holds the account's stream.
    accounts_projection: Projection,
    partitions: u32,
    /// The partition counts of versions, once recorded (a version's count never changes).
    partition_counts: std::sync::Mutex<std::collections::HashMap<u32, u32>>,
}

impl<S: EventStore + Clone, R: ReadModels> Bank<S, R> {
    /// Opens an account; its id comes from the idempotency key when there is one.
    pub async fn open_account(
        &self,
        request: &Request,
        owner: String,
        currency: Currency,
        overdraft_limit: Option<Amount>,
    ) -> Result<(AccountId, Receipt), BankError> {
        let id = AccountId(request.new_id("open"));
        let command = AccountCommand::Open {
            owner,
            currency,
            overdraft_limit,
        };
        let receipt = self.account_command(request, id, command).await?;
        Ok((id, receipt))
    }

    /// Runs `command` on account `id`.
    pub async fn account_command(
        &self,
        request: &Request,
        id: AccountId,
        command: AccountCommand,
    ) -> Result<Receipt, BankError> {
        let metadata = request.metadata(operation(&command));
        let outcome = self
            .accounts
            .handle_with(&id.stream(), command, metadata)
            .await?;
        Ok(outcome.into())
    }

    /// Asks for a transfer; the process manager carries it out. Its id comes from the
    /// idempotency key when there is one, so a retried request moves money once.
    pub async fn request_transfer(
        &self,
        request: &Request,
        transfer: TransferRequest,
    ) -> Result<(TransferId, Receipt), BankError> {
        // Unknown accounts are the caller's mistake, told at once; a closed destination or
        // another currency is found by the process, which then refunds the source.
        for account in [transfer.from, transfer.to] {
            if !self.exists(account).await? {
                return Err(BankError::AccountNotFound);
            }
        }
        let id = TransferId(request.new_id("transfer"));
        let outcome = self
            .transfers
            .handle_with(
                &id.stream(),
                TransferCommand::Request(transfer),
                request.metadata("transfer"),
            )
            .await?;
        Ok((id, outcome.into()))
    }

    /// Whether account `id` was ever opened: whether its stream has a first event (always its
    /// opening), which costs one short read however long the stream.
    async fn exists(&self, id: AccountId) -> Result<bool, BankError> {
        let first = self
            .edge_event(id, StreamFrom::Start, Direction::Forward)
            .await?;
        Ok(first.is_some())
    }

    /// The first (`Start`, `Forward`) or last (`End`, `Backward`) event of account `id`.
    async fn edge_event(
        &self,
        id: AccountId,
        from: StreamFrom,
        direction: Direction,
    ) -> Result<Option<RecordedEvent>, BankError> {
        let mut events =
            std::pin::pin!(
                self.store
                    .read_stream(&id.stream(), from, direction, Some(1))
            );
        Ok(events.try_next().await?)
    }

    /// Where transfer `id` is, read from its stream; with `wait`, follows the stream up to that
    /// long for the transfer to complete or fail.
    pub async fn transfer(
        &self,
        id: TransferId,
        wait: Option<Duration>,
    ) -> Result<(TransferState, Option<u64>), BankError> {
        let stream = id.stream();
        let Loaded {
            mut state,
            last_revision: mut last,
        } = self.transfers.load(&stream).await?;
        if last.is_none() {
            return Err(BankError::TransferNotFound);
        }
        let Some(wait) = wait else {
            return Ok((state, last));
        };
        let mut events = std::pin::pin!(self.store.subscribe_stream(&stream, last));
        let mut deadline = std::pin::pin!(tokio::time::sleep(wait));
        while !Transfer.is_terminal(&state) {
            let next = tokio::select! {
                next = events.try_next() => next?,
                () = &mut deadline => break,
            };
            match next {
                Some(SubscriptionMessage::Event(recorded)) => {
                    let event = self
                        .transfers
                        .codec()
                        .decode(&recorded)
                        .map_err(|error| BankError::Internal(error.to_string()))?;
                    state = Transfer.evolve(state, &event);
                    last = Some(recorded.revision);
                }
                Some(SubscriptionMessage::CaughtUp) => {}
                None => break,
            }
        }
        Ok((state, last))
    }

    /// The account's view from the active version of the read model, after waiting for
    /// `consistency` if given.
    pub async fn account(
        &self,
        id: AccountId,
        consistency: Option<Consistency>,
    ) -> Result<AccountView, BankError> {
        let (_, account) = self
            .in_active_version(id, consistency, |version| {
                self.read_models.account(version, id)
            })
            .await?;
        account.ok_or(BankError::AccountNotFound)
    }

    /// The account's view and ledger, read together from the active version of the read model
    /// (so the balance is the ledger's last), after waiting for `consistency` if given; with the
    /// version read.
    pub async fn statement(
        &self,
        id: AccountId,
        consistency: Option<Consistency>,
    ) -> Result<(u32, Statement), BankError> {
        let (version, statement) = self
            .in_active_version(id, consistency, |version| {
                self.read_models.statement(version, id)
            })
            .await?;
        Ok((version, statement.ok_or(BankError::AccountNotFound)?))
    }

    /// `read` of the active version, once caught up with `consistency`.
    async fn in_active_version<T, Read, Fut>(
        &self,
        id: AccountId,
        consistency: Option<Consistency>,
        read: Read,
    ) -> Result<(u32, T), BankError>
    where
        Read: Fn(u32) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut version = self.read_models.active_version().await?;
        loop {
            self.caught_up(version, id, consistency).await?;
            match read(version).await {
                Ok(found) => return Ok((version, found)),
                Err(error) => {
                    // A rebuild may have switched since the look, and dropped this version's
                    // tables after its grace period: read the version active now.
                    let active = self.read_models.active_version().await?;
                    if active == version {
                        return Err(error.into());
                    }
                    version = active;
                }
            }
        }
    }

    /// The account's view once the read model holds every event of the account written so far
    /// (waiting up to `timeout`): for tools and tests that need the read model to be current.
    pub async fn account_now(
        &self,
        id: AccountId,
        timeout: Duration,
    ) -> Result<AccountView, BankError> {
        let last = self
            .edge_event(id, StreamFrom::End, Direction::Backward)
            .await?;
        let Some(last) = last else {
            return Err(BankError::AccountNotFound);
        };
        let consistency = Consistency {
            after: last.position,
            timeout,
        };
        self.account(id, Some(consistency)).await
    }

    /// Waits until the partition of `version` of the accounts projection that holds `id`'s
    /// stream has reached `consistency`'s position (partitions move at their own pace; the
    /// others do not matter to this account).
    async fn caught_up(
        &self,
        version: u32,
        id: AccountId,
        consistency: Option<Consistency>,
    ) -> Result<(), BankError> {
        let Some(Consistency { after, timeout }) = consistency else {
            return Ok(());
        };
        let partition = Projection::new(version_name(PROJECTION, version))
            .with_filter(self.accounts_projection.filter().clone())
            .partition_for(&id.stream(), self.partition_count(version).await?)
            .map_err(|error| BankError::Internal(error.to_string()))?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        while self.read_models.position(partition.name()).await? < Some(after) {
            if started.elapsed() >= timeout {
                return Err(BankError::ReadModelBehind {
                    wanted: after,
                    waited: timeout,
                });
            }
            tokio::time::sleep(pause.min(timeout.saturating_sub(started.elapsed()))).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `version`'s partition count, as its runners recorded it (kept once known); this
    /// process's own until one is recorded.
    async fn partition_count(&self, version: u32) -> Result<u32, BankError> {
        let cached = self
            .partition_counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&version)
            .copied();
        if let Some(count) = cached {
            return Ok(count);
        }
        let Some(recorded) = self.read_models.partition_count(version).await? else {
            return Ok(self.partitions);
        };
        self.partition_counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(version, recorded);
        Ok(recorded)
    }

    /// The status of the bank's projections.
    pub fn projections(&self) -> Vec<ProjectionStatus> {
        self.projections.iter().map(StatusHandle::get).collect()
    }

    /// Whether the store answers.
    pub async fn check_store(&self) -> Result<Option<Position>, BankError> {
        Ok(self.store.head_position().await?)
    }

    /// The account command handler, for what the HTTP API does not cover (tests, tools).
    pub fn accounts(&self) -> &CommandHandler<Account, S> {
        &self.accounts
    }

    /// The read models.
    pub fn read_models(&self) -> &R {
        &self.read_models
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

/// A bank with its projections running; [`stop`](Self::stop) ends them.
#[derive(Debug)]
pub struct Running<S: EventStore, R> {
    bank: Arc<Bank<S, R>>,
    shutdown: watch::Sender<bool>,
    runners: Vec<JoinHandle<Result<(), ProjectionError>>>,
}

impl<S: EventStore + Clone, R: ReadModels> Running<S, R> {
    /// Starts the projections of a bank over `store`: the read models, each version of `builds`
    /// into its sink (as its count of partitions, claimed with the other processes of the bank;
    /// the version `read_side.version` switched to once caught up), and the transfer
    /// process with `process_checkpoints`, each leased with `lease` and reporting to (and
    /// taking operators' requests from) `control`, which also keeps the active version.
    #[allow(clippy::too_many_arguments, reason = "the one place that wires a bank")]
    fn start<K1, K2, L, C>(
        store: S,
        read_models: R,
        builds: Vec<(u32, u32, K1)>,
        process_sink: impl FnOnce(TransferProcessHandler<S>) -> K2,
        lease: L,
        control: C,
        read_side: ReadSide,
    ) -> Result<Self, StoreError>
    where
        K1: Sink,
        K2: Sink,
        L: Lease + Clone,
        C: ProjectionControl + Clone,
    {
        // A busy account sees many writers (its owner, transfers both ways): retry more than the
        // default before answering 409.
        let retry = RetryPolicy {
            max_retries: 10,
            ..RetryPolicy::default()
        };
        let accounts = Arc::new(
            CommandHandler::new(Account, store.clone())
                .with_cache(100_000)
                .with_retry_policy(retry),
        );
        let transfers = Arc::new(
            CommandHandler::new(Transfer, store.clone())
                .with_cache(100_000)
                .with_retry_policy(retry),
        );
        let (shutdown, stopped) = watch::channel(false);
        // No lingering for fuller batches: a transfer waits on both projections, and events that
        // arrive while a batch is applied make the next batch anyway.
        // And back within two seconds of the database's return after an outage.
        let options = RunnerOptions {
            max_linger: Duration::ZERO,
            retry_max: Duration::from_secs(2),
            ..RunnerOptions::default()
        };
        let accounts_projection = Projection::new(PROJECTION)
            .with_filter(EventFilter::all().with_categories(["account"]));
        let versions = BlueGreen::new(PROJECTION, control.clone());
        let mut read_sides = Vec::with_capacity(builds.len());
        for (version, partitions, sink) in builds {
            let runner = PartitionedRunner::new(
                store.clone(),
                versions.projection(&accounts_projection, version),
                partitions,
                Arc::new(sink),
            )
            .map_err(|error| StoreError::InvalidInput(format!("accounts partitions: {error}")))?
            .with_claims(ClaimOptions {
                // Every process may take every partition: a survivor takes a dead one's over.
                limit: usize::MAX,
                claim_interval: Duration::from_millis(500),
            })
            .with_options(RunnerOptions {
                poison: PoisonPolicy::Stop,
                ..options.clone()
            })
            .with_lease(lease.clone())
            .with_control(control.clone());
            read_sides.push((version, runner));
        }
        let process = ProjectionRunner::new(
            store.clone(),
            // Each transfer is driven to its end from its request; the later events of the
            // transfer are the manager's own records and need no reaction.
            Projection::new(TRANSFER_PROCESS).with_filter(
                EventFilter::all()
                    .with_categories(["transfer"])
                    .with_event_types(["Requested"]),
            ),
            process_sink(ProcessHandler::new(
                TransferProcess,
                transfers.clone(),
                accounts.clone(),
            )),
        )
        .with_options(RunnerOptions {
            poison: PoisonPolicy::DeadLetter,
            ..options
        })
        .with_lease(lease)
        .with_control(control);
        let mut projections: Vec<StatusHandle> = read_sides
            .iter()
            .flat_map(|(_, runner)| runner.status_handles())
            .collect();
        projections.push(process.status_handle());
        let bank = Arc::new(Bank {
            accounts,
            transfers,
            read_models,
            store,
            projections,
            accounts_projection,
            partitions: read_side.partitions,
            partition_counts: Default::default(),
        });
        let mut runners = vec![spawn(process, stopped.clone())];
        for (version, runner) in read_sides {
            if version == read_side.version {
                runners.push(switch_when_caught_up(
                    &bank,
                    versions.clone(),
                    &runner,
                    version,
                    stopped.clone(),
                ));
            }
            runners.push(spawn_version(
                runner,
                version,
                versions.clone(),
                stopped.clone(),
            ));
        }
        Ok(Self {
            bank,
            shutdown,
            runners,
        })
    }

    /// The bank.
    pub fn bank(&self) -> &Arc<Bank<S, R>> {
        &self.bank
    }

    /// Stops the projections (each finishes and checkpoints the batch in hand).
    pub async fn stop(self) -> Result<(), BankError> {
        self.shutdown.send_replace(true);
        for runner in self.runners {
            runner
                .await
                .map_err(|error| BankError::Internal(error.to_string()))?
                .map_err(|error| BankError::Internal(error.to_string()))?;
        }
        Ok(())
    }
}

/// Runs `version`'s partitions until shutdown, or until a later version is switched to.
fn spawn_version<S, K, L, C>(
    runner: PartitionedRunner<S, K, L, C>,
    version: u32,
    versions: BlueGreen<C>,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<Result<(), ProjectionError>>
where
    S: EventStore + Clone,
    K: Sink + Clone,
    L: Lease + Clone,
    C: ProjectionControl + Clone,
{
    tokio::spawn(async move {
        runner
            .run(async move {
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => {}
                    () = versions.superseded(version) => {
                        tracing::info!(version, "a later version of the accounts read model is active: this one stops");
                    }
                }
            })
            .await
    })
}

/// Switches readers to `version` (built by `runner`) once it has caught up, then drops the
/// version they read before (after the grace period for reads in flight); nothing if
/// `version` or a later one is active already. Ends early at shutdown.
fn switch_when_caught_up<S, K, L, C, R>(
    bank: &Arc<Bank<S, R>>,
    versions: BlueGreen<C>,
    runner: &PartitionedRunner<S, K, L, C>,
    version: u32,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<Result<(), ProjectionError>>
where
    S: EventStore + Clone,
    K: Sink + Clone,
    L: Lease + Clone,
    C: ProjectionControl + Clone,
    R: ReadModels,
{
    let (bank, store) = (bank.clone(), bank.store.clone());
    let sink = runner.sink().clone();
    let partitions: Vec<Projection> = runner.partitions().cloned().collect();
    tokio::spawn(async move {
        let drop_old = |old: u32| async move {
            bank.read_models
                .drop_version(old)
                .await
                .map_err(|error| SinkError::Fatal(error.to_string()))
        };
        tokio::select! {
            switched = versions.switch_when_caught_up(&store, &sink, &partitions, version, drop_old) => {
                switched.map(|_| ()).inspect_err(|error| {
                    tracing::error!(version, %error, "the switch to this version of the accounts read model failed");
                })
            }
            _ = stopped.wait_for(|stop| *stop) => Ok(()),
        }
    })
}

fn spawn<S, K, L, C>(
    runner: ProjectionRunner<S, K, L, C>,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<Result<(), ProjectionError>>
where
    S: EventStore + Clone,
    K: Sink,
    L: Lease,
    C: ProjectionControl,
{
    tokio::spawn(async move {
        runner
            .run(async move {
                // A dropped sender stops the runner too.
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
    })
}

/// A bank on the in-memory store, with in-memory read models.
pub fn in_memory() -> Running<MemoryStore, MemoryReadModels> {
    in_memory_on(MemoryStore::new())
}

/// A bank on `store` with read models, checkpoints and dead letters in memory.
pub fn in_memory_on<S: EventStore + Clone>(store: S) -> Running<S, MemoryReadModels> {
    let read_models = MemoryReadModels::new();
    Running::start(
        store,
        read_models.clone(),
        vec![(
            1,
            1,
            CheckpointedSink::new(
                read_models,
                MemoryCheckpoints::default(),
                MemoryDeadLetters::default(),
            ),
        )],
        |process| {
            CheckpointedSink::new(
                process,
                MemoryCheckpoints::default(),
                MemoryDeadLetters::default(),
            )
        },
        decider_core::projection::Unleased,
        // Nothing outside this process could see it.
        decider_core::projection::Uncontrolled,
        // One process: nothing to share, and no version to switch to.
        ReadSide::default(),
    )
    .unwrap_or_else(|error| unreachable!("one partition always exists: {error}"))
}

/// A bank on EventStoreDB / KurrentDB at `url`, with its read models in memory: they are
/// rebuilt from the log when the bank starts, and the transfer process goes over every request
/// again (each already finished transfer costs one read; an unfinished one is carried on).
/// Run one such process per store: EventStoreDB gives no lease to keep a second process's
/// transfer manager from driving the same transfers.
#[cfg(feature = "eventstoredb")]
pub async fn on_eventstoredb(
    url: &str,
) -> Result<Running<EventStoreDbStore, MemoryReadModels>, StoreError> {
    Ok(in_memory_on(EventStoreDbStore::connect(url).await?))
}

/// A bank on PostgreSQL: events, read models, checkpoints and dead letters in `options.schema`
/// (created and migrated as needed); projections leased, so that several processes may serve
/// the same bank.
#[cfg(feature = "postgres")]
pub async fn on_postgres(
    url: &str,
    options: PostgresOptions,
    read_side: ReadSide,
) -> Result<Running<PostgresStore, PgReadModels>, StoreError> {
    on_postgres_store(PostgresStore::connect_with(url, options).await?, read_side).await
}

/// A bank on `store` (migrated here if needed); see [`on_postgres`].
#[cfg(feature = "postgres")]
pub async fn on_postgres_store(
    store: PostgresStore,
    read_side: ReadSide,
) -> Result<Running<PostgresStore, PgReadModels>, StoreError> {
    store.migrate().await?;
    let (active, plan) = plan(&store.control(), read_side).await?;
    let mut builds = Vec::new();
    for (version, partitions) in plan {
        let models = PgReadModels::new(store.clone(), version).await?;
        let sink = PgTransactionalSink::new(store.clone(), models);
        builds.push((version, partitions, sink));
    }
    // Readers read whichever version is active; these models' own version is the latest there
    // is (its tables exist or are being built).
    let read_models = PgReadModels::new(store.clone(), active.max(read_side.version)).await?;
    let leases = store.leases()?;
    Running::start(
        store.clone(),
        read_models,
        builds,
        |process| CheckpointedSink::new(process, store.checkpoints(), store.dead_letters()),
        leases,
        store.control(),
        read_side,
    )
}

/// A bank on the SQLite file of `url` (`sqlite://PATH`, created if missing): events, read
/// models, checkpoints, dead letters and leases in that one file, the read models written
/// exactly once; projections leased, so that several processes may serve the same file.
#[cfg(feature = "sqlite")]
pub async fn on_sqlite(
    url: &str,
    read_side: ReadSide,
) -> Result<Running<SqliteStore, SqliteReadModels>, StoreError> {
    let url = url.to_owned();
    // Opening reads and may create the file: blocking work, kept off the runtime's workers.
    let store = tokio::task::spawn_blocking(move || SqliteStore::connect(&url))
        .await
        .map_err(|error| {
            StoreError::backend(format!("opening the SQLite file failed: {error}"))
        })??;
    on_sqlite_store(store, read_side).await
}

/// A bank on `store`; see [`on_sqlite`].
#[cfg(feature = "sqlite")]
pub async fn on_sqlite_store(
    store: SqliteStore,
    read_side: ReadSide,
) -> Result<Running<SqliteStore, SqliteReadModels>, StoreError> {
    let (active, plan) = plan(&store.control(), read_side).await?;
    let mut builds = Vec::new();
    for (version, partitions) in plan {
        let models = SqliteReadModels::new(store.clone(), version).await?;
        let sink = SqliteTransactionalSink::new(store.clone(), models);
        builds.push((version, partitions, sink));
    }
    let read_models = SqliteReadModels::new(store.clone(), active.max(read_side.version)).await?;
    Running::start(
        store.clone(),
        read_models,
        builds,
        |process| CheckpointedSink::new(process, store.checkpoints(), store.dead_letters()),
        store.leases(),
        store.control(),
        read_side,
    )
}

/// The active version, and the versions this process builds ([`versions_to_build`]), each
/// with its partition count: ours with `read_side`'s, recorded in `control` (refused if the
/// version runs with another count), an older one with the count recorded for it (so that this
/// process's partitions are the same as the other processes' ones).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
async fn plan(
    control: &impl ProjectionControl,
    read_side: ReadSide,
) -> Result<(u32, Vec<(u32, u32)>), StoreError> {
    if read_side.version == 0 {
        return Err(StoreError::InvalidInput(
            "accounts version 0: versions count from 1".to_owned(),
        ));
    }
    let active = decider_core::projection::version_number(
        control.active_version(PROJECTION).await?.as_deref(),
    )?;
    let mut builds = Vec::new();
    for version in versions_to_build(active, read_side.version) {
        let name = version_name(PROJECTION, version);
        let partitions = if version == read_side.version {
            let recorded = control
                .claim_partition_count(&name, read_side.partitions)
                .await?;
            if recorded != read_side.partitions {
                return Err(StoreError::InvalidInput(format!(
                    "version {version} of the accounts read model runs as {recorded} partitions, \
                     not {}: every process of a version uses its count (--accounts-partitions \
                     {recorded}); a new count is a new version (--accounts-version {})",
                    read_side.partitions,
                    version + 1
                )));
            }
            recorded
        } else {
            control
                .partition_count(&name)
                .await?
                .unwrap_or(read_side.partitions)
        };
        builds.push((version, partitions));
    }
    Ok((active, builds))
}

#[cfg(all(test, any(feature = "postgres", feature = "sqlite")))]
mod tests {
    use super::versions_to_build;

    #[test]
    fn a_process_builds_the_active_version_until_its_own_is_switched_to() {
        assert_eq!(versions_to_build(1, 1), [1]);
        assert_eq!(versions_to_build(1, 2), [1, 2]);
        assert_eq!(versions_to_build(2, 2), [2]);
        // Outdated: a later version is active; it reads that one and builds nothing.
        assert_eq!(versions_to_build(3, 2), Vec::<u32>::new());
    }
}
