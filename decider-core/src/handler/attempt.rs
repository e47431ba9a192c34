//! The retry loop behind [`CommandHandler::handle`]: where each attempt of a command gets its
//! state, and what the store's answer to its append leads to.
//!
//! An attempt starts from a [`Next`] step and ends in an outcome, an error, or the next step:
//!
//! ```text
//! step                 gets its state by                        then
//! Decide(basis)        nothing: a cached or assumed state       decide
//! CatchUp(basis)       reading the events after `basis`         decide; the key's original if
//!                                                               found on a searched state;
//!                                                               Load if found on another
//! Load { snapshot }    reading from the latest snapshot         decide; the key's original if
//!                      (if `snapshot`) or the stream's start    found
//!
//! decided              store's answer                           next
//! events               appended                                 done (a repeated batch: the
//!                                                               key's original, read whole)
//! events               wrong expected version                   CatchUp(basis); Load when the
//!                                                               stream is behind the state;
//!                                                               the conflict when out of retries
//! events               a key's event id reused (unsearched)     Load { snapshot: false }
//! nothing, or refused  (no append)                              done on a confirmed state;
//!                                                               else CatchUp, or Load when the
//!                                                               key was not searched for
//! ```
//!
//! What a state may be trusted with is its [`Trust`]: a cached (or assumed) state may be stale
//! and was not searched for the command's idempotency key; a state read now is current; one read
//! from the stream's start was also searched for the key. The store checks an append against
//! both (the expected revision, and the key's event ids); a decision that appends nothing is
//! checked by nobody, so it only stands on a state read now and searched.

use std::pin::pin;

use futures::TryStreamExt;

use super::{CommandError, CommandHandler, CommandOutcome};
use crate::codec::{Codec, CodecError};
use crate::decider::{Decider, fold_from};
use crate::event::EventData;
use crate::ids::idempotent_event_id;
use crate::loaded::Loaded;
use crate::metadata::Metadata;
use crate::snapshot::Snapshot;
use crate::store::{AppendResult, EventStore, StoreError, StreamFrom};
use crate::stream::{ExpectedVersion, StreamId};

/// How far the state a command is decided on can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Not read now: taken from the cache or a snapshot, or assumed to be a new stream's. It may
    /// be stale, and its events were not searched for the command's idempotency key.
    Assumed,
    /// Read to the end of the stream now, from a state whose events were not searched for the
    /// command's idempotency key (a cached state or a snapshot).
    Current,
    /// Read from the start of the stream, every event searched for the idempotency key. (The
    /// initial state is `Searched` before its read: no event is folded into it yet.)
    Searched,
}

/// What a command is decided on: a state, the revision it is the fold of, and how far it can be
/// trusted.
pub(super) struct Basis<S> {
    state: S,
    last_revision: Option<u64>,
    trust: Trust,
    /// Events this command read from the store to build `state`.
    read: u64,
}

impl<S> Basis<S> {
    fn assumed(state: S, last_revision: Option<u64>) -> Self {
        Self {
            state,
            last_revision,
            trust: Trust::Assumed,
            read: 0,
        }
    }

    fn next_revision(&self) -> u64 {
        self.last_revision.map_or(0, |last| last + 1)
    }

    /// The state and its revision, as [`CommandHandler::load`] returns them.
    pub(super) fn loaded(self) -> Loaded<S> {
        Loaded {
            state: self.state,
            last_revision: self.last_revision,
        }
    }
}

/// Where the next attempt of a command gets its state.
enum Next<S> {
    /// Decide on this state (cached, or assumed new) without reading.
    Decide(Basis<S>),
    /// Read the events after this state, then decide.
    CatchUp(Basis<S>),
    /// Read the stream, from the latest snapshot if `snapshot`, then decide.
    Load { snapshot: bool },
}

/// What one attempt came to.
enum Attempt<E, S> {
    /// The command's outcome: decided now, or found as the original of its idempotency key.
    Done(CommandOutcome<E>),
    /// Try again from this step.
    Again(Next<S>),
}

/// A stream read into a basis, with the outcome of an earlier command with the same
/// idempotency key if its events were read.
pub(super) struct Read<D: Decider> {
    pub(super) basis: Basis<D::State>,
    original: Option<CommandOutcome<D::Event>>,
}

