//! Fixtures and assertions the checks share: unique names, events, reads with a time limit, the
//! comparisons of what was appended with what was recorded, and a subscription follower.

use std::future::Future;
use std::time::{Duration, SystemTime};

use decider_core::{
    AppendResult, ContentType, Direction, EventData, EventFilter, EventStore, ExpectedVersion,
    Position, RecordedEvent, StoreError, StreamFrom, StreamId, Subscription, SubscriptionMessage,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How long a check waits for one store operation or one subscription message before it decides
/// the store hangs. Generous: a loaded database is slow, a broken store never answers.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// How long a subscription must stay silent for a check to conclude it has nothing more to send.
pub(crate) const QUIET: Duration = Duration::from_millis(250);

/// A category no other check or test uses. It holds no `-`, so it is a whole category.
pub(crate) fn unique_category() -> String {
    format!("c{}", Uuid::new_v4().simple())
}

/// A fresh stream in `category`.
pub(crate) fn stream_in(category: &str) -> StreamId {
    stream_id(format!("{category}-{}", Uuid::new_v4().simple()))
}

/// A fresh stream in a fresh category.
pub(crate) fn new_stream() -> StreamId {
    stream_in(&unique_category())
}

/// `id` as a stream id; the kit only builds valid ones.
pub(crate) fn stream_id(id: impl AsRef<str>) -> StreamId {
    let id = id.as_ref();
    StreamId::new(id).unwrap_or_else(|error| panic!("the kit built an invalid stream id: {error}"))
}

/// An event type no other check or test uses, starting with `name`.
pub(crate) fn unique_event_type(name: &str) -> String {
    format!("{name}{}", Uuid::new_v4().simple())
}

/// A small JSON event of `event_type` whose payload records `n`, with a fresh id.
pub(crate) fn event(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, format!(r#"{{"n":{n}}}"#))
}

/// `count` small JSON events of type `Happened`.
pub(crate) fn events(count: u64) -> Vec<EventData> {
    (0..count).map(|n| event("Happened", n)).collect()
}

/// The ids of events on their way in.
pub(crate) fn ids(events: &[EventData]) -> Vec<Uuid> {
    events.iter().map(|event| event.id).collect()
}

/// The ids of recorded events.
pub(crate) fn recorded_ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|event| event.id).collect()
}

/// The revisions of recorded events.
pub(crate) fn revisions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|event| event.revision).collect()
}

/// A filter passing the events of these categories.
pub(crate) fn categories<const N: usize>(categories: [&str; N]) -> EventFilter {
    EventFilter::all().with_categories(categories)
}

/// Awaits `future`, failing the check if it takes longer than [`PATIENCE`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}: the store hangs"),
    }
}

/// Waits for a spawned task of a check, failing the check with the task's own panic.
pub(crate) async fn join<T>(task: JoinHandle<T>) -> T {
    match task.await {
        Ok(output) => output,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("a task of the check was cancelled: {error}"),
    }
}

/// Appends and returns the store's answer, failing the check if the store hangs.
pub(crate) async fn try_append<S: EventStore>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[EventData],
) -> Result<AppendResult, StoreError> {
    within(
        &format!("append to {stream} expecting {expected}"),
        store.append(stream, expected, events.to_vec()),
    )
    .await
}

/// Appends and expects the store to accept.
pub(crate) async fn append<S: EventStore>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[EventData],
) -> AppendResult {
    try_append(store, stream, expected, events)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "append of {} event(s) to {stream} expecting {expected} was refused: {error}",
                events.len()
            )
        })
}

