//! [`Decider`] (documented there) and its folds.

/// Decides which events a command causes, and folds events into state.
///
/// The Decider: the one place business rules live.
///
/// A decider turns a command and the current state into new events ([`Decider::decide`]) and
/// folds events into state ([`Decider::evolve`]). Both are pure: no clock, no randomness, no
/// I/O, so replaying a stream always yields the same state. Time, ids and outside facts arrive
/// inside the command.
///
/// ```
/// use decider_core::{Decider, fold};
///
/// struct Counter;
/// enum Command { Add(u32) }
/// enum Event { Added(u32) }
///
/// impl Decider for Counter {
///     type Command = Command;
///     type Event = Event;
///     type State = u64;
///     type Error = std::convert::Infallible;
///     fn initial_state(&self) -> u64 { 0 }
///     fn decide(&self, command: &Command, _: &u64) -> Result<Vec<Event>, Self::Error> {
///         let Command::Add(n) = command;
///         Ok(vec![Event::Added(*n)])
///     }
///     fn evolve(&self, state: u64, event: &Event) -> u64 {
///         let Event::Added(n) = event;
///         state + u64::from(*n)
///     }
/// }
///
/// assert_eq!(fold(&Counter, &[Event::Added(2), Event::Added(3)]), 5);
/// ```
pub trait Decider {
    /// What a caller asks for.
    type Command;
    /// What happened; the only thing stored.
    type Event;
    /// What `decide` needs to know; always a fold of events.
    type State;
    /// Why a command is refused (a business rule).
    type Error;

    /// The state of a stream with no events.
    fn initial_state(&self) -> Self::State;

    /// The events `command` causes in `state`, or why it is refused. An empty vector means the
    /// command changes nothing (it is accepted, and nothing is written).
    fn decide(
        &self,
        command: &Self::Command,
        state: &Self::State,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// The state after `event`.
    fn evolve(&self, state: Self::State, event: &Self::Event) -> Self::State;

    /// Whether the stream is finished (an account closed, an order shipped): the command handler
    /// refuses further commands, and followers may stop following it.
    fn is_terminal(&self, _state: &Self::State) -> bool {
        false
    }
}

/// Folds `events` over the decider's initial state.
pub fn fold<'a, D: Decider + ?Sized>(
    decider: &D,
    events: impl IntoIterator<Item = &'a D::Event>,
) -> D::State
where
    D::Event: 'a,
{
    fold_from(decider, decider.initial_state(), events)
}

/// Folds `events` over `state`.
pub fn fold_from<'a, D: Decider + ?Sized>(
    decider: &D,
    state: D::State,
    events: impl IntoIterator<Item = &'a D::Event>,
) -> D::State
where
    D::Event: 'a,
{
    events
        .into_iter()
        .fold(state, |state, event| decider.evolve(state, event))
}

impl<D: Decider + ?Sized> Decider for &D {
    type Command = D::Command;
    type Event = D::Event;
    type State = D::State;
    type Error = D::Error;

    fn initial_state(&self) -> Self::State {
        (**self).initial_state()
    }
    fn decide(
        &self,
        command: &Self::Command,
        state: &Self::State,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        (**self).decide(command, state)
    }
    fn evolve(&self, state: Self::State, event: &Self::Event) -> Self::State {
        (**self).evolve(state, event)
    }
    fn is_terminal(&self, state: &Self::State) -> bool {
        (**self).is_terminal(state)
    }
}

impl<D: Decider + ?Sized> Decider for std::sync::Arc<D> {
    type Command = D::Command;
    type Event = D::Event;
    type State = D::State;
    type Error = D::Error;

    fn initial_state(&self) -> Self::State {
        (**self).initial_state()
    }
    fn decide(
        &self,
        command: &Self::Command,
        state: &Self::State,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        (**self).decide(command, state)
    }
    fn evolve(&self, state: Self::State, event: &Self::Event) -> Self::State {
        (**self).evolve(state, event)
    }
    fn is_terminal(&self, state: &Self::State) -> bool {
        (**self).is_terminal(state)
    }
}
