//! The command handler: load, fold, decide, append — and retry on conflict.
//!
//! [`CommandHandler::handle`] reads the stream, folds it into state, refuses the command if the
//! stream is terminal, asks the decider, encodes the new events and appends them expecting the
//! exact version it read. If another writer got there first the store refuses with
//! [`StoreError::WrongExpectedVersion`]; the handler then reads the events it missed and decides
//! again, a bounded number of times with jittered backoff, and finally returns the conflict.
//!
//! Two opt-in optimisations make loading cheaper, and change no result:
//! - a [state cache](crate::cache) ([`CommandHandler::with_cache`]): a command on a warm stream
//!   decides on the cached state and appends expecting its revision — one round trip to the
//!   store instead of a read and an append. A stale entry makes the append fail with a conflict,
//!   which is retried as above, so a command never succeeds on a state it did not see;
//! - [snapshots](crate::snapshot) ([`CommandHandler::with_snapshots`]): a cold load reads the
//!   latest snapshot and the events after it instead of the whole stream.
//!
//! A command may carry an idempotency key (in its [`Metadata`]). The key is stored on every event
//! the command produces and turned into deterministic event ids, so that a repeated command —
//! a client retry, a redelivered message — returns the original outcome instead of deciding
//! again, and two identical commands racing write exactly one set of events.
//!
//! A store that is [unavailable](StoreError::Unavailable) (a dropped connection, a database
//! restart) fails a command without a key at once: its append may have committed before the
//! reply was lost, and deciding again could write twice. A command *with* a key is retried,
//! a bounded number of times with backoff ([`RetryPolicy::unavailable_retries`]): the key fixes
//! its event ids, so an append that did commit is found as the key's original outcome, which
//! the retry returns (marked `replayed`, like any repeat) instead of writing again.
//!
//! ```
//! # use decider_core::{Decider, CommandHandler, StreamId, Metadata};
//! # use decider_store_memory::MemoryStore;
//! # use serde::{Serialize, Deserialize};
//! # struct Counter;
//! # #[derive(Serialize, Deserialize)] enum Event { Added { n: u64 } }
//! # impl Decider for Counter {
//! #     type Command = u64; type Event = Event; type State = u64; type Error = std::convert::Infallible;
//! #     fn initial_state(&self) -> u64 { 0 }
//! #     fn decide(&self, n: &u64, _: &u64) -> Result<Vec<Event>, Self::Error> { Ok(vec![Event::Added { n: *n }]) }
//! #     fn evolve(&self, s: u64, Event::Added { n }: &Event) -> u64 { s + n }
//! # }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let counters = CommandHandler::new(Counter, MemoryStore::new());
//! let stream = StreamId::new("counter-1")?;
//! let retried = Metadata::default().with_idempotency_key("request-17");
//!
//! let first = counters.handle_with(&stream, 5, retried.clone()).await?;
//! let again = counters.handle_with(&stream, 5, retried).await?;
//! assert!(!first.replayed && again.replayed);
//! assert_eq!(again.last_revision, Some(0)); // written once
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use uuid::Uuid;

use crate::backoff;
use crate::cache::StateCache;
use crate::clock::{IdGenerator, RandomIds};
use crate::codec::{Codec, CodecError, JsonCodec};
use crate::decider::{Decider, fold_from};
use crate::event::{EventData, ExpectedVersion, Position, StreamId};
use crate::metadata::Metadata;
use crate::snapshot::{Snapshot, SnapshotPolicy, SnapshotStore, Snapshots};
use crate::store::{AppendResult, Direction, EventStore, StoreError, StreamFrom};

/// Namespace of the v5 event ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x9d72_bfd6_ee76_5e95_a0ff_ca68_e35f_2087);

/// The id of the `index`-th event of the command with idempotency key `key` on `stream`.
///
/// Stream ids hold no control characters and the index no newline, so the name is unambiguous.
pub fn idempotent_event_id(stream: &StreamId, key: &str, index: usize) -> Uuid {
    Uuid::new_v5(
        &IDEMPOTENCY_NAMESPACE,
        format!("{stream}\n{index}\n{key}").as_bytes(),
    )
}

