//! The command handler's public face: [`CommandHandler`] (documented there), its builder and
//! accessors, `handle` and `load`. The retry loop is in `attempt.rs`, the policy in `retry.rs`,
//! outcomes and errors in `outcome.rs`.

mod attempt;
mod outcome;
mod retry;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use tracing::field::display;

use crate::cache::StateCache;
use crate::codec::{Codec, JsonCodec};
use crate::decider::Decider;
use crate::ids::{IdGenerator, RandomIds};
use crate::loaded::Loaded;
use crate::metadata::Metadata;
use crate::snapshot::{SnapshotPolicy, SnapshotStore, Snapshots};
use crate::store::EventStore;
use crate::stream::StreamId;
use crate::telemetry;
use crate::trace::continue_trace;

pub use outcome::{CommandError, CommandOutcome};
pub use retry::RetryPolicy;

/// Runs commands of a [`Decider`] against an [`EventStore`].
///
/// Cheap to share: wrap it in an `Arc` and call it from many tasks; commands on one stream are
/// serialised by the store's optimistic concurrency, not by locks here.
///
/// ```
/// # use decider_core::{CommandHandler, Decider, SnapshotPolicy};
/// # use decider_store_memory::{MemorySnapshotStore, MemoryStore};
/// # use serde::{Deserialize, Serialize};
/// # struct Account;
/// # #[derive(Serialize, Deserialize)] enum Event { Deposited { amount: u64 } }
/// # impl Decider for Account {
/// #     type Command = u64; type Event = Event; type State = u64; type Error = std::convert::Infallible;
/// #     fn initial_state(&self) -> u64 { 0 }
/// #     fn decide(&self, n: &u64, _: &u64) -> Result<Vec<Event>, Self::Error> { Ok(vec![Event::Deposited { amount: *n }]) }
/// #     fn evolve(&self, s: u64, Event::Deposited { amount }: &Event) -> u64 { s + amount }
/// # }
/// // Warm streams cost one append per command; cold ones read at most 1,000 events.
/// let accounts = CommandHandler::new(Account, MemoryStore::new())
///     .with_cache(100_000)
///     .with_snapshots(MemorySnapshotStore::new(), SnapshotPolicy::every(1_000));
/// # let _ = accounts;
/// ```
///
/// The command handler: load, fold, decide, append — and retry on conflict.
///
/// [`CommandHandler::handle`] reads the stream, folds it into state, refuses the command if the
/// stream is terminal, asks the decider, encodes the new events and appends them expecting the
/// exact version it read. If another writer got there first the store refuses with
/// [`StoreError::WrongExpectedVersion`](crate::StoreError::WrongExpectedVersion); the handler then reads the events it missed and decides
/// again, a bounded number of times with jittered backoff, and finally returns the conflict.
///
/// Two opt-in optimisations make loading cheaper, and change no result:
/// - a [state cache](crate::StateCache) ([`CommandHandler::with_cache`]): a command on a warm stream
///   decides on the cached state and appends expecting its revision — one round trip to the
///   store instead of a read and an append. A stale entry makes the append fail with a conflict,
///   which is retried as above, so a command never succeeds on a state it did not see;
/// - [snapshots](crate::SnapshotStore) ([`CommandHandler::with_snapshots`]): a cold load reads the
///   latest snapshot and the events after it instead of the whole stream.
///
/// A command may carry an idempotency key (in its [`Metadata`]). The key is stored on every event
/// the command produces and turned into deterministic event ids, so that a repeated command —
/// a client retry, a redelivered message — returns the original outcome instead of deciding
/// again, and two identical commands racing write exactly one set of events.
///
/// A store that is [unavailable](crate::StoreError::Unavailable) (a dropped connection, a database
/// restart) fails a command without a key at once: its append may have committed before the
/// reply was lost, and deciding again could write twice. A command *with* a key is retried,
/// a bounded number of times with backoff ([`RetryPolicy::unavailable_retries`]): the key fixes
/// its event ids, so an append that did commit is found as the key's original outcome, which
/// the retry returns (marked `replayed`, like any repeat) instead of writing again.
///
/// ```
/// # use decider_core::{Decider, CommandHandler, StreamId, Metadata};
/// # use decider_store_memory::MemoryStore;
/// # use serde::{Serialize, Deserialize};
/// # struct Counter;
/// # #[derive(Serialize, Deserialize)] enum Event { Added { n: u64 } }
/// # impl Decider for Counter {
/// #     type Command = u64; type Event = Event; type State = u64; type Error = std::convert::Infallible;
/// #     fn initial_state(&self) -> u64 { 0 }
/// #     fn decide(&self, n: &u64, _: &u64) -> Result<Vec<Event>, Self::Error> { Ok(vec![Event::Added { n: *n }]) }
/// #     fn evolve(&self, s: u64, Event::Added { n }: &Event) -> u64 { s + n }
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let counters = CommandHandler::new(Counter, MemoryStore::new());
/// let stream = StreamId::new("counter-1")?;
/// let retried = Metadata::default().with_idempotency_key("request-17");
///
/// let first = counters.handle_with(&stream, 5, retried.clone()).await?;
/// let again = counters.handle_with(&stream, 5, retried).await?;
/// assert!(!first.replayed && again.replayed);
/// assert_eq!(again.last_revision, Some(0)); // written once
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct CommandHandler<D: Decider, S, C = JsonCodec<<D as Decider>::Event>> {
    decider: D,
    store: S,
    codec: C,
    ids: Arc<dyn IdGenerator>,
    retry: RetryPolicy,
    cache: Option<StateCache<D::State>>,
    snapshots: Option<Snapshots<D::State>>,
    /// Whether a stream the cache does not hold is first taken to be new.
    assume_new: bool,
    /// The `decider` label of this handler's metrics.
    name: Arc<str>,
}

