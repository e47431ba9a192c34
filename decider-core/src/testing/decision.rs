//! Specifications of a DCB decision model: the decider's sentences, with the model's query
//! choosing which of the given events the decision sees.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::decider::{DeciderThen, spec};
use crate::codec::{Codec, JsonCodec};
use crate::dcb::DecisionModel;

/// Starts a specification of a [`DecisionModel`]:
/// `decision_spec(model).given(events).when(command).then(events)`.
///
/// The given events are everything in the log, tagged by the model's
/// [`tags`](DecisionModel::tags); the decision is made, as a
/// [`DecisionHandler`](crate::dcb::DecisionHandler) makes it, on those its
/// [`query`](DecisionModel::query) for the command matches (event types as the JSON codec
/// names them). So a spec fails when the query misses an event the rule needs, or takes in
/// one it must not see.
///
/// ```
/// # use decider_core::dcb::{DecisionModel, Query, QueryItem, Tag};
/// # use decider_core::{Category, Decider};
/// # use decider_core::testing::decision_spec;
/// # use serde::{Deserialize, Serialize};
/// # struct Usernames;
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # enum Event { Claimed { name: String } }
/// # impl Decider for Usernames {
/// #     type Command = String; type Event = Event; type State = bool; type Error = &'static str;
/// #     fn initial_state(&self) -> bool { false }
/// #     fn decide(&self, name: &String, taken: &bool) -> Result<Vec<Event>, &'static str> {
/// #         if *taken { Err("taken") } else { Ok(vec![Event::Claimed { name: name.clone() }]) }
/// #     }
/// #     fn evolve(&self, _: bool, _: &Event) -> bool { true }
/// # }
/// # impl DecisionModel for Usernames {
/// #     fn query(&self, name: &String) -> Query { Query::from(QueryItem::tagged([Tag::pair("username", name).unwrap()])) }
/// #     fn tags(&self, Event::Claimed { name }: &Event) -> Vec<Tag> { vec![Tag::pair("username", name).unwrap()] }
/// #     fn category(&self) -> Category { Category::new("username") }
/// # }
/// let claimed = |name: &str| Event::Claimed { name: name.to_owned() };
/// // Another name's claim is not in the query: "ada" is free.
/// decision_spec(Usernames).given([claimed("bob")]).when("ada".to_owned()).then([claimed("ada")]);
/// decision_spec(Usernames).given([claimed("ada")]).when("ada".to_owned()).then_error("taken");
/// ```
pub fn decision_spec<D: DecisionModel>(model: D) -> DecisionSpec<D> {
    DecisionSpec {
        model,
        given: Vec::new(),
    }
}

/// A decision-model specification before its command.
#[must_use = "a spec checks nothing until `when(..)` and one of the `then` methods"]
pub struct DecisionSpec<D: DecisionModel> {
    model: D,
    given: Vec<D::Event>,
}

impl<D: DecisionModel> DecisionSpec<D>
where
    D::Event: Serialize + DeserializeOwned,
{
    /// Adds events that are in the log before the command (in order; may be called again).
    pub fn given(mut self, events: impl IntoIterator<Item = D::Event>) -> Self {
        self.given.extend(events);
        self
    }

    /// The command under test: the given events its query matches are folded, the others left
    /// out, and the decider's expectations follow ([`DeciderThen`]).
    ///
    /// # Panics
    /// If a given event cannot be encoded by the JSON codec (its type is what queries match).
    #[track_caller]
    pub fn when(self, command: D::Command) -> DeciderThen<D> {
        let query = self.model.query(&command);
        let codec = JsonCodec::<D::Event>::default();
        let seen: Vec<D::Event> = self
            .given
            .into_iter()
            .filter(|event| {
                let encoded = codec
                    .encode(event)
                    .unwrap_or_else(|error| panic!("a given event does not encode: {error}"));
                query.matches(&encoded.event_type, &self.model.tags(event))
            })
            .collect();
        spec(self.model).given(seen).when(command)
    }
}

impl<D: DecisionModel> fmt::Debug for DecisionSpec<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionSpec")
            .field("model", &std::any::type_name::<D>())
            .field("given", &self.given.len())
            .finish()
    }
}
