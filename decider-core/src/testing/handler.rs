//! Specifications of a command handler on a store: the decider's sentences, `async`, with the
//! codec round trip and the store's answers in the check.

use std::any::type_name;
use std::fmt::{self, Debug, Display};
use std::panic::Location;
use std::pin::pin;

use futures::TryStreamExt;
use uuid::Uuid;

use super::report::{Report, command_name, fail, first_difference};
use crate::{
    Codec, CommandError, CommandHandler, Decider, Direction, EventData, EventStore,
    ExpectedVersion, IdGenerator, JsonCodec, Metadata, RandomIds, StreamFrom, StreamId,
};

/// Starts a specification of `handler` (with its codec, retry policy and id generator) on its
/// store. For the default handler, [`spec`](super::spec)`(decider).`[`on`](super::DeciderSpec::on)`(store)` is shorter.
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
#[allow(
    clippy::large_enum_variant,
    reason = "a specification's few given events; their size does not matter"
)]
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
    result: Result<Appended<D::Event>, CommandError<D::Error>>,
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
    /// ([`CommandError::Rejected`]). For other failures (a terminal stream, a conflict, a codec
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
                        &CommandError::<&D::Error>::Rejected(&expected),
                    )
                    .events("actual events", events, None),
            ),
            Err(CommandError::Rejected(error)) if *error == expected => {}
            Err(error) => fail(
                handled
                    .report("the command failed with another error")
                    .debug(
                        "expected error",
                        &CommandError::<&D::Error>::Rejected(&expected),
                    )
                    .debug("actual error", error),
            ),
        }
    }

    /// Expects the command to fail with an error `predicate` accepts, e.g.
    /// `|e| matches!(e, CommandError::Terminal { .. })`.
    ///
    /// # Panics
    /// If the command was accepted or `predicate` returned `false`.
    pub async fn then_error_matches(self, predicate: impl FnOnce(&CommandError<D::Error>) -> bool)
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
    match store.last_event(stream).await {
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