/// How often and how patiently the handler retries a command that lost an optimistic-concurrency
/// race, and a command with an idempotency key that met an unavailable store.
///
/// A command *without* an idempotency key is never retried after
/// [`StoreError::Unavailable`]: the append may have committed before the connection dropped,
/// and a retry would decide again and could write twice. With a key, the key fixes the event
/// ids, so a retry of an append that did commit is recognised as its repeat and answered with
/// the original outcome (`replayed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Reloads after the first conflict; `0` returns the first conflict.
    pub max_retries: u32,
    /// Upper bound of the first backoff after a conflict; doubles with every retry.
    pub base_delay: Duration,
    /// Upper bound of any backoff after a conflict.
    pub max_delay: Duration,
    /// Retries of a keyed command after [`StoreError::Unavailable`]; `0` returns the first
    /// such error. Default 5.
    pub unavailable_retries: u32,
    /// The first pause before such a retry; doubles with every one, up to 1 s, and is drawn
    /// from the upper half of that bound. Default 50 ms (so the default policy gives a store
    /// about 1.5 s to come back).
    pub unavailable_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(100),
            unavailable_retries: 5,
            unavailable_delay: Duration::from_millis(50),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0-based): uniformly random up to the capped
    /// exponential bound ("full jitter"), so that writers that collided spread out.
    fn backoff(&self, retry: u32) -> Duration {
        backoff::full_jitter(backoff::capped(self.base_delay, retry, self.max_delay))
    }

    /// The pause before retry number `retry` (0-based) of a keyed command whose store was
    /// unavailable: never short, since the store needs time to come back.
    fn unavailable_backoff(&self, retry: u32) -> Duration {
        let max = Duration::from_secs(1).max(self.unavailable_delay);
        backoff::equal_jitter(backoff::capped(self.unavailable_delay, retry, max))
    }
}

/// What a handled command did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome<E> {
    /// The events the command produced; for a replayed command, the events it produced the first
    /// time. Empty when the decider accepted the command with no change.
    pub events: Vec<E>,
    /// The stream's last revision after the command (for a replay: the revision of the last event
    /// the original command wrote); `None` when the stream still has no event.
    pub last_revision: Option<u64>,
    /// Global position of the last event written, if any was.
    pub position: Option<Position>,
    /// Whether this outcome is the original one of an earlier command with the same idempotency
    /// key, returned without deciding again.
    pub replayed: bool,
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError<E> {
    /// The decider refused the command.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// The stream is terminal ([`Decider::is_terminal`]) and takes no more commands.
    #[error("stream {stream} is terminal and takes no more commands")]
    Terminal {
        /// The terminal stream.
        stream: StreamId,
    },
    /// The store failed or refused; after the retries are spent, a conflict is returned as
    /// [`StoreError::WrongExpectedVersion`].
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event could not be encoded, or a stored one decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl<E> HandlerError<E> {
    /// Whether the command lost every optimistic-concurrency race it was allowed to retry.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_wrong_expected_version())
    }

    /// Whether sending the same command again (with the same idempotency key) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_retryable() || e.is_wrong_expected_version())
    }
}

