//! The given/when/then DSL: specifications of deciders, views, sagas and command handlers that
//! read as sentences and fail with a diff of expected and actual.
//!
//! - [`spec`]`(decider).given(events).when(command)` then [`then`](DeciderThen::then),
//!   [`then_error`](DeciderThen::then_error), [`then_error_matches`](DeciderThen::then_error_matches)
//!   or [`then_nothing`](DeciderThen::then_nothing): the pure decider, no store.
//! - [`view_spec`]`(view).given(events).`[`then_state`](ViewSpec::then_state)`(state)`.
//! - [`saga_spec`]`(saga).given(event).`[`then_commands`](SagaThen::then_commands)`(commands)`.
//! - [`spec`]`(decider).`[`on`](DeciderSpec::on)`(store)` or [`handler_spec`]`(handler)`: the same
//!   sentences, `async`, through a [`CommandHandler`] on any [`EventStore`]; the events a command
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

use std::any::type_name;
use std::fmt::{self, Debug, Display, Write as _};
use std::panic::Location;
use std::pin::pin;

use futures::TryStreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::clock::{IdGenerator, RandomIds};
use crate::codec::{Codec, JsonCodec};
use crate::decider::{Decider, fold};
use crate::event::{EventData, ExpectedVersion, StreamId};
use crate::handler::{CommandHandler, HandlerError};
use crate::metadata::Metadata;
use crate::saga::Saga;
use crate::store::{Direction, EventStore, StreamFrom};
use crate::view::{View, fold_view};

// ---------------------------------------------------------------------------------------------
// Deciders

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

    /// Runs the specification through a [`CommandHandler`] with the default [`JsonCodec`] on
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

// ---------------------------------------------------------------------------------------------
// Views

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

// ---------------------------------------------------------------------------------------------
// Sagas

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

// ---------------------------------------------------------------------------------------------
// Command handlers

/// Starts a specification of `handler` (with its codec, retry policy and id generator) on its
/// store. For the default handler, [`spec`]`(decider).`[`on`](DeciderSpec::on)`(store)` is shorter.
///
/// Unless [`in_stream`](HandlerSpec::in_stream) names one, the specification runs on a fresh
/// stream `spec-<uuid>`, so that specifications can share a store.
///
/// ```
/// use decider_core::{CommandHandler, Decider, JsonCodec, RetryPolicy};
/// use decider_core::testing::handler_spec;
/// use decider_store_memory::MemoryStore;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum Event { Added(u64) }
/// struct Counter;
/// impl Decider for Counter {
///     type Command = u64;
///     type Event = Event;
///     type State = u64;
///     type Error = std::convert::Infallible;
///     fn initial_state(&self) -> u64 { 0 }
///     fn decide(&self, n: &u64, _: &u64) -> Result<Vec<Event>, Self::Error> {
///         Ok(if *n == 0 { vec![] } else { vec![Event::Added(*n)] })
///     }
///     fn evolve(&self, total: u64, Event::Added(n): &Event) -> u64 { total + n }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let handler = CommandHandler::new(Counter, MemoryStore::new())
///     .with_codec(JsonCodec::new())
///     .with_retry_policy(RetryPolicy { max_retries: 0, ..RetryPolicy::default() });
/// handler_spec(handler).given([Event::Added(1)]).when(2).then([Event::Added(2)]).await;
/// # });
/// ```
pub fn handler_spec<D: Decider, S, C>(handler: CommandHandler<D, S, C>) -> HandlerSpec<D, S, C> {
    HandlerSpec {
        handler,
        stream: None,
        given: Vec::new(),
    }
}

/// A command-handler specification before its command: the handler, the stream, and what the
/// stream already holds.
#[must_use = "a spec checks nothing until `when(..)` and one of the `then` methods"]
pub struct HandlerSpec<D: Decider, S, C = JsonCodec<<D as Decider>::Event>> {
    handler: CommandHandler<D, S, C>,
    stream: Option<StreamId>,
    given: Vec<Given<D::Event>>,
}

/// What a handler specification writes to its stream before the command.
enum Given<E> {
    /// A domain event, encoded with the handler's codec.
    Event(E),
    /// An event exactly as stored (an old schema version, an odd payload).
    Recorded(EventData),
}

impl<D: Decider, S, C> HandlerSpec<D, S, C> {
    /// Runs the specification on `stream` instead of a fresh `spec-<uuid>` stream. Events the
    /// stream already holds count as given.
    pub fn in_stream(mut self, stream: StreamId) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Adds events the stream holds before the command, appended through the handler's codec
    /// (in order; may be called again).
    pub fn given(mut self, events: impl IntoIterator<Item = D::Event>) -> Self {
        self.given.extend(events.into_iter().map(Given::Event));
        self
    }

