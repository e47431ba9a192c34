//! Specifications of a decider alone: `spec(decider).given(events).when(command).then(events)`.

use std::any::type_name;
use std::fmt::{self, Debug, Display};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::handler::{HandlerSpec, handler_spec};
use super::report::{Report, command_name, fail, first_difference};
use crate::{CommandHandler, Decider, EventStore, fold};

/// Starts a specification of `decider`: `spec(decider).given(events).when(command).then(events)`.
pub fn spec<D: Decider>(decider: D) -> DeciderSpec<D> {
    DeciderSpec {
        decider,
        given: Vec::new(),
    }
}

/// A decider specification before its command: the decider and the events already in its stream.
#[must_use = "a spec checks nothing until `when(..)` and one of the `then` methods"]
pub struct DeciderSpec<D: Decider> {
    decider: D,
    given: Vec<D::Event>,
}

impl<D: Decider> DeciderSpec<D> {
    /// Adds events that happened before the command (in order; may be called again).
    pub fn given(mut self, events: impl IntoIterator<Item = D::Event>) -> Self {
        self.given.extend(events);
        self
    }

    /// The command under test.
    pub fn when(self, command: D::Command) -> DeciderThen<D> {
        DeciderThen {
            decider: self.decider,
            given: self.given,
            command,
        }
    }

    /// Runs the specification through a [`CommandHandler`] with the default [`JsonCodec`](crate::JsonCodec) on
    /// `store`; the events given so far become the stream's first events.
    pub fn on<S: EventStore>(self, store: S) -> HandlerSpec<D, S>
    where
        D::Event: Serialize + DeserializeOwned,
    {
        handler_spec(CommandHandler::new(self.decider, store)).given(self.given)
    }
}

impl<D: Decider> fmt::Debug for DeciderSpec<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeciderSpec")
            .field("decider", &type_name::<D>())
            .field("given", &self.given.len())
            .finish()
    }
}

/// A decider specification with its command, waiting for the expected outcome.
#[must_use = "a spec checks nothing until one of its `then` methods runs"]
pub struct DeciderThen<D: Decider> {
    decider: D,
    given: Vec<D::Event>,
    command: D::Command,
}

impl<D: Decider> DeciderThen<D> {
    /// Expects the command to be accepted with exactly `expected`, in order.
    ///
    /// # Panics
    /// If the decider produced other events or refused the command.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = D::Event>)
    where
        D::Event: PartialEq + Debug,
        D::Error: Debug,
    {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.decide() {
            Ok(actual) => {
                if let Some(index) = first_difference(&expected, &actual) {
                    fail(
                        self.report(format!(
                            "the command produced other events than expected \
                             (first difference at index {index})"
                        ))
                        .events("expected events", &expected, Some(index))
                        .events("actual events", &actual, Some(index)),
                    );
                }
            }
            Err(error) => fail(
                self.report("expected events, but the command was rejected")
                    .events("expected events", &expected, None)
                    .debug("actual error", &error),
            ),
        }
    }

    /// Expects the command to be refused with `expected`.
    ///
    /// # Panics
    /// If the decider accepted the command or refused it with another error.
    #[track_caller]
    pub fn then_error(self, expected: D::Error)
    where
        D::Event: Debug,
        D::Error: PartialEq + Debug,
    {
        match self.decide() {
            Ok(events) => fail(
                self.report("expected the command to be rejected, but it was accepted")
                    .debug("expected error", &expected)
                    .events("actual events", &events, None),
            ),
            Err(error) if error != expected => fail(
                self.report("the command was rejected with another error")
                    .debug("expected error", &expected)
                    .debug("actual error", &error),
            ),
            Err(_) => {}
        }
    }

    /// Expects the command to be refused with an error `predicate` accepts: for errors without
    /// `PartialEq`, or to check only part of one.
    ///
    /// # Panics
    /// If the decider accepted the command or `predicate` returned `false`.
    #[track_caller]
    pub fn then_error_matches(self, predicate: impl FnOnce(&D::Error) -> bool)
    where
        D::Event: Debug,
        D::Error: Debug,
    {
        match self.decide() {
            Ok(events) => fail(
                self.report("expected the command to be rejected, but it was accepted")
                    .line("expected error", "one the predicate accepts")
                    .events("actual events", &events, None),
            ),
            Err(error) if !predicate(&error) => fail(
                self.report("the error does not match the predicate")
                    .debug("actual error", &error),
            ),
            Err(_) => {}
        }
    }

    /// Expects the command to be accepted with no events (it changes nothing).
    ///
    /// # Panics
    /// If the decider produced events or refused the command.
    #[track_caller]
    pub fn then_nothing(self)
    where
        D::Event: Debug,
        D::Error: Debug,
    {
        match self.decide() {
            Ok(events) if !events.is_empty() => fail(
                self.report(format!(
                    "expected no events, but the command produced {}",
                    events.len()
                ))
                .events::<D::Event>("expected events", &[], None)
                .events("actual events", &events, Some(0)),
            ),
            Ok(_) => {}
            Err(error) => fail(
                self.report(
                    "expected the command to be accepted with no events, but it was rejected",
                )
                .debug("actual error", &error),
            ),
        }
    }

    fn decide(&self) -> Result<Vec<D::Event>, D::Error> {
        let state = fold(&self.decider, &self.given);
        self.decider.decide(&self.command, &state)
    }

    fn report(&self, headline: impl Display) -> Report
    where
        D::Event: Debug,
    {
        Report::new("decider", headline)
            .events("given", &self.given, None)
            .line("when", command_name::<D::Command>())
    }
}

impl<D: Decider> fmt::Debug for DeciderThen<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeciderThen")
            .field("decider", &type_name::<D>())
            .field("given", &self.given.len())
            .field("command", &type_name::<D::Command>())
            .finish()
    }
}
