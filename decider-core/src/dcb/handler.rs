//! The decision handler: read by query, fold, decide, append on the condition — and retry on
//! conflict.

use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use tracing::Instrument;
use uuid::Uuid;

use crate::codec::{Codec, JsonCodec};
use crate::dcb::{AppendCondition, DcbStore, Query, Tag};
use crate::decider::Decider;
use crate::handler::{CommandError, CommandOutcome, RetryPolicy};
use crate::ids::{IdGenerator, RandomIds, idempotent_event_id};
use crate::metadata::Metadata;
use crate::position::Position;
use crate::store::{AppendResult, StoreError, StreamFrom};
use crate::stream::{Category, ExpectedVersion, StreamId};
use crate::telemetry::{self, CommandOutcomeLabel};

/// A [`Decider`] whose consistency boundary is a [`Query`] rather than a stream: it names the
/// events a decision depends on from the command, and the tags its events carry.
///
/// `decide` and `evolve` are the decider's, unchanged: the state is the fold of the events the
/// query matches, in log order.
pub trait DecisionModel: Decider {
    /// The events the decision on `command` depends on.
    fn query(&self, command: &Self::Command) -> Query;

    /// The tags of `event`: what later queries find it by.
    fn tags(&self, event: &Self::Event) -> Vec<Tag>;

    /// The category of the streams decisions are appended to: each decision's events go to a
    /// new stream `<category>-<id>`, so that decisions never contend for a stream revision
    /// and a projection can follow them by category. A keyed decision's stream derives from the
    /// category and the key: give each model a category of its own, or two models would answer
    /// each other's keyed commands as repeats.
    fn category(&self) -> Category;
}

/// Runs commands of a [`DecisionModel`] against a [`DcbStore`].
///
/// [`handle`](Self::handle) reads the events the model's query matches, folds them, decides,
/// and appends the new events (tagged by the model) to a new stream of the model's category,
/// on the condition that nothing matching the query was appended after the last event it read.
/// When another decision got there first, the store refuses with
/// [`StoreError::ConditionFailed`]; the handler then reads the events it missed, decides again,
/// a bounded number of times with jittered backoff ([`RetryPolicy`]), and finally returns the
/// conflict.
///
/// Idempotency keys work as for streams: a keyed command's stream and event ids derive from
/// its key, so a repeat finds its original stream and returns the original outcome, marked
/// `replayed`, and two racing repeats write once. A keyed command is also retried while the
/// store is unavailable.
///
/// ```
/// # use decider_core::dcb::{DecisionHandler, DecisionModel, Query, QueryItem, Tag};
/// # use decider_core::{Category, Decider};
/// # use decider_store_memory::MemoryStore;
/// # use serde::{Deserialize, Serialize};
/// /// A username is unique.
/// struct Usernames;
/// #[derive(Serialize, Deserialize)]
/// enum Event { Claimed { name: String } }
/// impl Decider for Usernames {
///     type Command = String; type Event = Event; type State = bool; type Error = &'static str;
///     fn initial_state(&self) -> bool { false }
///     fn decide(&self, name: &String, taken: &bool) -> Result<Vec<Event>, &'static str> {
///         if *taken { Err("taken") } else { Ok(vec![Event::Claimed { name: name.clone() }]) }
///     }
///     fn evolve(&self, _: bool, _: &Event) -> bool { true }
/// }
/// impl DecisionModel for Usernames {
///     fn query(&self, name: &String) -> Query {
///         Query::from(QueryItem::tagged([Tag::pair("username", name).unwrap()]))
///     }
///     fn tags(&self, Event::Claimed { name }: &Event) -> Vec<Tag> {
///         vec![Tag::pair("username", name).unwrap()]
///     }
///     fn category(&self) -> Category { Category::new("username") }
/// }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let usernames = DecisionHandler::new(Usernames, MemoryStore::new());
/// usernames.handle(&"ada".to_owned()).await?;
/// assert!(usernames.handle(&"ada".to_owned()).await.is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct DecisionHandler<D: Decider, S, C = JsonCodec<<D as Decider>::Event>> {
    model: D,
    store: S,
    codec: C,
    ids: Arc<dyn IdGenerator>,
    retry: RetryPolicy,
    name: Arc<str>,
}

