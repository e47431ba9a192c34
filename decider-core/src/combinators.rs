//! Combinators: compose deciders without runtime cost.
//!
//! Each combinator is a plain struct holding the deciders (and closures) it composes, and is
//! itself a [`Decider`]; nothing is boxed and nothing is dispatched dynamically, so a composed
//! decider compiles to the same code as one written by hand.
//!
//! - [`combine`] runs two deciders side by side in one stream: commands and events are
//!   [`Either`] one part's or the other's, the state is the pair of states.
//! - [`map_command`], [`map_event`], [`map_state`] and [`map_error`] change one of a decider's
//!   types, so that parts written separately fit the types a stream or caller expects.
//! - [`many`] runs one decider per key, e.g. one per line of an order.
//!
//! ```
//! use decider_core::combinators::{Either, combine, many};
//! use decider_core::{Decider, fold};
//!
//! /// Adds what it is told to add.
//! struct Total;
//! impl Decider for Total {
//!     type Command = u32;
//!     type Event = u32;
//!     type State = u64;
//!     type Error = std::convert::Infallible;
//!     fn initial_state(&self) -> u64 { 0 }
//!     fn decide(&self, n: &u32, _: &u64) -> Result<Vec<u32>, Self::Error> { Ok(vec![*n]) }
//!     fn evolve(&self, total: u64, n: &u32) -> u64 { total + u64::from(*n) }
//! }
//!
//! // Two totals in one stream.
//! let pair = combine(Total, Total);
//! assert_eq!(pair.decide(&Either::Right(5), &(0, 0)), Ok(vec![Either::Right(5)]));
//! assert_eq!(fold(&pair, &[Either::Left(1), Either::Right(5), Either::Left(2)]), (3, 5));
//!
//! // One total per till.
//! let tills = many::<_, &str>(Total);
//! let state = fold(&tills, &[("north", 1), ("south", 2), ("north", 3)]);
//! assert_eq!(state[&"north"], 4);
//! assert_eq!(state[&"south"], 2);
//! ```
//!
//! With the default [`JsonCodec`](crate::JsonCodec), an [`Either`] event is stored with the
//! event type `Left` or `Right`. To store a combined decider's events under domain event types,
//! [`map_event`] them into an enum of your own.

use std::any::type_name;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::decider::Decider;

/// One of two values: the command, event or error of the left or the right part of a
/// [`Combined`] decider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Either<L, R> {
    /// The left part's.
    Left(L),
    /// The right part's.
    Right(R),
}

/// Shows the part's value as it is, so that a combined decider's errors read like its parts'.
impl<L: fmt::Display, R: fmt::Display> fmt::Display for Either<L, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Left(l) => l.fmt(f),
            Self::Right(r) => r.fmt(f),
        }
    }
}

/// Lets a combined decider's error travel through `?` and `CommandError` like its parts' do.
impl<L: std::error::Error, R: std::error::Error> std::error::Error for Either<L, R> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Left(l) => l.source(),
            Self::Right(r) => r.source(),
        }
    }
}

/// Two deciders side by side; built by [`combine`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Combined<A, B> {
    left: A,
    right: B,
}

/// Runs `left` and `right` side by side in one stream.
///
/// A command goes to the part it belongs to and is decided on that part's state alone; the
/// events it causes are wrapped on the same side, as is a refusal. An event changes only its
/// part's state. The combined stream is terminal when both parts are.
pub fn combine<A: Decider, B: Decider>(left: A, right: B) -> Combined<A, B> {
    Combined { left, right }
}

impl<A: Decider, B: Decider> Decider for Combined<A, B> {
    type Command = Either<A::Command, B::Command>;
    type Event = Either<A::Event, B::Event>;
    type State = (A::State, B::State);
    type Error = Either<A::Error, B::Error>;

    fn initial_state(&self) -> Self::State {
        (self.left.initial_state(), self.right.initial_state())
    }

    fn decide(
        &self,
        command: &Self::Command,
        (left, right): &Self::State,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        match command {
            Either::Left(command) => match self.left.decide(command, left) {
                Ok(events) => Ok(events.into_iter().map(Either::Left).collect()),
                Err(error) => Err(Either::Left(error)),
            },
            Either::Right(command) => match self.right.decide(command, right) {
                Ok(events) => Ok(events.into_iter().map(Either::Right).collect()),
                Err(error) => Err(Either::Right(error)),
            },
        }
    }