impl<D: Decider, S, C> fmt::Debug for CommandHandler<D, S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandHandler")
            .field("decider", &std::any::type_name::<D>())
            .field("store", &std::any::type_name::<S>())
            .field("retry", &self.retry)
            .field("cache", &self.cache)
            .field("snapshots", &self.snapshots)
            .field("assume_new", &self.assume_new)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<D, S> CommandHandler<D, S>
where
    D: Decider,
    D::Event: Serialize + DeserializeOwned,
{
    /// A handler with the default [`JsonCodec`], random ids and the default [`RetryPolicy`], no
    /// cache and no snapshots.
    pub fn new(decider: D, store: S) -> Self {
        Self {
            decider,
            store,
            codec: JsonCodec::new(),
            ids: Arc::new(RandomIds),
            retry: RetryPolicy::default(),
            cache: None,
            snapshots: None,
            assume_new: false,
            name: telemetry::default_decider_name(std::any::type_name::<D>()).into(),
        }
    }
}

impl<D: Decider, S, C> CommandHandler<D, S, C> {
    /// The same handler with another codec (e.g. a [`JsonCodec`] with upcasters).
    pub fn with_codec<C2: Codec<D::Event>>(self, codec: C2) -> CommandHandler<D, S, C2> {
        CommandHandler {
            decider: self.decider,
            store: self.store,
            codec,
            ids: self.ids,
            retry: self.retry,
            cache: self.cache,
            snapshots: self.snapshots,
            assume_new: self.assume_new,
            name: self.name,
        }
    }

    /// The same handler with another retry policy.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same handler taking a stream it holds no cached state for to be new (Equinox's
    /// "assume empty"): a command without an idempotency key is decided on the initial state and
    /// appended expecting no stream, without a read. A new stream then costs one round trip; an
    /// existing one fails that append, is read and decided again — one round trip more than
    /// without this, and one retry of the budget. Commands with an idempotency key always read
    /// first: the store's answer to a repeated batch would not tell an original outcome from
    /// this one. Worth it where most commands create their stream.
    pub fn assume_new_streams(mut self) -> Self {
        self.assume_new = true;
        self
    }

    /// The same handler drawing event and correlation ids from `ids`.
    pub fn with_ids(mut self, ids: impl IdGenerator) -> Self {
        self.ids = Arc::new(ids);
        self
    }

    /// The same handler naming its decider `name` in the metrics it records (the `decider` label
    /// of `decider_commands_total` and the other command metrics, listed in `docs/metrics.md`).
    /// By default a decider is named by the last segment of its type's path, without generic
    /// arguments: `banking::account::Account` is `Account`. Name it when two handlers run
    /// deciders of one type (or of types with one name) that the metrics should tell apart.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into().into();
        self
    }

    /// The name of the handler's decider in its metrics ([`with_name`](Self::with_name)).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The decider.
    pub fn decider(&self) -> &D {
        &self.decider
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The state cache, if the handler has one ([`with_cache`](Self::with_cache)).
    pub fn cache(&self) -> Option<&StateCache<D::State>> {
        self.cache.as_ref()
    }

    /// The snapshot policy, if the handler takes snapshots
    /// ([`with_snapshots`](Self::with_snapshots)).
    pub fn snapshot_policy(&self) -> Option<&SnapshotPolicy> {
        self.snapshots.as_ref().map(Snapshots::policy)
    }
}