    /// Adds events appended exactly as they are, bypassing the codec: to check that old payloads
    /// are still understood (upcasters), or what the handler does with an undecodable event.
    pub fn given_recorded(mut self, events: impl IntoIterator<Item = EventData>) -> Self {
        self.given.extend(events.into_iter().map(Given::Recorded));
        self
    }

    /// The command under test, with empty metadata.
    #[track_caller]
    pub fn when(self, command: D::Command) -> HandlerThen<D, S, C> {
        self.when_with(command, Metadata::default())
    }

    /// The command under test, with `metadata` (idempotency key, correlation id, headers).
    #[track_caller]
    pub fn when_with(self, command: D::Command, metadata: Metadata) -> HandlerThen<D, S, C> {
        HandlerThen {
            spec: self,
            command,
            metadata,
            location: Location::caller(),
        }
    }
}

impl<D: Decider, S, C> fmt::Debug for HandlerSpec<D, S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerSpec")
            .field("handler", &self.handler)
            .field("stream", &self.stream)
            .field("given", &self.given.len())
            .finish()
    }
}

/// A command-handler specification with its command, waiting for the expected outcome. Its
/// `then` methods are `async`: await them.
#[must_use = "a spec checks nothing until one of its `then` methods runs and is awaited"]
pub struct HandlerThen<D: Decider, S, C = JsonCodec<<D as Decider>::Event>> {
    spec: HandlerSpec<D, S, C>,
    command: D::Command,
    metadata: Metadata,
    /// Where `when` was called: panics in `async` code cannot point at their caller.
    location: &'static Location<'static>,
}

/// What a handled command did, as the specification saw it.
struct Handled<D: Decider> {
    stream: StreamId,
    given: Vec<Given<D::Event>>,
    metadata: Metadata,
    location: &'static Location<'static>,
    /// What the command appended, or why it failed.
    result: Result<Appended<D::Event>, HandlerError<D::Error>>,
}

/// What an accepted command appended.
struct Appended<E> {
    /// Read back from the store and decoded.
    events: Vec<E>,
    /// Whether the handler answered from an earlier command's idempotency key.
    replayed: bool,
}

