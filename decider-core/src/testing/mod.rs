//! The given/when/then DSL: specifications of deciders, views, sagas and command handlers that
//! read as sentences and fail with a diff of expected and actual.
//!
//! - [`spec`]`(decider).given(events).when(command)` then [`then`](DeciderThen::then),
//!   [`then_error`](DeciderThen::then_error), [`then_error_matches`](DeciderThen::then_error_matches)
//!   or [`then_nothing`](DeciderThen::then_nothing): the pure decider, no store.
//! - [`decision_spec`]`(model).given(events).when(command)`: a DCB
//!   [`DecisionModel`](crate::dcb::DecisionModel), deciding on the given events its query
//!   matches; then as for a decider.
//! - [`view_spec`]`(view).given(events).`[`then_state`](ViewSpec::then_state)`(state)`.
//! - [`saga_spec`]`(saga).given(event).`[`then_commands`](SagaThen::then_commands)`(commands)`.
//! - [`spec`]`(decider).`[`on`](DeciderSpec::on)`(store)` or [`handler_spec`]`(handler)`: the same
//!   sentences, `async`, through a [`CommandHandler`](crate::CommandHandler) on any [`EventStore`](crate::EventStore); the events a command
//!   appended are read back from the store and decoded, so the codec round trip is part of the
//!   check.
//!
//! Every `then` panics when the expectation fails — this module is for tests — with a message
//! that shows what was given, the expected and the actual outcome, one event per line with its
//! index, and marks the first difference with `>`.
//!
//! ```
//! use decider_core::Decider;
//! use decider_core::testing::spec;
//!
//! #[derive(Debug, PartialEq)]
//! enum Event { Opened, Deposited(u64) }
//! enum Command { Open, Deposit(u64) }
//! #[derive(Debug, PartialEq)]
//! enum Error { AlreadyOpen, NotOpen, ZeroAmount }
//!
//! struct Account;
//! impl Decider for Account {
//!     type Command = Command;
//!     type Event = Event;
//!     type State = bool; // open?
//!     type Error = Error;
//!     fn initial_state(&self) -> bool { false }
//!     fn decide(&self, command: &Command, open: &bool) -> Result<Vec<Event>, Error> {
//!         match (command, open) {
//!             (Command::Open, false) => Ok(vec![Event::Opened]),
//!             (Command::Open, true) => Err(Error::AlreadyOpen),
//!             (Command::Deposit(0), _) => Err(Error::ZeroAmount),
//!             (Command::Deposit(amount), true) => Ok(vec![Event::Deposited(*amount)]),
//!             (Command::Deposit(_), false) => Err(Error::NotOpen),
//!         }
//!     }
//!     fn evolve(&self, open: bool, event: &Event) -> bool { open || matches!(event, Event::Opened) }
//! }
//!
//! spec(Account).when(Command::Open).then([Event::Opened]);
//! spec(Account).given([Event::Opened]).when(Command::Deposit(5)).then([Event::Deposited(5)]);
//! spec(Account).given([Event::Opened]).when(Command::Deposit(0)).then_error(Error::ZeroAmount);
//! spec(Account).when(Command::Deposit(5)).then_error_matches(|e| *e == Error::NotOpen);
//! ```
//!
//! A failing spec, say `.then([Event::Deposited(6)])` above, panics with:
//!
//! ```text
//! decider spec failed: the command produced other events than expected (first difference at index 0)
//! given:
//!     [0] Opened
//! when: a my_crate::Command
//! expected events:
//!   > [0] Deposited(6)
//! actual events:
//!   > [0] Deposited(5)
//! ```
//!
//! The command is named by its type only, so that commands need not implement `Debug`; the panic
//! points at the line of the `then` call.

mod decider;
mod decision;
mod handler;
mod report;
mod saga;
mod view;

pub use decider::{DeciderSpec, DeciderThen, spec};
pub use decision::{DecisionSpec, decision_spec};
pub use handler::{HandlerSpec, HandlerThen, handler_spec};
pub use saga::{SagaSpec, SagaThen, saga_spec};
pub use view::{ViewSpec, view_spec};