    fn evolve(&self, (left, right): Self::State, event: &Self::Event) -> Self::State {
        match event {
            Either::Left(event) => (self.left.evolve(left, event), right),
            Either::Right(event) => (left, self.right.evolve(right, event)),
        }
    }

    /// Both parts must be finished: while one part still takes commands, so does the stream.
    fn is_terminal(&self, (left, right): &Self::State) -> bool {
        self.left.is_terminal(left) && self.right.is_terminal(right)
    }
}

/// A decider taking another command type; built by [`map_command`].
pub struct MapCommand<D, F, C2> {
    decider: D,
    into: F,
    // `fn(&C2)` rather than `C2`: the adapter holds no `C2`, so it must not inherit `C2`'s
    // auto traits (`Send`, `Sync`) or drop check.
    _command: PhantomData<fn(&C2)>,
}

/// `decider`, taking commands of type `C2`, turned into its own commands by `into` before
/// deciding.
pub fn map_command<D, C2, F>(decider: D, into: F) -> MapCommand<D, F, C2>
where
    D: Decider,
    F: Fn(&C2) -> D::Command,
{
    MapCommand {
        decider,
        into,
        _command: PhantomData,
    }
}

impl<D, C2, F> Decider for MapCommand<D, F, C2>
where
    D: Decider,
    F: Fn(&C2) -> D::Command,
{
    type Command = C2;
    type Event = D::Event;
    type State = D::State;
    type Error = D::Error;

    fn initial_state(&self) -> Self::State {
        self.decider.initial_state()
    }
    fn decide(&self, command: &C2, state: &Self::State) -> Result<Vec<Self::Event>, Self::Error> {
        self.decider.decide(&(self.into)(command), state)
    }
    fn evolve(&self, state: Self::State, event: &Self::Event) -> Self::State {
        self.decider.evolve(state, event)
    }
    fn is_terminal(&self, state: &Self::State) -> bool {
        self.decider.is_terminal(state)
    }
}

impl<D: Clone, F: Clone, C2> Clone for MapCommand<D, F, C2> {
    fn clone(&self) -> Self {
        Self {
            decider: self.decider.clone(),
            into: self.into.clone(),
            _command: PhantomData,
        }
    }
}

impl<D: fmt::Debug, F, C2> fmt::Debug for MapCommand<D, F, C2> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapCommand")
            .field("decider", &self.decider)
            .field("into", &type_name::<F>())
            .field("command", &type_name::<C2>())
            .finish()
    }
}

/// A decider producing and consuming another event type; built by [`map_event`].
#[derive(Clone, Copy)]
pub struct MapEvent<D, I, F> {
    decider: D,
    into: I,
    from: F,
}

/// `decider` with events of type `E2`.
///
/// Both directions are needed because events flow both ways: `decide` produces them (turned
/// into `E2` by `into`) and `evolve` consumes them (turned back by `from`). The pair should be
/// an isomorphism on the events the decider produces, or a stream's state would change when
/// its events are read back.
pub fn map_event<D, E2, I, F>(decider: D, into: I, from: F) -> MapEvent<D, I, F>
where
    D: Decider,
    I: Fn(&D::Event) -> E2,
    F: Fn(&E2) -> D::Event,
{
    MapEvent {
        decider,
        into,
        from,
    }
}

impl<D, E2, I, F> Decider for MapEvent<D, I, F>
where
    D: Decider,
    I: Fn(&D::Event) -> E2,
    F: Fn(&E2) -> D::Event,
{
    type Command = D::Command;
    type Event = E2;
    type State = D::State;
    type Error = D::Error;

    fn initial_state(&self) -> Self::State {
        self.decider.initial_state()
    }
    fn decide(&self, command: &Self::Command, state: &Self::State) -> Result<Vec<E2>, D::Error> {
        let events = self.decider.decide(command, state)?;
        Ok(events.iter().map(&self.into).collect())
    }
    fn evolve(&self, state: Self::State, event: &E2) -> Self::State {
        self.decider.evolve(state, &(self.from)(event))
    }
    fn is_terminal(&self, state: &Self::State) -> bool {
        self.decider.is_terminal(state)
    }
}