/// The state of a stream as the handler loads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<S> {
    /// The fold of the stream's events up to `last_revision`.
    pub state: S,
    /// The last revision folded into `state` (when loaded: the stream's last revision); `None`
    /// when the stream has no event.
    pub last_revision: Option<u64>,
}

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
    /// The same handler with a [state cache](crate::cache) of at most `max_entries` streams: a
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
    /// The same handler taking [snapshots](crate::snapshot) of its streams' states into
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
    ) -> Result<CommandOutcome<D::Event>, HandlerError<D::Error>> {
        self.handle_with(stream, command, Metadata::default()).await
    }

    /// Handles `command` on `stream`; `metadata` (correlation and causation ids, idempotency key,
    /// headers) is copied onto every event the command produces. Without a correlation id, one is
    /// drawn for the command.
    pub async fn handle_with(
        &self,
        stream: &StreamId,
        command: D::Command,
        mut metadata: Metadata,
    ) -> Result<CommandOutcome<D::Event>, HandlerError<D::Error>> {
        let correlation_id = *metadata
            .correlation_id
            .get_or_insert_with(|| self.ids.new_id());
        let span = tracing::info_span!(
            "command",
            stream = %stream,
            correlation_id = %correlation_id,
            idempotency_key = metadata.idempotency_key.as_deref(),
        );
        self.run_retrying_unavailable(stream, &command, &metadata)
            .instrument(span)
            .await
    }

    /// Runs the command; a keyed one again, with backoff, while the store is unavailable.
    async fn run_retrying_unavailable(
        &self,
        stream: &StreamId,
        command: &D::Command,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<D::Event>, HandlerError<D::Error>> {
        let mut retry = 0;
        loop {
            match self.run(stream, command, metadata).await {
                Err(HandlerError::Store(error))
                    if error.is_retryable()
                        && metadata.idempotency_key.is_some()
                        && retry < self.retry.unavailable_retries =>
                {
                    let delay = self.retry.unavailable_backoff(retry);
                    tracing::info!(retry, ?delay, %error, "store unavailable; retrying the keyed command");
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn run(
        &self,
        stream: &StreamId,
        command: &D::Command,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<D::Event>, HandlerError<D::Error>> {
        let key = metadata.idempotency_key.as_deref();
        // A keyed command decided on a state not searched for its key (cached, or from a
        // snapshot) relies on the append to refuse a repeat of its event ids; a store that does
        // not check them would write the repeat. Search the stream first then.
        let search_first = key.is_some() && !self.store.checks_reused_ids();
        let mut retry = 0;
        let cached = self.cache.as_ref().and_then(|cache| cache.get(stream));
        let mut next = match cached.filter(|_| !search_first) {
            Some(cached) => Next::Decide(Basis {
                state: cached.state,
                last_revision: cached.last_revision,
                current: false,
                searched: false,
                read: 0,
            }),
            // An assumption, like a cached state: not current, so a decision that writes
            // nothing is checked against the stream itself, and an append to an existing stream
            // fails and reads it.
            None if self.assume_new && key.is_none() => Next::Decide(Basis {
                state: self.decider.initial_state(),
                last_revision: None,
                current: false,
                searched: false,
                read: 0,
            }),
            None => Next::Load {
                snapshot: !search_first,
            },
        };
        loop {
            let basis = match next {
                Next::Decide(basis) => basis,
                Next::CatchUp(basis) => {
                    let read = self.read_after(stream, basis, key).await?;
                    match read.original {
                        Some(original) if read.basis.searched => {
                            return Ok(self.replay(stream, read.basis, original));
                        }
                        // The key is here, but its command may have written before the state.
                        Some(_) => {
                            next = Next::Load { snapshot: false };
                            continue;
                        }
                        None => read.basis,
                    }
                }
                Next::Load { snapshot } => {
                    let read = self.load_basis(stream, key, snapshot).await?;
                    if let Some(original) = read.original {
                        return Ok(self.replay(stream, read.basis, original));
                    }
                    read.basis
                }
            };
            // A cached state may be stale, and one from the cache or a snapshot was not searched
            // for the idempotency key. If the command appends, the store checks both: the
            // expected revision, and the key's event ids (below). A decision that appends
            // nothing is checked by nobody, so it only stands on a state just read and searched.
            let unsearched = key.is_some() && !basis.searched;
            let unconfirmed = unsearched || !basis.current;
            let decision = if self.decider.is_terminal(&basis.state) {
                Err(HandlerError::Terminal {
                    stream: stream.clone(),
                })
            } else {
                self.decider
                    .decide(command, &basis.state)
                    .map_err(HandlerError::Rejected)
            };
            let events = match decision {
                Ok(events) if !events.is_empty() => events,
                _ if unconfirmed => {
                    next = if unsearched {
                        Next::Load { snapshot: false }
                    } else {
                        Next::CatchUp(basis)
                    };
                    continue;
                }
                Ok(events) => {
                    let last_revision = basis.last_revision;
                    self.keep(stream, basis);
                    return Ok(CommandOutcome {
                        events,
                        last_revision,
                        position: None,
                        replayed: false,
                    });
                }
                Err(refusal) => {
                    self.keep(stream, basis);
                    return Err(refusal);
                }
            };
            let data = self.encode(stream, &events, metadata)?;
            let expected = ExpectedVersion::from_last_revision(basis.last_revision);
            let appended = self.store.append(stream, expected, data).await;
            if appended.is_err() {
                // Refused or unknown: the entry this command decided on is stale or may be.
                self.forget(stream, basis.last_revision);
            }
            match appended {
                Ok(written) => {
                    let fresh = !written.repeated
                        && written.next_revision == basis.next_revision() + events.len() as u64;
                    let outcome = CommandOutcome {
                        events,
                        last_revision: written.next_revision.checked_sub(1),
                        position: Some(written.position),
                        replayed: false,
                    };
                    if fresh {
                        let snapshot = self.remember(stream, basis, &outcome.events, written);
                        if let (Some(snapshots), Some(snapshot)) = (&self.snapshots, snapshot) {
                            snapshots.save(snapshot).await;
                        }
                        return Ok(outcome);
                    }
                    // Not written now, or not after `basis`: the store took the batch for an
                    // earlier append of the same event ids, which only a command with the same
                    // idempotency key writes (maybe one racing this one). Its original events
                    // are in the stream, not necessarily ours.
                    let read = self.load_basis(stream, key, false).await?;
                    return Ok(match read.original {
                        Some(original) => self.replay(stream, read.basis, original),
                        None => outcome,
                    });
                }
                Err(conflict @ StoreError::WrongExpectedVersion { actual, .. }) => {
                    if retry >= self.retry.max_retries {
                        tracing::info!(retries = retry, %conflict, "giving up after conflicts");
                        return Err(conflict.into());
                    }
                    let delay = self.retry.backoff(retry);
                    tracing::debug!(retry, ?delay, %conflict, "conflict; reading on");
                    tokio::time::sleep(delay).await;
                    retry += 1;
                    if actual < basis.last_revision {
                        // The stream is shorter than the state: a snapshot of events that are
                        // not (or no longer) in this store. Only the events themselves can tell.
                        tracing::warn!(
                            ?actual,
                            "the stream is behind the snapshot; reading it all"
                        );
                        next = Next::Load { snapshot: false };
                        continue;
                    }
                    // The state is right as of its revision; only the events since are missing.
                    next = Next::CatchUp(basis);
                }
                // The key's event ids exist, but not as this batch: the command ran before, on
                // another state, and decided otherwise. Its outcome is in the stream.
                Err(StoreError::InvalidInput(_)) if unsearched => {
                    next = Next::Load { snapshot: false };
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// Loads `stream` — from its latest snapshot, if the handler takes snapshots — and folds it
    /// into state. Never answers from the cache, so it sees everything committed before it.
    pub async fn load(
        &self,
        stream: &StreamId,
    ) -> Result<Loaded<D::State>, HandlerError<D::Error>> {
        let Basis {
            state,
            last_revision,
            ..
        } = self.load_basis(stream, None, true).await?.basis;
        Ok(Loaded {
            state,
            last_revision,
        })
    }

    /// Loads `stream` from its latest usable snapshot (if `snapshot` and the handler takes
    /// snapshots) or from its start, collecting the events an earlier command with idempotency
    /// key `key` wrote, if any.
    async fn load_basis(
        &self,
        stream: &StreamId,
        key: Option<&str>,
        snapshot: bool,
    ) -> Result<Read<D>, HandlerError<D::Error>> {
        let from_snapshot = match &self.snapshots {
            Some(snapshots) if snapshot => {
                snapshots.load(stream).await.map(|(state, revision)| Basis {
                    state,
                    last_revision: Some(revision),
                    current: false,
                    searched: false,
                    read: 0,
                })
            }
            _ => None,
        };
        let read = match from_snapshot {
            Some(basis) => self.read_after(stream, basis, key).await?,
            None => return self.read_after(stream, self.empty_basis(), key).await,
        };
        if read.original.is_some() {
            // The key turned up after the snapshot; its command may have written before it too.
            return self.read_after(stream, self.empty_basis(), key).await;
        }
        Ok(read)
    }

    /// Folds the events of `stream` after `basis` into it, collecting those of the command with
    /// idempotency key `key`.
    async fn read_after(
        &self,
        stream: &StreamId,
        mut basis: Basis<D::State>,
        key: Option<&str>,
    ) -> Result<Read<D>, HandlerError<D::Error>> {
        let from = basis.last_revision.map_or(StreamFrom::Start, |last| {
            StreamFrom::Revision(last.saturating_add(1))
        });
        let mut events = pin!(
            self.store
                .read_stream(stream, from, Direction::Forward, None)
        );
        let mut original: Option<CommandOutcome<D::Event>> = None;
        while let Some(recorded) = events.try_next().await? {
            let event = self.codec.decode(&recorded)?;
            basis.state = self.decider.evolve(basis.state, &event);
            basis.last_revision = Some(recorded.revision);
            basis.read += 1;
            if key.is_some() && recorded.metadata.idempotency_key.as_deref() == key {
                let original = original.get_or_insert_with(|| CommandOutcome {
                    events: Vec::new(),
                    last_revision: None,
                    position: None,
                    replayed: true,
                });
                original.last_revision = Some(recorded.revision);
                original.position = Some(recorded.position);
                // Decoding again is cheaper than requiring `D::Event: Clone` of every user.
                original.events.push(self.codec.decode(&recorded)?);
            }
        }
        basis.current = true;
        Ok(Read { basis, original })
    }

    fn empty_basis(&self) -> Basis<D::State> {
        Basis {
            state: self.decider.initial_state(),
            last_revision: None,
            current: false,
            searched: true,
            read: 0,
        }
    }

    /// The outcome of a command whose idempotency key was found in the stream.
    fn replay(
        &self,
        stream: &StreamId,
        basis: Basis<D::State>,
        original: CommandOutcome<D::Event>,
    ) -> CommandOutcome<D::Event> {
        tracing::debug!("idempotency key already handled; returning the original outcome");
        self.keep(stream, basis);
        original
    }

    /// After a successful append: caches the new state, and returns the snapshot of it to save
    /// if one is due. Synchronous, so that no reference to a state or an event is held across
    /// an `.await` (which would ask `Sync` of both for the command's future to be `Send`).
    fn remember(
        &self,
        stream: &StreamId,
        basis: Basis<D::State>,
        events: &[D::Event],
        written: AppendResult,
    ) -> Option<Snapshot> {
        if self.cache.is_none() && self.snapshots.is_none() {
            return None;
        }
        let before = basis.next_revision();
        let read = basis.read;
        let state = fold_from(&self.decider, basis.state, events);
        // A successful append wrote at least one event.
        let last_revision = written.next_revision.saturating_sub(1);
        let snapshot = self.snapshots.as_ref().and_then(|snapshots| {
            snapshots
                .policy()
                .is_due(before, written.next_revision, read)
                .then(|| snapshots.take(stream, last_revision, &state))
                .flatten()
        });
        if let Some(cache) = &self.cache {
            cache.insert(stream, Some(last_revision), state);
        }
        snapshot
    }

    /// Caches a state the command read and left as it was.
    fn keep(&self, stream: &StreamId, basis: Basis<D::State>) {
        if let Some(cache) = &self.cache {
            cache.insert(stream, basis.last_revision, basis.state);
        }
    }

    /// Drops the cached state of `stream` if it is not newer than `stale`.
    fn forget(&self, stream: &StreamId, stale: Option<u64>) {
        if let Some(cache) = &self.cache {
            cache.remove_stale(stream, stale);
        }
    }

    fn encode(
        &self,
        stream: &StreamId,
        events: &[D::Event],
        metadata: &Metadata,
    ) -> Result<Vec<EventData>, CodecError> {
        events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                let id = match &metadata.idempotency_key {
                    Some(key) => idempotent_event_id(stream, key, index),
                    None => self.ids.new_id(),
                };
                Ok(self
                    .codec
                    .encode(event)?
                    .into_event_data(id, metadata.clone()))
            })
            .collect()
    }
}

/// What a command is decided on: a state, the revision it is the fold of, and what is known of
/// the command's idempotency key.
struct Basis<S> {
    state: S,
    last_revision: Option<u64>,
    /// Whether `state` was just read to the end of the stream, rather than taken from the
    /// cache.
    current: bool,
    /// Whether every event folded into `state` was read by this command and searched for its
    /// idempotency key; not so for a state from the cache or a snapshot.
    searched: bool,
    /// Events this command read from the store to build `state`.
    read: u64,
}

impl<S> Basis<S> {
    fn next_revision(&self) -> u64 {
        self.last_revision.map_or(0, |last| last + 1)
    }
}

/// Where the next attempt of a command gets its state.
enum Next<S> {
    /// Decide on this state.
    Decide(Basis<S>),
    /// Read the events after this state, then decide.
    CatchUp(Basis<S>),
    /// Read the stream, from the latest snapshot if `snapshot`.
    Load { snapshot: bool },
}

/// A stream read into a basis, with the outcome of an earlier command with the same
/// idempotency key if its events were read.
struct Read<D: Decider> {
    basis: Basis<D::State>,
    original: Option<CommandOutcome<D::Event>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_ids_differ_by_stream_key_and_index() {
        let a = StreamId::new("a").unwrap();
        let b = StreamId::new("b").unwrap();
        let id = idempotent_event_id(&a, "k", 0);
        assert_eq!(id, idempotent_event_id(&a, "k", 0));
        assert_ne!(id, idempotent_event_id(&b, "k", 0));
        assert_ne!(id, idempotent_event_id(&a, "k2", 0));
        assert_ne!(id, idempotent_event_id(&a, "k", 1));
    }

    #[test]
    fn backoff_stays_under_the_capped_exponential_bound() {
        let policy = RetryPolicy::default();
        for retry in 0..40 {
            let bound =
                (policy.base_delay * 2u32.saturating_pow(retry.min(20))).min(policy.max_delay);
            assert!(policy.backoff(retry) <= bound);
        }
    }
}