impl<D, S, C> CommandHandler<D, S, C>
where
    D: Decider,
    D::State: Clone,
{
    /// The same handler with a [state cache](crate::StateCache) of at most `max_entries` streams: a
    /// command on a cached stream decides on the cached state and appends expecting its
    /// revision, without reading the stream.
    ///
    /// The cache belongs to this handler (and its decider): two handlers never share one, since
    /// another decider's fold of the same stream is another state.
    pub fn with_cache(mut self, max_entries: usize) -> Self {
        self.cache = Some(StateCache::new(max_entries));
        self
    }
}

impl<D, S, C> CommandHandler<D, S, C>
where
    D: Decider,
    D::State: Serialize + DeserializeOwned,
{
    /// The same handler taking [snapshots](crate::SnapshotStore) of its streams' states into
    /// `snapshots`, as `policy` says, and loading cold streams from the latest one.
    pub fn with_snapshots(mut self, snapshots: impl SnapshotStore, policy: SnapshotPolicy) -> Self {
        self.snapshots = Some(Snapshots::new(snapshots, policy));
        self
    }
}

impl<D, S, C> CommandHandler<D, S, C>
where
    D: Decider,
    S: EventStore,
    C: Codec<D::Event>,
{
    /// Handles `command` on `stream` with empty metadata (a fresh correlation id, no
    /// idempotency key).
    pub async fn handle(
        &self,
        stream: &StreamId,
        command: D::Command,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        self.handle_with(stream, command, Metadata::default()).await
    }

    /// Handles `command` on `stream`; `metadata` (correlation and causation ids, idempotency key,
    /// trace context, headers) is copied onto every event the command produces. Without a
    /// correlation id, one is drawn for the command.
    ///
    /// The command runs in a `command` span. With a [trace context](crate::TraceParent), the span
    /// gets an id of its own (from the [`TraceHook`](crate::TraceHook), or random) and records
    /// `trace_id`, `span_id` and `parent_id` (the metadata's parent); the events carry the same
    /// trace with the command's span as parent.
    pub async fn handle_with(
        &self,
        stream: &StreamId,
        command: D::Command,
        mut metadata: Metadata,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        let correlation_id = *metadata
            .correlation_id
            .get_or_insert_with(|| self.ids.new_id());
        let span = tracing::info_span!(
            "command",
            stream = %stream,
            correlation_id = %correlation_id,
            idempotency_key = metadata.idempotency_key.as_deref(),
            trace_id = metadata.trace_parent.map(|parent| display(parent.trace_id)),
            span_id = tracing::field::Empty,
            parent_id = metadata.trace_parent.map(|parent| display(parent.parent_id)),
        );
        // A traced command is a span of its trace: its events name that span as their parent.
        if let Some(parent) = metadata.trace_parent {
            let span_id = continue_trace(&span, &parent);
            span.record("span_id", display(span_id));
            metadata.trace_parent = Some(parent.with_parent_id(span_id));
        }
        let started = std::time::Instant::now();
        let outcome = self
            .run_retrying_unavailable(stream, &command, &metadata)
            .instrument(span)
            .await;
        telemetry::command_done(&self.name, outcome_label(&outcome), started.elapsed());
        outcome
    }

    /// Loads `stream` — from its latest snapshot, if the handler takes snapshots — and folds it
    /// into state. Never answers from the cache, so it sees everything committed before it.
    pub async fn load(
        &self,
        stream: &StreamId,
    ) -> Result<Loaded<D::State>, CommandError<D::Error>> {
        Ok(self.load_basis(stream, None, true).await?.basis.loaded())
    }
}

/// The `outcome` label of a command's result.
fn outcome_label<E, R>(
    outcome: &Result<CommandOutcome<E>, CommandError<R>>,
) -> telemetry::CommandOutcomeLabel {
    use telemetry::CommandOutcomeLabel as Label;
    match outcome {
        Ok(done) if done.replayed => Label::Replayed,
        Ok(_) => Label::Ok,
        Err(CommandError::Rejected(_) | CommandError::Terminal { .. }) => Label::Rejected,
        Err(CommandError::Store(crate::StoreError::WrongExpectedVersion { .. })) => Label::Conflict,
        Err(_) => Label::Error,
    }
}