impl<D: fmt::Debug, I, F> fmt::Debug for MapEvent<D, I, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapEvent")
            .field("decider", &self.decider)
            .field("into", &type_name::<I>())
            .field("from", &type_name::<F>())
            .finish()
    }
}

/// A decider with another state type; built by [`map_state`].
#[derive(Clone, Copy)]
pub struct MapState<D, I, F> {
    decider: D,
    into: I,
    from: F,
}

/// `decider` with states of type `S2`.
///
/// Every step converts: `decide` and `is_terminal` see `from(state)`, and `evolve` returns
/// `into(decider.evolve(from(state), event))`. The pair should be an isomorphism, or folding
/// would drift from the original decider's fold.
pub fn map_state<D, S2, I, F>(decider: D, into: I, from: F) -> MapState<D, I, F>
where
    D: Decider,
    I: Fn(D::State) -> S2,
    F: Fn(&S2) -> D::State,
{
    MapState {
        decider,
        into,
        from,
    }
}

impl<D, S2, I, F> Decider for MapState<D, I, F>
where
    D: Decider,
    I: Fn(D::State) -> S2,
    F: Fn(&S2) -> D::State,
{
    type Command = D::Command;
    type Event = D::Event;
    type State = S2;
    type Error = D::Error;

    fn initial_state(&self) -> S2 {
        (self.into)(self.decider.initial_state())
    }
    fn decide(&self, command: &Self::Command, state: &S2) -> Result<Vec<Self::Event>, Self::Error> {
        self.decider.decide(command, &(self.from)(state))
    }
    fn evolve(&self, state: S2, event: &Self::Event) -> S2 {
        (self.into)(self.decider.evolve((self.from)(&state), event))
    }
    fn is_terminal(&self, state: &S2) -> bool {
        self.decider.is_terminal(&(self.from)(state))
    }
}

impl<D: fmt::Debug, I, F> fmt::Debug for MapState<D, I, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapState")
            .field("decider", &self.decider)
            .field("into", &type_name::<I>())
            .field("from", &type_name::<F>())
            .finish()
    }
}

/// A decider with another error type; built by [`map_error`].
#[derive(Clone, Copy)]
pub struct MapError<D, F> {
    decider: D,
    into: F,
}

/// `decider` with its refusals turned into `E2` by `into`, e.g. to fit a caller's error enum.
pub fn map_error<D, E2, F>(decider: D, into: F) -> MapError<D, F>
where
    D: Decider,
    F: Fn(D::Error) -> E2,
{
    MapError { decider, into }
}

impl<D, E2, F> Decider for MapError<D, F>
where
    D: Decider,
    F: Fn(D::Error) -> E2,
{
    type Command = D::Command;
    type Event = D::Event;
    type State = D::State;
    type Error = E2;

    fn initial_state(&self) -> Self::State {
        self.decider.initial_state()
    }
    fn decide(&self, command: &Self::Command, state: &Self::State) -> Result<Vec<D::Event>, E2> {
        self.decider.decide(command, state).map_err(&self.into)
    }
    fn evolve(&self, state: Self::State, event: &Self::Event) -> Self::State {
        self.decider.evolve(state, event)
    }
    fn is_terminal(&self, state: &Self::State) -> bool {
        self.decider.is_terminal(state)
    }
}

impl<D: fmt::Debug, F> fmt::Debug for MapError<D, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapError")
            .field("decider", &self.decider)
            .field("into", &type_name::<F>())
            .finish()
    }
}

/// A family of deciders, one per key; built by [`many`].
pub struct Many<D, K> {
    decider: D,
    // The family holds no key itself; see `MapCommand` for why `fn() -> K`.
    _key: PhantomData<fn() -> K>,
}

/// One `decider` per key of type `K`, in one stream.
///
/// Commands and events carry their key. A command is decided on its key's state, or on the
/// initial state when the key has no event yet; an event changes only its key's state. Keys
/// appear in the state with their first event.
pub fn many<D: Decider, K: Ord + Clone>(decider: D) -> Many<D, K> {
    Many {
        decider,
        _key: PhantomData,
    }
}

impl<D: Decider, K: Ord + Clone> Decider for Many<D, K> {
    type Command = (K, D::Command);
    type Event = (K, D::Event);
    type State = BTreeMap<K, D::State>;
    type Error = D::Error;

    fn initial_state(&self) -> Self::State {
        BTreeMap::new()
    }

