//! Sagas: pure reactions from events to commands, and processes, sagas with state.
//!
//! A saga (or process manager) says which commands an event should cause. It decides nothing
//! itself and touches nothing: a saga runner delivers events to it and sends the commands it
//! returns through a [`CommandHandler`](crate::CommandHandler), using the triggering event's id
//! as the idempotency key so a redelivered event never sends a command twice in effect.
//!
//! ```
//! use decider_core::Saga;
//!
//! enum Event { OrderPlaced { order: u32 } }
//! #[derive(Debug, PartialEq)]
//! enum Command { ReserveStock { order: u32 } }
//!
//! struct Fulfilment;
//! impl Saga for Fulfilment {
//!     type Event = Event;
//!     type Command = Command;
//!     fn react(&self, event: &Event) -> Vec<Command> {
//!         match event { Event::OrderPlaced { order } => vec![Command::ReserveStock { order: *order }] }
//!     }
//! }
//! assert_eq!(Fulfilment.react(&Event::OrderPlaced { order: 7 }), vec![Command::ReserveStock { order: 7 }]);
//! ```
//!
//! A [`Process`] is a saga with state: its progress is kept in a stream of its own, and each
//! answer to one of its commands (taken or refused) is recorded there before the next step.

use crate::StreamId;
use crate::decider::Decider;

/// Reacts to events with commands.
pub trait Saga {
    /// The events it reacts to.
    type Event;
    /// The commands it sends.
    type Command;

    /// The commands `event` causes; empty when the event is of no interest.
    fn react(&self, event: &Self::Event) -> Vec<Self::Command>;
}

/// A saga with state: a process whose progress is the state of its own stream.
///
/// A process (a transfer between two accounts, an order's fulfilment) waits for one step at a
/// time. Its own stream, kept by the decider [`Own`](Process::Own), records where it is;
/// [`next_step`](Process::next_step) says, from that state alone, which command a stream of the
/// decider [`Target`](Process::Target) should take next; [`record`](Process::record) turns that
/// stream's answer — taken or refused — into a command to the process's own stream, whose
/// decider moves the process on, or into compensation. Nothing here touches a store:
/// [`ProcessHandler`](crate::projection::ProcessHandler) runs the steps, with each step's
/// [`key`](ProcessStep::key) as its idempotency key, so a step redelivered or retried is taken
/// once.
///
/// ```
/// use decider_core::{Decider, Process, ProcessStep, Refused, StreamId};
///
/// /// A parcel: shipped, then (once the courier took it) delivered.
/// struct Parcel;
/// #[derive(Debug, PartialEq)]
/// enum ParcelState { New, Shipping, Done { refused: bool } }
/// enum ParcelCommand { Record { refused: bool } }
/// impl Decider for Parcel {
///     type Command = ParcelCommand;
///     type Event = bool; // "the courier refused it"
///     type State = ParcelState;
///     type Error = std::convert::Infallible;
///     fn initial_state(&self) -> ParcelState { ParcelState::Shipping }
///     fn decide(&self, ParcelCommand::Record { refused }: &ParcelCommand, _: &ParcelState) -> Result<Vec<bool>, Self::Error> {
///         Ok(vec![*refused])
///     }
///     fn evolve(&self, _: ParcelState, refused: &bool) -> ParcelState { ParcelState::Done { refused: *refused } }
/// }
/// /// The courier, who may refuse a parcel.
/// struct Courier;
/// impl Decider for Courier {
///     type Command = String; // the parcel's stream
///     type Event = String;
///     type State = ();
///     type Error = String;
///     fn initial_state(&self) {}
///     fn decide(&self, parcel: &String, _: &()) -> Result<Vec<String>, String> { Ok(vec![parcel.clone()]) }
///     fn evolve(&self, _: (), _: &String) {}
/// }
///
/// struct Delivery;
/// impl Process for Delivery {
///     type Own = Parcel;
///     type Target = Courier;
///     type Step = &'static str;
///     fn next_step(&self, parcel: &StreamId, state: &ParcelState) -> Option<ProcessStep<&'static str, String>> {
///         (*state == ParcelState::Shipping).then(|| ProcessStep {
///             step: "ship",
///             stream: StreamId::new("courier-1").unwrap(),
///             command: parcel.to_string(),
///             key: format!("{parcel}/ship"),
///         })
///     }
///     fn record(&self, _: &'static str, answer: Result<(), Refused<String>>) -> ParcelCommand {
///         ParcelCommand::Record { refused: answer.is_err() }
///     }
/// }
///
/// let parcel = StreamId::new("parcel-7").unwrap();
/// let step = Delivery.next_step(&parcel, &ParcelState::Shipping).unwrap();
/// assert_eq!((step.command.as_str(), step.key.as_str()), ("parcel-7", "parcel-7/ship"));
/// assert_eq!(Delivery.next_step(&parcel, &ParcelState::Done { refused: false }), None);
/// ```
pub trait Process {
    /// The decider of the process's own stream; its state is the process's progress.
    type Own: Decider;
    /// The decider of the streams the process's steps go to.
    type Target: Decider;
    /// The process's own names for its steps, handed back to [`record`](Process::record) with
    /// their answers.
    type Step;

    /// The step the process of stream `process` waits for in `state`; `None` when it waits for
    /// nothing (not started, finished, or failed).
    fn next_step(
        &self,
        process: &StreamId,
        state: &<Self::Own as Decider>::State,
    ) -> Option<ProcessStep<Self::Step, <Self::Target as Decider>::Command>>;

    /// The command that records on the process's own stream how `step` was answered: `Ok` when
    /// the target took it, else why not.
    fn record(
        &self,
        step: Self::Step,
        answer: Result<(), Refused<<Self::Target as Decider>::Error>>,
    ) -> <Self::Own as Decider>::Command;
}

/// A step of a [`Process`]: a command for another stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStep<K, C> {
    /// The process's name for the step.
    pub step: K,
    /// The stream that takes the command.
    pub stream: StreamId,
    /// The command.
    pub command: C,
    /// The step's idempotency key: the same for every attempt at this step of this process,
    /// different for every other step of any process. The answer is recorded on the process's
    /// stream under `"<key>/recorded"`.
    pub key: String,
}

/// Why a step's target did not take it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused<E> {
    /// The target's decider refused the command.
    #[error(transparent)]
    Rejected(E),
    /// The target's stream is terminal (closed for good) and takes no more commands.
    #[error("the stream is terminal and takes no more commands")]
    Terminal,
}