/// Reads a stream to its end, failing the check on an error or a hang.
pub(crate) async fn read_stream<S: EventStore>(
    store: &S,
    stream: &StreamId,
    from: StreamFrom,
    direction: Direction,
    limit: Option<u64>,
) -> Vec<RecordedEvent> {
    let what = format!("read_stream({stream}, {from:?}, {direction:?}, limit {limit:?})");
    within(
        &what,
        store
            .read_stream(stream, from, direction, limit)
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap_or_else(|error| panic!("{what} failed: {error}"))
}

/// Reads a whole stream, oldest first.
pub(crate) async fn read_forward<S: EventStore>(
    store: &S,
    stream: &StreamId,
) -> Vec<RecordedEvent> {
    read_stream(store, stream, StreamFrom::Start, Direction::Forward, None).await
}

/// Reads the global log, failing the check on an error or a hang.
pub(crate) async fn read_all<S: EventStore>(
    store: &S,
    after: Option<Position>,
    limit: Option<u64>,
    filter: &EventFilter,
) -> Vec<RecordedEvent> {
    let what = format!("read_all(after {after:?}, limit {limit:?}, {filter:?})");
    within(
        &what,
        store.read_all(after, limit, filter).try_collect::<Vec<_>>(),
    )
    .await
    .unwrap_or_else(|error| panic!("{what} failed: {error}"))
}

/// Every event of `category` in the global log.
pub(crate) async fn read_category<S: EventStore>(store: &S, category: &str) -> Vec<RecordedEvent> {
    read_all(store, None, None, &categories([category])).await
}

/// Fails unless `recorded` is `expected` as it was appended: same id, type, content type,
/// metadata and payload, and a plausible recording time.
///
/// JSON payloads are compared as JSON values, because a store may keep them in a normalising
/// form (PostgreSQL `jsonb` reorders keys and drops whitespace); binary payloads byte for byte.
pub(crate) fn assert_recorded_as(recorded: &RecordedEvent, expected: &EventData) {
    let at = format!("{} revision {}", recorded.stream, recorded.revision);
    assert_eq!(recorded.id, expected.id, "{at}: wrong event id");
    assert_eq!(
        recorded.event_type, expected.event_type,
        "{at}: wrong event type"
    );
    assert_eq!(
        recorded.content_type, expected.content_type,
        "{at}: wrong content type"
    );
    assert_eq!(recorded.metadata, expected.metadata, "{at}: wrong metadata");
    let same_payload = match expected.content_type {
        ContentType::Json => {
            match (
                serde_json::from_slice::<serde_json::Value>(&recorded.payload),
                serde_json::from_slice::<serde_json::Value>(&expected.payload),
            ) {
                (Ok(recorded), Ok(expected)) => recorded == expected,
                _ => recorded.payload == expected.payload,
            }
        }
        ContentType::Binary => recorded.payload == expected.payload,
    };
    assert!(
        same_payload,
        "{at}: the payload changed: appended {} bytes starting {:?}, read back {} bytes \
         starting {:?}",
        expected.payload.len(),
        expected.payload.slice(..expected.payload.len().min(80)),
        recorded.payload.len(),
        recorded.payload.slice(..recorded.payload.len().min(80)),
    );
    // Loose on purpose: a database's clock may differ a little from the test machine's.
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    assert!(
        recorded.recorded_at > now - hour && recorded.recorded_at < now + hour,
        "{at}: recorded_at {:?} is not the time the event was recorded",
        recorded.recorded_at
    );
}

/// Fails unless `stream` holds exactly `expected`, at revisions 0, 1, …, with strictly
/// increasing positions.
pub(crate) async fn assert_stream_holds<S: EventStore>(
    store: &S,
    stream: &StreamId,
    expected: &[EventData],
) {
    let recorded = read_forward(store, stream).await;
    assert_eq!(
        recorded_ids(&recorded),
        ids(expected),
        "{stream} does not hold exactly the events appended to it"
    );
    for (revision, (recorded, expected)) in (0_u64..).zip(recorded.iter().zip(expected)) {
        assert_eq!(
            &recorded.stream, stream,
            "an event read from {stream} names another stream"
        );
        assert_eq!(
            recorded.revision, revision,
            "{stream}: revisions are not 0, 1, 2, …"
        );
        assert_recorded_as(recorded, expected);
    }
    assert_positions_increase(&recorded, &format!("read_stream({stream})"));
}

/// Fails unless the positions of `events` strictly increase.
pub(crate) fn assert_positions_increase(events: &[RecordedEvent], what: &str) {
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "{what}: position {} ({} revision {}) is followed by position {} ({} revision {})",
            pair[0].position,
            pair[0].stream,
            pair[0].revision,
            pair[1].position,
            pair[1].stream,
            pair[1].revision
        );
    }
}

/// Fails unless `result` is the conflict of an append to `stream` expecting `expected` when the
/// stream's last revision was `actual`.
pub(crate) fn assert_wrong_expected_version(
    result: Result<AppendResult, StoreError>,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: Option<u64>,
) {
    match result {
        Err(StoreError::WrongExpectedVersion {
            stream: refused,
            expected: refused_expected,
            actual: refused_actual,
        }) => {
            assert_eq!(&refused, stream, "the conflict names the wrong stream");
            assert_eq!(
                refused_expected, expected,
                "the conflict on {stream} reports the wrong expectation"
            );
            assert_eq!(
                refused_actual, actual,
                "the conflict on {stream} expecting {expected} reports the wrong actual last \
                 revision (None: no stream)"
            );
        }
        Err(other) => panic!(
            "append to {stream} expecting {expected} (actual {actual:?}) failed with {other:?} \
             instead of WrongExpectedVersion"
        ),
        Ok(result) => panic!(
            "append to {stream} expecting {expected} was accepted ({result:?}), but the stream's \
             last revision is {actual:?}"
        ),
    }
}

