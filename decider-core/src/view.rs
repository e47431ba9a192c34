//! Views: read-side folds of events into whatever a query needs.
//!
//! A view is the read half of a decider: no commands, no rules, only `evolve`. Views are
//! derived, disposable and rebuildable; the projection runner keeps them up to date.
//!
//! ```
//! use decider_core::View;
//!
//! struct DepositCount;
//! impl View for DepositCount {
//!     type Event = u64; // amounts deposited
//!     type State = usize;
//!     fn initial_state(&self) -> usize { 0 }
//!     fn evolve(&self, count: usize, _: &u64) -> usize { count + 1 }
//! }
//! assert_eq!(decider_core::fold_view(&DepositCount, &[5, 7]), 2);
//! ```
//!
//! A view that shows where its state has got (a revision, a position, a time), or keys its
//! state by stream, folds [`Recorded`] events: each decoded event with its place in the log.

use std::time::SystemTime;

use crate::codec::{Codec, CodecError};
use crate::{Position, RecordedEvent, StreamId};

/// A read-side fold.
pub trait View {
    /// The events it reads.
    type Event;
    /// What it builds.
    type State;

    /// The state before any event.
    fn initial_state(&self) -> Self::State;

    /// The state after `event`.
    fn evolve(&self, state: Self::State, event: &Self::Event) -> Self::State;
}

/// Folds `events` over the view's initial state.
pub fn fold_view<'a, V: View + ?Sized>(
    view: &V,
    events: impl IntoIterator<Item = &'a V::Event>,
) -> V::State
where
    V::Event: 'a,
{
    events
        .into_iter()
        .fold(view.initial_state(), |state, event| {
            view.evolve(state, event)
        })
}

/// A decoded event with its place in the log: what a view folds when its state tells how far it
/// has got, or belongs to the event's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded<E> {
    /// The event.
    pub event: E,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its revision in the stream (the first event is 0).
    pub revision: u64,
    /// Its global position.
    pub position: Position,
    /// When the store recorded it.
    pub recorded_at: SystemTime,
}

impl<E> Recorded<E> {
    /// `recorded`, decoded with `codec`.
    pub fn decode(codec: &impl Codec<E>, recorded: &RecordedEvent) -> Result<Self, CodecError> {
        Ok(Self {
            event: codec.decode(recorded)?,
            stream: recorded.stream.clone(),
            revision: recorded.revision,
            position: recorded.position,
            recorded_at: recorded.recorded_at,
        })
    }
}