    fn decide(
        &self,
        (key, command): &Self::Command,
        states: &Self::State,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        let events = match states.get(key) {
            Some(state) => self.decider.decide(command, state)?,
            None => self
                .decider
                .decide(command, &self.decider.initial_state())?,
        };
        Ok(events.into_iter().map(|e| (key.clone(), e)).collect())
    }

    fn evolve(&self, mut states: Self::State, (key, event): &Self::Event) -> Self::State {
        // `evolve` takes the state by value, so the entry is moved out and back in; taking the
        // stored key back with it saves a clone for every key already present.
        let (key, state) = states
            .remove_entry(key)
            .unwrap_or_else(|| (key.clone(), self.decider.initial_state()));
        states.insert(key, self.decider.evolve(state, event));
        states
    }

    /// Never: keys can always be added, so the family as a whole never ends, even when every
    /// key present is terminal. Refuse commands to a finished key in the part's own `decide`.
    fn is_terminal(&self, _: &Self::State) -> bool {
        false
    }
}

impl<D: Clone, K> Clone for Many<D, K> {
    fn clone(&self) -> Self {
        Self {
            decider: self.decider.clone(),
            _key: PhantomData,
        }
    }
}

impl<D: Copy, K> Copy for Many<D, K> {}

impl<D: fmt::Debug, K> fmt::Debug for Many<D, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Many")
            .field("decider", &self.decider)
            .field("key", &type_name::<K>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decider::{fold, fold_from};
    use proptest::prelude::*;

    /// Counts up to a capacity, after which it is closed; order matters because of `Reset`.
    #[derive(Debug, Clone, Copy)]
    struct Counter;

    const CAPACITY: u32 = 100;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum CounterCommand {
        Add(u8),
        Reset,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum CounterEvent {
        Added(u8),
        WasReset,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum CounterError {
        ZeroAmount,
        AlreadyZero,
    }

    impl Decider for Counter {
        type Command = CounterCommand;
        type Event = CounterEvent;
        type State = u32;
        type Error = CounterError;

        fn initial_state(&self) -> u32 {
            0
        }
        fn decide(
            &self,
            command: &CounterCommand,
            total: &u32,
        ) -> Result<Vec<CounterEvent>, CounterError> {
            match command {
                CounterCommand::Add(0) => Err(CounterError::ZeroAmount),
                CounterCommand::Add(n) => Ok(vec![CounterEvent::Added(*n)]),
                CounterCommand::Reset if *total == 0 => Err(CounterError::AlreadyZero),
                CounterCommand::Reset => Ok(vec![CounterEvent::WasReset]),
            }
        }
        fn evolve(&self, total: u32, event: &CounterEvent) -> u32 {
            match event {
                CounterEvent::Added(n) => total + u32::from(*n),
                CounterEvent::WasReset => 0,
            }
        }
        fn is_terminal(&self, total: &u32) -> bool {
            *total >= CAPACITY
        }
    }

    /// A switch that can be broken for good; every command can be refused.
    #[derive(Debug, Clone, Copy)]
    struct Switch;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum SwitchState {
        Off,
        On,
        Broken,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum SwitchCommand {
        TurnOn,
        TurnOff,
        Break,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum SwitchEvent {
        TurnedOn,
        TurnedOff,
        Broke,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum SwitchError {
        AlreadyOn,
        AlreadyOff,
        IsBroken,
    }

    impl Decider for Switch {
        type Command = SwitchCommand;
        type Event = SwitchEvent;
        type State = SwitchState;
        type Error = SwitchError;

        fn initial_state(&self) -> SwitchState {
            SwitchState::Off
        }
        fn decide(
            &self,
            command: &SwitchCommand,
            state: &SwitchState,
        ) -> Result<Vec<SwitchEvent>, SwitchError> {
            match (command, state) {
                (_, SwitchState::Broken) => Err(SwitchError::IsBroken),
                (SwitchCommand::TurnOn, SwitchState::On) => Err(SwitchError::AlreadyOn),
                (SwitchCommand::TurnOff, SwitchState::Off) => Err(SwitchError::AlreadyOff),
                (SwitchCommand::TurnOn, SwitchState::Off) => Ok(vec![SwitchEvent::TurnedOn]),
                (SwitchCommand::TurnOff, SwitchState::On) => Ok(vec![SwitchEvent::TurnedOff]),
                // Breaking a lit switch turns it off first: two events from one command.
                (SwitchCommand::Break, SwitchState::On) => {
                    Ok(vec![SwitchEvent::TurnedOff, SwitchEvent::Broke])
                }
                (SwitchCommand::Break, SwitchState::Off) => Ok(vec![SwitchEvent::Broke]),
            }
        }
        fn evolve(&self, state: SwitchState, event: &SwitchEvent) -> SwitchState {
            match (state, event) {
                (SwitchState::Broken, _) | (_, SwitchEvent::Broke) => SwitchState::Broken,
                (_, SwitchEvent::TurnedOn) => SwitchState::On,
                (_, SwitchEvent::TurnedOff) => SwitchState::Off,
            }
        }
        fn is_terminal(&self, state: &SwitchState) -> bool {
            *state == SwitchState::Broken
        }
    }

    fn counter_command() -> impl Strategy<Value = CounterCommand> {
        prop_oneof![
            // Small amounts, zero included, so the capacity and the refusal are both reached.
            (0u8..30).prop_map(CounterCommand::Add),
            Just(CounterCommand::Reset),
        ]
    }

    fn counter_event() -> impl Strategy<Value = CounterEvent> {
        prop_oneof![
            4 => (1u8..30).prop_map(CounterEvent::Added),
            1 => Just(CounterEvent::WasReset),
        ]
    }

    fn switch_command() -> impl Strategy<Value = SwitchCommand> {
        prop_oneof![
            Just(SwitchCommand::TurnOn),
            Just(SwitchCommand::TurnOff),
            Just(SwitchCommand::Break),
        ]
    }

    fn switch_event() -> impl Strategy<Value = SwitchEvent> {
        prop_oneof![
            4 => Just(SwitchEvent::TurnedOn),
            4 => Just(SwitchEvent::TurnedOff),
            1 => Just(SwitchEvent::Broke),
        ]
    }

    fn switch_state() -> impl Strategy<Value = SwitchState> {
        prop_oneof![
            Just(SwitchState::Off),
            Just(SwitchState::On),
            Just(SwitchState::Broken),
        ]
    }

    fn either<L: fmt::Debug, R: fmt::Debug>(
        left: impl Strategy<Value = L>,
        right: impl Strategy<Value = R>,
    ) -> impl Strategy<Value = Either<L, R>> {
        prop_oneof![left.prop_map(Either::Left), right.prop_map(Either::Right)]
    }

    fn lefts<L: Clone, R>(events: &[Either<L, R>]) -> Vec<L> {
        events
            .iter()
            .filter_map(|e| match e {
                Either::Left(l) => Some(l.clone()),
                Either::Right(_) => None,
            })
            .collect()
    }

    fn rights<L, R: Clone>(events: &[Either<L, R>]) -> Vec<R> {
        events
            .iter()
            .filter_map(|e| match e {
                Either::Left(_) => None,
                Either::Right(r) => Some(r.clone()),
            })
            .collect()
    }

    /// A wire form of switch events, as a stored enum might have: isomorphic on the events.
    fn switch_event_into_char(event: &SwitchEvent) -> char {
        match event {
            SwitchEvent::TurnedOn => '+',
            SwitchEvent::TurnedOff => '-',
            SwitchEvent::Broke => 'x',
        }
    }

    fn switch_event_from_char(wire: &char) -> SwitchEvent {
        match wire {
            '+' => SwitchEvent::TurnedOn,
            '-' => SwitchEvent::TurnedOff,
            _ => SwitchEvent::Broke,
        }
    }

    proptest! {
        /// Law 1, with two different parts: the combined fold over any interleaving is the
        /// pair of each part's fold over its own events, in their order.
        #[test]
        fn combined_fold_is_the_pair_of_the_parts_folds(
            events in prop::collection::vec(either(counter_event(), switch_event()), 0..64),
        ) {
            let combined = combine(Counter, Switch);
            prop_assert_eq!(
                fold(&combined, &events),
                (fold(&Counter, &lefts(&events)), fold(&Switch, &rights(&events))),
            );
        }

        /// Law 1 with two parts of the same type, where routing an event to the wrong side
        /// would still compile; only this property catches it.
        #[test]
        fn combined_fold_of_twin_parts_keeps_each_side_apart(
            events in prop::collection::vec(either(counter_event(), counter_event()), 0..64),
        ) {
            let combined = combine(Counter, Counter);
            prop_assert_eq!(
                fold(&combined, &events),
                (fold(&Counter, &lefts(&events)), fold(&Counter, &rights(&events))),
            );
        }

        /// Law 2: a combined command is decided by its part on its part's state, and the
        /// events or the refusal come back on the same side.
        #[test]
        fn combined_decide_is_the_parts_decide_on_the_same_side(
            history in prop::collection::vec(either(counter_event(), switch_event()), 0..32),
            command in either(counter_command(), switch_command()),
        ) {
            let combined = combine(Counter, Switch);
            let state = fold(&combined, &history);
            let expected = match &command {
                Either::Left(c) => Counter
                    .decide(c, &state.0)
                    .map(|es| es.into_iter().map(Either::Left).collect::<Vec<_>>())
                    .map_err(Either::Left),
                Either::Right(c) => Switch
                    .decide(c, &state.1)
                    .map(|es| es.into_iter().map(Either::Right).collect::<Vec<_>>())
                    .map_err(Either::Right),
            };
            prop_assert_eq!(combined.decide(&command, &state), expected);
        }

        /// Law 2 with twin parts: deciding on the other side's state, or wrapping the result
        /// on the other side, would compile here and must fail this property.
        #[test]
        fn combined_decide_of_twin_parts_uses_the_commands_side(
            history in prop::collection::vec(either(switch_event(), switch_event()), 0..32),
            command in either(switch_command(), switch_command()),
        ) {
            let combined = combine(Switch, Switch);
            let state = fold(&combined, &history);
            let expected = match &command {
                Either::Left(c) => Switch
                    .decide(c, &state.0)
                    .map(|es| es.into_iter().map(Either::Left).collect::<Vec<_>>())
                    .map_err(Either::Left),
                Either::Right(c) => Switch
                    .decide(c, &state.1)
                    .map(|es| es.into_iter().map(Either::Right).collect::<Vec<_>>())
                    .map_err(Either::Right),
            };
            prop_assert_eq!(combined.decide(&command, &state), expected);
        }

        /// The combined stream is finished exactly when both parts are.
        #[test]
        fn combined_is_terminal_when_both_parts_are(
            total in 0u32..(2 * CAPACITY),
            switch in switch_state(),
        ) {
            let combined = combine(Counter, Switch);
            prop_assert_eq!(
                combined.is_terminal(&(total, switch)),
                Counter.is_terminal(&total) && Switch.is_terminal(&switch),
            );
        }

        /// Law 3: with an isomorphism, the mapped decider folds mapped events to the same
        /// state, decides the mapped events, and refuses the same commands.
        #[test]
        fn map_event_with_an_isomorphism_round_trips(
            history in prop::collection::vec(switch_event(), 0..32),
            command in switch_command(),
        ) {
            let mapped = map_event(Switch, switch_event_into_char, switch_event_from_char);
            let wire: Vec<char> = history.iter().map(switch_event_into_char).collect();
            let state = fold(&Switch, &history);
            prop_assert_eq!(fold(&mapped, &wire), state);
            prop_assert_eq!(
                mapped.decide(&command, &state),
                Switch
                    .decide(&command, &state)
                    .map(|es| es.iter().map(switch_event_into_char).collect::<Vec<_>>()),
            );
            prop_assert_eq!(mapped.is_terminal(&state), Switch.is_terminal(&state));
        }

        /// Law 4: with an isomorphism, the mapped decider's fold is the mapped fold, and it
        /// decides and ends exactly as the original on the corresponding state.
        #[test]
        fn map_state_with_an_isomorphism_round_trips(
            history in prop::collection::vec(counter_event(), 0..32),
            more in prop::collection::vec(counter_event(), 0..8),
            command in counter_command(),
        ) {
            let mapped = map_state(Counter, u32::to_be_bytes, |bytes: &[u8; 4]| {
                u32::from_be_bytes(*bytes)
            });
            let state = fold(&Counter, &history);
            let mapped_state = fold(&mapped, &history);
            prop_assert_eq!(mapped_state, state.to_be_bytes());
            prop_assert_eq!(
                fold_from(&mapped, mapped_state, &more),
                fold_from(&Counter, state, &more).to_be_bytes(),
            );
            prop_assert_eq!(mapped.decide(&command, &mapped_state), Counter.decide(&command, &state));
            prop_assert_eq!(mapped.is_terminal(&mapped_state), Counter.is_terminal(&state));
        }

        /// The mapped command is decided as the original command it maps to.
        #[test]
        fn map_command_decides_the_mapped_command(
            history in prop::collection::vec(counter_event(), 0..32),
            wire in -3i16..30,
        ) {
            let into = |wire: &i16| match u8::try_from(*wire) {
                Ok(n) => CounterCommand::Add(n),
                Err(_) => CounterCommand::Reset,
            };
            let mapped = map_command(Counter, into);
            let state = fold(&Counter, &history);
            prop_assert_eq!(fold(&mapped, &history), state);
            prop_assert_eq!(mapped.decide(&wire, &state), Counter.decide(&into(&wire), &state));
        }

        /// Refusals are mapped; accepted commands are untouched.
        #[test]
        fn map_error_maps_only_refusals(
            history in prop::collection::vec(counter_event(), 0..32),
            command in counter_command(),
        ) {
            let mapped = map_error(Counter, |e: CounterError| format!("{e:?}"));
            let state = fold(&Counter, &history);
            prop_assert_eq!(fold(&mapped, &history), state);
            prop_assert_eq!(
                mapped.decide(&command, &state),
                Counter.decide(&command, &state).map_err(|e| format!("{e:?}")),
            );
        }

        /// Law 5: the family's fold holds, for each key that has events, the fold of that
        /// key's events in their order, and no other key.
        #[test]
        fn many_fold_is_the_fold_of_each_keys_events(
            // Few keys, so that keys repeat and interleave.
            events in prop::collection::vec((0u8..4, counter_event()), 0..64),
        ) {
            let family = many::<_, u8>(Counter);
            let states = fold(&family, &events);
            let mut expected = BTreeMap::new();
            for (key, _) in &events {
                let own: Vec<CounterEvent> = events
                    .iter()
                    .filter(|(k, _)| k == key)
                    .map(|(_, e)| *e)
                    .collect();
                expected.insert(*key, fold(&Counter, &own));
            }
            prop_assert_eq!(states, expected);
        }

        /// A keyed command is decided on its key's state (the initial state for a new key),
        /// and its events carry its key.
        #[test]
        fn many_decides_on_the_keys_own_state(
            history in prop::collection::vec((0u8..4, switch_event()), 0..32),
            key in 0u8..5,
            command in switch_command(),
        ) {
            let family = many::<_, u8>(Switch);
            let states = fold(&family, &history);
            let own = states.get(&key).copied().unwrap_or(SwitchState::Off);
            prop_assert_eq!(
                family.decide(&(key, command), &states),
                Switch
                    .decide(&command, &own)
                    .map(|es| es.into_iter().map(|e| (key, e)).collect::<Vec<_>>()),
            );
            prop_assert!(!family.is_terminal(&states));
        }
    }

    #[test]
    fn combined_refusals_name_their_side() {
        let combined = combine(Counter, Switch);
        let state = combined.initial_state();
        assert_eq!(
            combined.decide(&Either::Left(CounterCommand::Reset), &state),
            Err(Either::Left(CounterError::AlreadyZero)),
        );
        assert_eq!(
            combined.decide(&Either::Right(SwitchCommand::TurnOff), &state),
            Err(Either::Right(SwitchError::AlreadyOff)),
        );
    }

    #[test]
    fn many_is_not_terminal_even_when_every_key_is() {
        let family = many::<_, &str>(Switch);
        let states = fold(&family, &[("hall", SwitchEvent::Broke)]);
        assert!(Switch.is_terminal(&states["hall"]));
        assert!(!family.is_terminal(&states));
    }

    #[test]
    fn either_serialises_externally_tagged() {
        let event: Either<u8, String> = Either::Right("x".into());
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(json, r#"{"Right":"x"}"#);
        assert_eq!(
            serde_json::from_str::<Either<u8, String>>(&json).unwrap(),
            event
        );
    }

    #[test]
    fn debug_shows_the_closure_types() {
        let mapped = map_error(Counter, |e: CounterError| format!("{e:?}"));
        let shown = format!("{mapped:?}");
        assert!(
            shown.starts_with("MapError { decider: Counter, into: "),
            "{shown}"
        );
        assert!(shown.contains("closure"), "{shown}");
    }
}
