//! Specifications of a view: `view_spec(view).given(events).then_state(state)`.

use std::any::type_name;
use std::fmt::{self, Debug};

use super::report::{Report, fail, first_difference};
use crate::{View, fold_view};

/// Starts a specification of `view`: `view_spec(view).given(events).then_state(state)`.
///
/// ```
/// use decider_core::View;
/// use decider_core::testing::view_spec;
///
/// struct Total;
/// impl View for Total {
///     type Event = u64;
///     type State = u64;
///     fn initial_state(&self) -> u64 { 0 }
///     fn evolve(&self, total: u64, amount: &u64) -> u64 { total + amount }
/// }
/// view_spec(Total).given([2, 3]).then_state(5);
/// ```
pub fn view_spec<V: View>(view: V) -> ViewSpec<V> {
    ViewSpec {
        view,
        given: Vec::new(),
    }
}

/// A view specification: the view and the events it reads.
#[must_use = "a spec checks nothing until `then_state(..)` runs"]
pub struct ViewSpec<V: View> {
    view: V,
    given: Vec<V::Event>,
}

impl<V: View> ViewSpec<V> {
    /// Adds events the view reads (in order; may be called again).
    pub fn given(mut self, events: impl IntoIterator<Item = V::Event>) -> Self {
        self.given.extend(events);
        self
    }

    /// Expects the fold of the given events to be `expected`.
    ///
    /// # Panics
    /// If the view built another state; the message shows both, pretty-printed, and marks the
    /// first line that differs.
    #[track_caller]
    pub fn then_state(self, expected: V::State)
    where
        V::Event: Debug,
        V::State: PartialEq + Debug,
    {
        let actual = fold_view(&self.view, &self.given);
        if actual != expected {
            let expected = format!("{expected:#?}");
            let actual = format!("{actual:#?}");
            let index = first_difference(
                &expected.lines().collect::<Vec<_>>(),
                &actual.lines().collect::<Vec<_>>(),
            );
            fail(
                Report::new("view", "the state differs from the expected one")
                    .events("given", &self.given, None)
                    .text("expected state", &expected, index)
                    .text("actual state", &actual, index),
            );
        }
    }
}

impl<V: View> fmt::Debug for ViewSpec<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewSpec")
            .field("view", &type_name::<V>())
            .field("given", &self.given.len())
            .finish()
    }
}