impl<D, S> DecisionHandler<D, S>
where
    D: DecisionModel,
    D::Event: serde::Serialize + serde::de::DeserializeOwned,
{
    /// A handler of `model` on `store`, with the JSON codec and the default retry policy.
    pub fn new(model: D, store: S) -> Self {
        Self::with_codec(model, store, JsonCodec::default())
    }
}

impl<D: Decider, S, C> DecisionHandler<D, S, C> {
    /// A handler with a codec of its own.
    pub fn with_codec(model: D, store: S, codec: C) -> Self {
        let name = telemetry::default_decider_name(std::any::type_name::<D>());
        Self {
            model,
            store,
            codec,
            ids: Arc::new(RandomIds),
            retry: RetryPolicy::default(),
            name: Arc::from(name),
        }
    }

    /// The same handler retrying conflicts as `retry` says.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same handler drawing the ids of unkeyed commands' events and streams from `ids`.
    pub fn with_ids(mut self, ids: impl IdGenerator + 'static) -> Self {
        self.ids = Arc::new(ids);
        self
    }

    /// The same handler under another `decider` label in its metrics.
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The model.
    pub fn model(&self) -> &D {
        &self.model
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

impl<D: Decider, S, C> std::fmt::Debug for DecisionHandler<D, S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionHandler")
            .field("model", &std::any::type_name::<D>())
            .field("store", &std::any::type_name::<S>())
            .field("retry", &self.retry)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Namespace of the v5 stream keys derived from idempotency keys.
const DECISION_NAMESPACE: Uuid = Uuid::from_u128(0x3c1e_0f55_2b8d_4f4e_9a61_5d0c_7e2a_91b4);

/// The events a decision has read so far: their fold and where the read stopped.
struct Basis<S> {
    state: S,
    after: Option<Position>,
}

impl<D, S, C> DecisionHandler<D, S, C>
where
    D: DecisionModel,
    S: DcbStore,
    C: Codec<D::Event>,
{
    /// Decides `command` and appends its events.
    pub async fn handle(
        &self,
        command: &D::Command,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        self.handle_with(command, Metadata::default()).await
    }

    /// Decides `command` and appends its events with `metadata` (correlation, idempotency key,
    /// trace) on each, beside the model's tags.
    pub async fn handle_with(
        &self,
        command: &D::Command,
        metadata: Metadata,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        let started = Instant::now();
        let span = tracing::info_span!(
            "decision",
            decider = &*self.name,
            idempotency_key = metadata.idempotency_key.as_deref(),
        );
        let outcome = self.run(command, &metadata).instrument(span).await;
        let label = match &outcome {
            Ok(outcome) if outcome.replayed => CommandOutcomeLabel::Replayed,
            Ok(_) => CommandOutcomeLabel::Ok,
            Err(CommandError::Rejected(_) | CommandError::Terminal { .. }) => {
                CommandOutcomeLabel::Rejected
            }
            Err(error) if error.is_conflict() => CommandOutcomeLabel::Conflict,
            Err(_) => CommandOutcomeLabel::Error,
        };
        telemetry::command_done(&self.name, label, started.elapsed());
        outcome
    }

    /// The stream a decision with `key` (or a fresh one) appends to.
    fn stream_for(&self, key: Option<&str>) -> StreamId {
        let category = self.model.category();
        let id = match key {
            Some(key) => Uuid::new_v5(&DECISION_NAMESPACE, format!("{category}\n{key}").as_bytes()),
            None => self.ids.new_id(),
        };
        category.stream(id)
    }

    async fn run(
        &self,
        command: &D::Command,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        let key = metadata.idempotency_key.as_deref();
        let stream = self.stream_for(key);
        let query = self.model.query(command);
        let mut basis = Basis {
            state: self.model.initial_state(),
            after: None,
        };
        let (mut conflicts, mut unavailable) = (0, 0);
        loop {
            basis = self.read_after(&query, basis).await?;
            // After the read: a repeat of this command whose events the read saw has its
            // stream by now, and is answered here rather than decided on (it would be refused
            // by its own events).
            if key.is_some()
                && let Some(original) = self.original(&stream).await?
            {
                return Ok(original);
            }
            let events = self
                .model
                .decide(command, &basis.state)
                .map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(CommandOutcome {
                    events,
                    last_revision: None,
                    position: None,
                    replayed: false,
                });
            }
            let data = self.encode(&stream, &events, metadata)?;
            let condition = AppendCondition::new(query.clone(), basis.after);
            match self
                .store
                .append_if(&stream, ExpectedVersion::NoStream, data, condition)
                .await
            {
                Ok(AppendResult {
                    next_revision,
                    position,
                    repeated,
                }) => {
                    return Ok(CommandOutcome {
                        events,
                        last_revision: next_revision.checked_sub(1),
                        position: Some(position),
                        replayed: repeated,
                    });
                }
                Err(error) if error.is_condition_failed() && conflicts < self.retry.max_retries => {
                    telemetry::command_conflict(&self.name);
                    telemetry::command_retry(&self.name, "conflict");
                    let delay = self.retry.backoff(conflicts);
                    tracing::debug!(%error, conflicts, ?delay, "condition failed; deciding again");
                    conflicts += 1;
                    tokio::time::sleep(delay).await;
                }
                Err(error) if error.is_condition_failed() => {
                    telemetry::command_conflict(&self.name);
                    return Err(CommandError::Store(error));
                }
                // The key's stream exists: a repeat of this command won the race; the loop
                // returns its outcome.
                Err(StoreError::WrongExpectedVersion { .. }) if key.is_some() => {}
                // The append may have committed: only a keyed command can find out, by its
                // stream, so only it is retried.
                Err(error)
                    if error.is_retryable()
                        && key.is_some()
                        && unavailable < self.retry.unavailable_retries =>
                {
                    let delay = self.retry.unavailable_backoff(unavailable);
                    tracing::info!(%error, ?delay, "store unavailable; retrying the keyed decision");
                    telemetry::command_retry(&self.name, "unavailable");
                    unavailable += 1;
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(CommandError::Store(error)),
            }
        }
    }

    /// Folds the events matching `query` after `basis` into it.
    async fn read_after(
        &self,
        query: &Query,
        mut basis: Basis<D::State>,
    ) -> Result<Basis<D::State>, CommandError<D::Error>> {
        let mut events = pin!(self.store.read_query(query, basis.after, None));
        while let Some(recorded) = events.try_next().await? {
            let event = self.codec.decode(&recorded)?;
            basis.state = self.model.evolve(basis.state, &event);
            basis.after = Some(recorded.position);
        }
        Ok(basis)
    }

    /// The outcome of the earlier decision that wrote `stream`, if one did.
    async fn original(
        &self,
        stream: &StreamId,
    ) -> Result<Option<CommandOutcome<D::Event>>, CommandError<D::Error>> {
        let mut read = pin!(self.store.read_stream(
            stream,
            StreamFrom::Start,
            crate::store::Direction::Forward,
            None
        ));
        let (mut events, mut last) = (Vec::new(), None);
        while let Some(recorded) = read.try_next().await? {
            events.push(self.codec.decode(&recorded)?);
            last = Some((recorded.revision, recorded.position));
        }
        Ok(last.map(|(revision, position)| CommandOutcome {
            events,
            last_revision: Some(revision),
            position: Some(position),
            replayed: true,
        }))
    }

    fn encode(
        &self,
        stream: &StreamId,
        events: &[D::Event],
        metadata: &Metadata,
    ) -> Result<Vec<crate::EventData>, CommandError<D::Error>> {
        let key = metadata.idempotency_key.as_deref();
        events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                let id = match key {
                    Some(key) => idempotent_event_id(stream, key, index),
                    None => self.ids.new_id(),
                };
                let metadata = metadata.clone().with_tags(self.model.tags(event));
                Ok(self.codec.encode(event)?.into_event_data(id, metadata))
            })
            .collect()
    }
}