/// Fails unless `result` is [`StoreError::InvalidInput`].
pub(crate) fn assert_invalid_input(result: Result<AppendResult, StoreError>, what: &str) {
    match result {
        Err(StoreError::InvalidInput(_)) => {}
        Err(other) => panic!("{what}: failed with {other:?} instead of InvalidInput"),
        Ok(result) => {
            panic!("{what}: was accepted ({result:?}) instead of refused as InvalidInput")
        }
    }
}

/// A subscription under test: every wait has a time limit, every error fails the check.
pub(crate) struct Follower {
    messages: BoxStream<'static, Result<SubscriptionMessage, StoreError>>,
    name: String,
}

impl Follower {
    /// Follows `subscription`, called `name` in failure messages.
    pub(crate) fn new(subscription: impl Subscription, name: impl Into<String>) -> Self {
        Self {
            messages: subscription.boxed(),
            name: name.into(),
        }
    }

    /// The next message.
    pub(crate) async fn next(&mut self) -> SubscriptionMessage {
        match tokio::time::timeout(PATIENCE, self.messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => panic!("{} failed: {error}", self.name),
            Ok(None) => panic!("{} ended; a subscription follows until dropped", self.name),
            Err(_) => panic!(
                "{} sent nothing for {PATIENCE:?} while an event or CaughtUp was due",
                self.name
            ),
        }
    }

    /// The next message, which must be an event.
    pub(crate) async fn next_event(&mut self) -> RecordedEvent {
        match self.next().await {
            SubscriptionMessage::Event(event) => event,
            SubscriptionMessage::CaughtUp => panic!(
                "{} sent CaughtUp where an event was due (CaughtUp comes once, after the events \
                 that existed when it started)",
                self.name
            ),
        }
    }

    /// The next `count` messages, which must all be events.
    pub(crate) async fn events(&mut self, count: usize) -> Vec<RecordedEvent> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            events.push(self.next_event().await);
        }
        events
    }

    /// The events up to the `CaughtUp` marker, which must come.
    pub(crate) async fn events_until_caught_up(&mut self) -> Vec<RecordedEvent> {
        let mut events = Vec::new();
        loop {
            match self.next().await {
                SubscriptionMessage::Event(event) => events.push(event),
                SubscriptionMessage::CaughtUp => return events,
            }
        }
    }

    /// The next message, which must be `CaughtUp`.
    pub(crate) async fn expect_caught_up(&mut self) {
        match self.next().await {
            SubscriptionMessage::CaughtUp => {}
            SubscriptionMessage::Event(event) => panic!(
                "{} sent {} revision {} where CaughtUp was due",
                self.name, event.stream, event.revision
            ),
        }
    }

    /// The next event that `mine` accepts, skipping others' events (on a shared store); fails on
    /// a second `CaughtUp`.
    pub(crate) async fn next_event_where(
        &mut self,
        mine: impl Fn(&RecordedEvent) -> bool,
    ) -> RecordedEvent {
        loop {
            let event = self.next_event().await;
            if mine(&event) {
                return event;
            }
        }
    }

    /// Fails if a message arrives within [`QUIET`], other than events `others` accepts (events of
    /// other writers on a shared store).
    pub(crate) async fn assert_quiet(&mut self, others: impl Fn(&RecordedEvent) -> bool) {
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Ok(message) = tokio::time::timeout_at(deadline, self.messages.next()).await {
            match message {
                Some(Ok(SubscriptionMessage::Event(event))) if others(&event) => {}
                Some(Ok(SubscriptionMessage::Event(event))) => panic!(
                    "{} sent {} revision {} (id {}), which it had already sent or which does not \
                     exist",
                    self.name, event.stream, event.revision, event.id
                ),
                Some(Ok(SubscriptionMessage::CaughtUp)) => {
                    panic!("{} sent CaughtUp a second time", self.name)
                }
                Some(Err(error)) => panic!("{} failed: {error}", self.name),
                None => panic!("{} ended; a subscription follows until dropped", self.name),
            }
        }
    }
}