impl<D, S, C> CommandHandler<D, S, C>
where
    D: Decider,
    S: EventStore,
    C: Codec<D::Event>,
{
    /// Runs the command; a keyed one again, with backoff, while the store is unavailable.
    pub(super) async fn run_retrying_unavailable(
        &self,
        stream: &StreamId,
        command: &D::Command,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        let mut retry = 0;
        loop {
            match self.run(stream, command, metadata).await {
                Err(CommandError::Store(error))
                    if error.is_retryable()
                        && metadata.idempotency_key.is_some()
                        && retry < self.retry.unavailable_retries =>
                {
                    let delay = self.retry.unavailable_backoff(retry);
                    tracing::info!(retry, ?delay, %error, "store unavailable; retrying the keyed command");
                    crate::telemetry::command_retry(&self.name, "unavailable");
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Runs the command until it is decided and written, refused, answered from its key, or out
    /// of retries.
    async fn run(
        &self,
        stream: &StreamId,
        command: &D::Command,
        metadata: &Metadata,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        let key = metadata.idempotency_key.as_deref();
        let mut conflicts = 0;
        let mut next = self.first_step(stream, key);
        loop {
            let basis = match next {
                Next::Decide(basis) => basis,
                Next::CatchUp(basis) => {
                    let read = self.read_after(stream, basis, key).await?;
                    match read.original {
                        Some(original) if read.basis.trust == Trust::Searched => {
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
            next = match self
                .attempt(stream, command, metadata, basis, &mut conflicts)
                .await?
            {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Again(next) => next,
            };
        }
    }

    /// Where a command starts: the cached state, the assumption of a new stream, or a read.
    fn first_step(&self, stream: &StreamId, key: Option<&str>) -> Next<D::State> {
        // A keyed command decided on a state not searched for its key (cached, or from a
        // snapshot) relies on the append to refuse a repeat of its event ids; a store that does
        // not check them would write the repeat. Search the stream first then.
        let search_first = key.is_some() && !self.store.checks_reused_ids();
        if search_first {
            return Next::Load { snapshot: false };
        }
        if let Some(cached) = self.cache.as_ref().and_then(|cache| cache.get(stream)) {
            return Next::Decide(Basis::assumed(cached.state, cached.last_revision));
        }
        // An assumption, like a cached state: a decision that writes nothing is checked against
        // the stream itself, and an append to an existing stream fails and reads it.
        if self.assume_new && key.is_none() {
            return Next::Decide(Basis::assumed(self.decider.initial_state(), None));
        }
        Next::Load { snapshot: true }
    }

    /// Decides on `basis` and appends what the decider produced, expecting the basis's revision.
    async fn attempt(
        &self,
        stream: &StreamId,
        command: &D::Command,
        metadata: &Metadata,
        basis: Basis<D::State>,
        conflicts: &mut u32,
    ) -> Result<Attempt<D::Event, D::State>, CommandError<D::Error>> {
        let key = metadata.idempotency_key.as_deref();
        let unsearched = key.is_some() && basis.trust != Trust::Searched;
        let unconfirmed = unsearched || basis.trust == Trust::Assumed;
        let decision = if self.decider.is_terminal(&basis.state) {
            Err(CommandError::Terminal {
                stream: stream.clone(),
            })
        } else {
            self.decider
                .decide(command, &basis.state)
                .map_err(CommandError::Rejected)
        };
        let events = match decision {
            Ok(events) if !events.is_empty() => events,
            // Nothing to append, so nothing the store would check: confirm the basis first.
            _ if unsearched => return Ok(Attempt::Again(Next::Load { snapshot: false })),
            _ if unconfirmed => return Ok(Attempt::Again(Next::CatchUp(basis))),
            Ok(events) => {
                let last_revision = basis.last_revision;
                self.keep(stream, basis);
                return Ok(Attempt::Done(CommandOutcome {
                    events,
                    last_revision,
                    position: None,
                    replayed: false,
                }));
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
                    return Ok(Attempt::Done(outcome));
                }
                // Not written now, or not after `basis`: the store took the batch for an
                // earlier append of the same event ids, which only a command with the same
                // idempotency key writes (maybe one racing this one). Its original events are
                // in the stream, not necessarily ours.
                let read = self.load_basis(stream, key, false).await?;
                Ok(Attempt::Done(match read.original {
                    Some(original) => self.replay(stream, read.basis, original),
                    None => outcome,
                }))
            }
            Err(conflict @ StoreError::WrongExpectedVersion { actual, .. }) => {
                crate::telemetry::command_conflict(&self.name);
                if *conflicts >= self.retry.max_retries {
                    tracing::info!(retries = *conflicts, %conflict, "giving up after conflicts");
                    return Err(conflict.into());
                }
                let delay = self.retry.backoff(*conflicts);
                tracing::debug!(retry = *conflicts, ?delay, %conflict, "conflict; reading on");
                crate::telemetry::command_retry(&self.name, "conflict");
                tokio::time::sleep(delay).await;
                *conflicts += 1;
                if actual < basis.last_revision {
                    // The stream is shorter than the state: a snapshot of events that are not
                    // (or no longer) in this store. Only the events themselves can tell.
                    tracing::warn!(?actual, "the stream is behind the snapshot; reading it all");
                    return Ok(Attempt::Again(Next::Load { snapshot: false }));
                }
                // The state is right as of its revision; only the events since are missing.
                Ok(Attempt::Again(Next::CatchUp(basis)))
            }
            // The key's event ids exist, but not as this batch: the command ran before, on
            // another state, and decided otherwise. Its outcome is in the stream.
            Err(StoreError::InvalidInput(_)) if unsearched => {
                Ok(Attempt::Again(Next::Load { snapshot: false }))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Loads `stream` from its latest usable snapshot (if `snapshot` and the handler takes
    /// snapshots) or from its start, collecting the events an earlier command with idempotency
    /// key `key` wrote, if any.
    pub(super) async fn load_basis(
        &self,
        stream: &StreamId,
        key: Option<&str>,
        snapshot: bool,
    ) -> Result<Read<D>, CommandError<D::Error>> {
        let from_snapshot = match &self.snapshots {
            Some(snapshots) if snapshot => snapshots
                .load(stream)
                .await
                .map(|(state, revision)| Basis::assumed(state, Some(revision))),
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
    ) -> Result<Read<D>, CommandError<D::Error>> {
        let from = basis.last_revision.map_or(StreamFrom::Start, |last| {
            StreamFrom::Revision(last.saturating_add(1))
        });
        let mut events =
            pin!(
                self.store
                    .read_stream(stream, from, crate::store::Direction::Forward, None)
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
        if basis.trust == Trust::Assumed {
            basis.trust = Trust::Current;
        }
        Ok(Read { basis, original })
    }

    fn empty_basis(&self) -> Basis<D::State> {
        Basis {
            state: self.decider.initial_state(),
            last_revision: None,
            trust: Trust::Searched,
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