impl<D, S, C> HandlerThen<D, S, C>
where
    D: Decider,
    S: EventStore,
    C: Codec<D::Event>,
{
    /// Expects the command to append exactly `expected`, in order, as read back from the store
    /// and decoded. A command answered from its idempotency key appends nothing: expect that with
    /// [`then_nothing`](Self::then_nothing).
    ///
    /// # Panics
    /// If it appended other events, or failed.
    pub async fn then(self, expected: impl IntoIterator<Item = D::Event>)
    where
        D::Event: PartialEq + Debug,
        D::Error: Debug,
    {
        let expected: Vec<_> = expected.into_iter().collect();
        let handled = self.run().await;
        match &handled.result {
            Ok(Appended { events: actual, .. }) => {
                if let Some(index) = first_difference(&expected, actual) {
                    fail(
                        handled
                            .report(format!(
                                "the command appended other events than expected \
                                 (first difference at index {index})"
                            ))
                            .events("expected events", &expected, Some(index))
                            .events("actual events", actual, Some(index)),
                    );
                }
            }
            Err(error) => fail(
                handled
                    .report("expected events, but the command failed")
                    .events("expected events", &expected, None)
                    .debug("actual error", error),
            ),
        }
    }

    /// Expects the decider to refuse the command with `expected`
    /// ([`HandlerError::Rejected`]). For other failures (a terminal stream, a conflict, a codec
    /// error) use [`then_error_matches`](Self::then_error_matches).
    ///
    /// # Panics
    /// If the command was accepted or failed otherwise.
    pub async fn then_error(self, expected: D::Error)
    where
        D::Event: Debug,
        D::Error: PartialEq + Debug,
    {
        let handled = self.run().await;
        match &handled.result {
            Ok(Appended { events, .. }) => fail(
                handled
                    .report("expected the command to be rejected, but it was accepted")
                    .debug(
                        "expected error",
                        &HandlerError::<&D::Error>::Rejected(&expected),
                    )
                    .events("actual events", events, None),
            ),
            Err(HandlerError::Rejected(error)) if *error == expected => {}
            Err(error) => fail(
                handled
                    .report("the command failed with another error")
                    .debug(
                        "expected error",
                        &HandlerError::<&D::Error>::Rejected(&expected),
                    )
                    .debug("actual error", error),
            ),
        }
    }

    /// Expects the command to fail with an error `predicate` accepts, e.g.
    /// `|e| matches!(e, HandlerError::Terminal { .. })`.
    ///
    /// # Panics
    /// If the command was accepted or `predicate` returned `false`.
    pub async fn then_error_matches(self, predicate: impl FnOnce(&HandlerError<D::Error>) -> bool)
    where
        D::Event: Debug,
        D::Error: Debug,
    {
        let handled = self.run().await;
        match &handled.result {
            Ok(Appended { events, .. }) => fail(
                handled
                    .report("expected the command to fail, but it was accepted")
                    .line("expected error", "one the predicate accepts")
                    .events("actual events", events, None),
            ),
            Err(error) if !predicate(error) => fail(
                handled
                    .report("the error does not match the predicate")
                    .debug("actual error", error),
            ),
            Err(_) => {}
        }
    }

    /// Expects the command to be accepted and to append nothing.
    ///
    /// # Panics
    /// If it appended events, or failed.
    pub async fn then_nothing(self)
    where
        D::Event: Debug,
        D::Error: Debug,
    {
        let handled = self.run().await;
        match &handled.result {
            Ok(Appended { events, .. }) if !events.is_empty() => fail(
                handled
                    .report(format!(
                        "expected no events, but the command appended {}",
                        events.len()
                    ))
                    .events::<D::Event>("expected events", &[], None)
                    .events("actual events", events, Some(0)),
            ),
            Ok(_) => {}
            Err(error) => fail(
                handled
                    .report("expected the command to be accepted with no events, but it failed")
                    .debug("actual error", error),
            ),
        }
    }

    /// Writes the given events, handles the command, and reads back what it appended. Failures
    /// of the specification's own set-up (the store, the codec) panic here.
    async fn run(self) -> Handled<D> {
        let HandlerThen {
            spec,
            command,
            metadata,
            location,
        } = self;
        let HandlerSpec {
            handler,
            stream,
            given,
        } = spec;
        let stream = stream.unwrap_or_else(fresh_stream);
        let setup_failed = |error: String| -> ! {
            panic!("handler spec failed at {location}, on stream {stream}: {error}")
        };

        if let Err(error) = append_given(&handler, &stream, &given).await {
            setup_failed(error);
        }
        let last_before = match last_revision(handler.store(), &stream).await {
            Ok(last) => last,
            Err(error) => setup_failed(error),
        };
        let result = match handler
            .handle_with(&stream, command, metadata.clone())
            .await
        {
            Ok(outcome) => {
                let first_new = last_before.map_or(0, |revision| revision + 1);
                match read_decoded(&handler, &stream, first_new).await {
                    Ok(events) => Ok(Appended {
                        events,
                        replayed: outcome.replayed,
                    }),
                    Err(error) => setup_failed(error),
                }
            }
            Err(error) => Err(error),
        };
        Handled {
            stream,
            given,
            metadata,
            location,
            result,
        }
    }
}

/// Appends the given events to `stream` in one write, domain events through the handler's codec.
async fn append_given<D: Decider, S: EventStore, C: Codec<D::Event>>(
    handler: &CommandHandler<D, S, C>,
    stream: &StreamId,
    given: &[Given<D::Event>],
) -> Result<(), String> {
    let data = given
        .iter()
        .enumerate()
        .map(|(index, given)| match given {
            Given::Event(event) => handler
                .codec()
                .encode(event)
                .map(|encoded| encoded.into_event_data(RandomIds.new_id(), Metadata::default()))
                .map_err(|error| format!("cannot encode given event {index}: {error}")),
            Given::Recorded(recorded) => Ok(recorded.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if data.is_empty() {
        return Ok(());
    }
    match handler
        .store()
        .append(stream, ExpectedVersion::Any, data)
        .await
    {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("cannot append the given events: {error}")),
    }
}

/// The revision of the newest event of `stream`; `None` when it has none.
async fn last_revision(store: &impl EventStore, stream: &StreamId) -> Result<Option<u64>, String> {
    let mut newest = pin!(store.read_stream(stream, StreamFrom::End, Direction::Backward, Some(1)));
    match newest.try_next().await {
        Ok(newest) => Ok(newest.map(|event| event.revision)),
        Err(error) => Err(format!("cannot read the stream: {error}")),
    }
}

/// The events of `stream` from revision `from` on, decoded with the handler's codec.
async fn read_decoded<D: Decider, S: EventStore, C: Codec<D::Event>>(
    handler: &CommandHandler<D, S, C>,
    stream: &StreamId,
    from: u64,
) -> Result<Vec<D::Event>, String> {
    let mut recorded = pin!(handler.store().read_stream(
        stream,
        StreamFrom::Revision(from),
        Direction::Forward,
        None,
    ));
    let mut events = Vec::new();
    loop {
        match recorded.try_next().await {
            Ok(Some(event)) => match handler.codec().decode(&event) {
                Ok(event) => events.push(event),
                Err(error) => return Err(format!("cannot decode an appended event: {error}")),
            },
            Ok(None) => return Ok(events),
            Err(error) => return Err(format!("cannot read back the appended events: {error}")),
        }
    }
}

impl<D: Decider, S, C> fmt::Debug for HandlerThen<D, S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerThen")
            .field("spec", &self.spec)
            .field("command", &type_name::<D::Command>())
            .field("metadata", &self.metadata)
            .field("location", &self.location)
            .finish()
    }
}

