//! The command handler: load, fold, decide, append — and retry on conflict.
//!
//! [`CommandHandler::handle`] reads the stream, folds it into state, refuses the command if the
//! stream is terminal, asks the decider, encodes the new events and appends them expecting the
//! exact version it read. If another writer got there first the store refuses with
//! [`StoreError::WrongExpectedVersion`]; the handler then reloads and decides again, a bounded
//! number of times with jittered backoff, and finally returns the conflict.
//!
//! A command may carry an idempotency key (in its [`Metadata`]). The key is stored on every event
//! the command produces and turned into deterministic event ids, so that a repeated command —
//! a client retry, a redelivered message — returns the original outcome instead of deciding
//! again, and two identical commands racing write exactly one set of events.
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
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use uuid::Uuid;

use crate::clock::{IdGenerator, RandomIds};
use crate::codec::{Codec, CodecError, JsonCodec};
use crate::decider::Decider;
use crate::event::{EventData, ExpectedVersion, Position, StreamId};
use crate::metadata::Metadata;
use crate::store::{Direction, EventStore, StoreError, StreamFrom};

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
/// race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Reloads after the first conflict; `0` returns the first conflict.
    pub max_retries: u32,
    /// Upper bound of the first backoff; doubles with every retry.
    pub base_delay: Duration,
    /// Upper bound of any backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0-based): uniformly random up to the capped
    /// exponential bound ("full jitter"), so that writers that collided spread out.
    fn backoff(&self, retry: u32) -> Duration {
        let bound = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
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
    /// The fold of every event of the stream.
    pub state: S,
    /// The stream's last revision; `None` when it has no event.
    pub last_revision: Option<u64>,
}

/// Runs commands of a [`Decider`] against an [`EventStore`].
///
/// Cheap to share: wrap it in an `Arc` and call it from many tasks; commands on one stream are
/// serialised by the store's optimistic concurrency, not by locks here.
pub struct CommandHandler<D: Decider, S, C = JsonCodec<<D as Decider>::Event>> {
    decider: D,
    store: S,
    codec: C,
    ids: Arc<dyn IdGenerator>,
    retry: RetryPolicy,
}

impl<D: Decider, S, C> fmt::Debug for CommandHandler<D, S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandHandler")
            .field("decider", &std::any::type_name::<D>())
            .field("store", &std::any::type_name::<S>())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl<D, S> CommandHandler<D, S>
where
    D: Decider,
    D::Event: Serialize + DeserializeOwned,
{
    /// A handler with the default [`JsonCodec`], random ids and the default [`RetryPolicy`].
    pub fn new(decider: D, store: S) -> Self {
        Self {
            decider,
            store,
            codec: JsonCodec::new(),
            ids: Arc::new(RandomIds),
            retry: RetryPolicy::default(),
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
        }
    }

    /// The same handler with another retry policy.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
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
        self.run(stream, &command, &metadata).instrument(span).await
    }

    async fn run(
        &self,
        stream: &StreamId,
        command: &D::Command,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<D::Event>, HandlerError<D::Error>> {
        let key = metadata.idempotency_key.as_deref();
        let mut retry = 0;
        loop {
            let loaded = self.load_for(stream, key).await?;
            if let Some(original) = loaded.original {
                tracing::debug!("idempotency key already handled; returning the original outcome");
                return Ok(original);
            }
            let Loaded {
                state,
                last_revision,
            } = loaded.current;
            if self.decider.is_terminal(&state) {
                return Err(HandlerError::Terminal {
                    stream: stream.clone(),
                });
            }
            let events = self
                .decider
                .decide(command, &state)
                .map_err(HandlerError::Rejected)?;
            if events.is_empty() {
                return Ok(CommandOutcome {
                    events,
                    last_revision,
                    position: None,
                    replayed: false,
                });
            }
            let data = self.encode(stream, &events, metadata)?;
            let expected = ExpectedVersion::from_last_revision(last_revision);
            match self.store.append(stream, expected, data).await {
                Ok(written) => {
                    return Ok(CommandOutcome {
                        events,
                        last_revision: written.next_revision.checked_sub(1),
                        position: Some(written.position),
                        replayed: false,
                    });
                }
                Err(conflict @ StoreError::WrongExpectedVersion { .. }) => {
                    if retry >= self.retry.max_retries {
                        tracing::info!(retries = retry, %conflict, "giving up after conflicts");
                        return Err(conflict.into());
                    }
                    let delay = self.retry.backoff(retry);
                    tracing::debug!(retry, ?delay, %conflict, "conflict; reloading");
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// Loads `stream` and folds it into state.
    pub async fn load(
        &self,
        stream: &StreamId,
    ) -> Result<Loaded<D::State>, HandlerError<D::Error>> {
        Ok(self.load_for(stream, None).await?.current)
    }

    /// Loads and folds `stream`, collecting the events an earlier command with idempotency key
    /// `key` wrote, if any.
    async fn load_for(
        &self,
        stream: &StreamId,
        key: Option<&str>,
    ) -> Result<LoadedFor<D>, HandlerError<D::Error>> {
        let mut events = std::pin::pin!(self.store.read_stream(
            stream,
            StreamFrom::Start,
            Direction::Forward,
            None
        ));
        let mut state = self.decider.initial_state();
        let mut last_revision = None;
        let mut original: Option<CommandOutcome<D::Event>> = None;
        while let Some(recorded) = events.try_next().await? {
            let event = self.codec.decode(&recorded)?;
            state = self.decider.evolve(state, &event);
            last_revision = Some(recorded.revision);
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
        Ok(LoadedFor {
            current: Loaded {
                state,
                last_revision,
            },
            original,
        })
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

struct LoadedFor<D: Decider> {
    current: Loaded<D::State>,
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
