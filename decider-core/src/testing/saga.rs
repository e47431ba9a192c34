//! Specifications of a saga: `saga_spec(saga).given(event).then_commands(commands)`.

use std::any::type_name;
use std::fmt::{self, Debug, Display};

use super::report::{Report, fail, first_difference};
use crate::Saga;

/// Starts a specification of `saga`: `saga_spec(saga).given(event).then_commands(commands)`.
///
/// ```
/// use decider_core::Saga;
/// use decider_core::testing::saga_spec;
///
/// struct Fulfilment;
/// impl Saga for Fulfilment {
///     type Event = &'static str;
///     type Command = String;
///     fn react(&self, event: &&'static str) -> Vec<String> {
///         match *event {
///             "placed" => vec!["reserve stock".to_owned()],
///             _ => vec![],
///         }
///     }
/// }
/// saga_spec(Fulfilment).given("placed").then_commands(["reserve stock".to_owned()]);
/// saga_spec(Fulfilment).given("viewed").then_nothing();
/// ```
pub fn saga_spec<S: Saga>(saga: S) -> SagaSpec<S> {
    SagaSpec { saga }
}

/// A saga specification before its event.
#[must_use = "a spec checks nothing until `given(..)` and one of the `then` methods"]
pub struct SagaSpec<S> {
    saga: S,
}

impl<S: Saga> SagaSpec<S> {
    /// The event the saga reacts to.
    pub fn given(self, event: S::Event) -> SagaThen<S> {
        SagaThen {
            saga: self.saga,
            event,
        }
    }
}

impl<S> fmt::Debug for SagaSpec<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaSpec")
            .field("saga", &type_name::<S>())
            .finish()
    }
}

/// A saga specification with its event, waiting for the expected commands.
#[must_use = "a spec checks nothing until one of its `then` methods runs"]
pub struct SagaThen<S: Saga> {
    saga: S,
    event: S::Event,
}

impl<S: Saga> SagaThen<S> {
    /// Expects the saga to react with exactly `expected`, in order.
    ///
    /// # Panics
    /// If it reacted with other commands.
    #[track_caller]
    pub fn then_commands(self, expected: impl IntoIterator<Item = S::Command>)
    where
        S::Event: Debug,
        S::Command: PartialEq + Debug,
    {
        let expected: Vec<_> = expected.into_iter().collect();
        let actual = self.saga.react(&self.event);
        if let Some(index) = first_difference(&expected, &actual) {
            fail(
                self.report(format!(
                    "the saga sent other commands than expected (first difference at index {index})"
                ))
                .events("expected commands", &expected, Some(index))
                .events("actual commands", &actual, Some(index)),
            );
        }
    }

    /// Expects the saga to ignore the event (no commands).
    ///
    /// # Panics
    /// If it sent commands.
    #[track_caller]
    pub fn then_nothing(self)
    where
        S::Event: Debug,
        S::Command: Debug,
    {
        let actual = self.saga.react(&self.event);
        if !actual.is_empty() {
            fail(
                self.report(format!(
                    "expected no commands, but the saga sent {}",
                    actual.len()
                ))
                .events::<S::Command>("expected commands", &[], None)
                .events("actual commands", &actual, Some(0)),
            );
        }
    }

    fn report(&self, headline: impl Display) -> Report
    where
        S::Event: Debug,
    {
        Report::new("saga", headline).debug("given", &self.event)
    }
}

impl<S: Saga> fmt::Debug for SagaThen<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaThen")
            .field("saga", &type_name::<S>())
            .field("event", &type_name::<S::Event>())
            .finish()
    }
}
