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