impl<D: Decider> Handled<D> {
    fn report(&self, headline: impl Display) -> Report
    where
        D::Event: Debug,
    {
        let given: Vec<_> = self
            .given
            .iter()
            .map(|given| match given {
                Given::Event(event) => format!("{event:?}"),
                Given::Recorded(data) => format!(
                    "recorded {:?} {}",
                    data.event_type,
                    String::from_utf8_lossy(&data.payload)
                ),
            })
            .collect();
        let mut report = Report::new("handler", headline)
            .line("spec at", self.location)
            .line("stream", &self.stream)
            .lines("given", &given, None)
            .line("when", command_name::<D::Command>());
        if !self.metadata.is_empty() {
            report = report.debug("with metadata", &self.metadata);
        }
        if let Ok(Appended { replayed: true, .. }) = self.result {
            report = report.line(
                "replayed",
                "the handler answered from the idempotency key and appended nothing",
            );
        }
        report
    }
}

/// A stream no other specification uses.
fn fresh_stream() -> StreamId {
    match StreamId::new(format!("spec-{}", Uuid::new_v4())) {
        Ok(stream) => stream,
        Err(error) => panic!("a uuid makes a valid stream id: {error}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Failure messages

/// The first index at which `expected` and `actual` differ, counting a missing item as a
/// difference.
fn first_difference<T: PartialEq>(expected: &[T], actual: &[T]) -> Option<usize> {
    let common = expected.len().min(actual.len());
    (0..common)
        .find(|&index| expected[index] != actual[index])
        .or((expected.len() != actual.len()).then_some(common))
}

fn command_name<C>() -> String {
    format!("a {}", type_name::<C>())
}

/// The message of a failed specification, built section by section.
struct Report(String);

impl Report {
    fn new(kind: &str, headline: impl Display) -> Self {
        Self(format!("{kind} spec failed: {headline}\n"))
    }

    /// `label: value`.
    fn line(mut self, label: &str, value: impl Display) -> Self {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "{label}: {value}");
        self
    }

    /// `label: {value:?}`.
    fn debug(self, label: &str, value: &impl Debug) -> Self {
        self.line(label, format_args!("{value:?}"))
    }

    /// One item per line with its index; see [`Report::lines`].
    fn events<T: Debug>(self, label: &str, items: &[T], mark: Option<usize>) -> Self {
        let items: Vec<_> = items.iter().map(|item| format!("{item:?}")).collect();
        self.lines(label, &items, mark)
    }

    /// One item per line with its index, the item at `mark` flagged with `>`; a mark past the
    /// end shows where an item is missing.
    fn lines(mut self, label: &str, items: &[String], mark: Option<usize>) -> Self {
        if items.is_empty() {
            return self.line(label, "(none)");
        }
        let _ = writeln!(self.0, "{label}:");
        for (index, item) in items.iter().enumerate() {
            let flag = if mark == Some(index) { '>' } else { ' ' };
            let _ = writeln!(self.0, "  {flag} [{index}] {item}");
        }
        if let Some(missing) = mark.filter(|&mark| mark >= items.len()) {
            let _ = writeln!(self.0, "  > [{missing}] (missing)");
        }
        self
    }

    /// A multi-line text, indented, the line at `mark` flagged with `>`.
    fn text(mut self, label: &str, text: &str, mark: Option<usize>) -> Self {
        let _ = writeln!(self.0, "{label}:");
        let mut count = 0;
        for (index, line) in text.lines().enumerate() {
            let flag = if mark == Some(index) { '>' } else { ' ' };
            let _ = writeln!(self.0, "  {flag} {line}");
            count = index + 1;
        }
        if mark.is_some_and(|mark| mark >= count) {
            let _ = writeln!(self.0, "  > (missing)");
        }
        self
    }
}

/// Panics with the report, at the caller's location.
#[track_caller]
fn fail(report: Report) -> ! {
    panic!("{}", report.0.trim_end())
}
