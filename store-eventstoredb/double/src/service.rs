//! The gRPC services of the double: `Streams.Append`, `Streams.Read` (stream and `$all` reads,
//! forwards and backwards, filtered, and subscriptions) and `ServerFeatures`. Every other method
//! answers `UNIMPLEMENTED`.

// `Status` is what every handler returns; boxing it in the helpers would only be unboxed again.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ::uuid::Uuid;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;
use crate::log::{AppendOutcome, Expected, Log, Proposed, Record};
use crate::proto::event_store::client::server_features::{
    SupportedMethod, SupportedMethods, server_features_server::ServerFeatures,
};
use crate::proto::event_store::client::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    ReadResp, TombstoneReq, TombstoneResp, append_req, append_resp, read_req, read_resp,
    streams_server::Streams,
};
use crate::proto::event_store::client::{Empty, StreamIdentifier, Uuid as ProtoUuid, uuid};

/// Records read from the log under one lock, so that a long read never holds it for long.
const CHUNK: usize = 256;

/// Messages a read or subscription may have produced and the client not yet taken: the
/// backpressure of a subscription is this channel, as the server's is its bounded live queue.
const IN_FLIGHT: usize = 64;

/// The version the double reports: the protocol it follows (with `CaughtUp`, since 23.10).
const SERVER_VERSION: &str = "24.10.0";

type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadResp, Status>> + Send>>;

/// The `Streams` service.
#[derive(Debug, Clone)]
pub(crate) struct StreamsService {
    pub(crate) shared: Arc<Shared>,
}

/// The `ServerFeatures` service.
#[derive(Debug, Clone)]
pub(crate) struct FeaturesService;

#[tonic::async_trait]
impl ServerFeatures for FeaturesService {
    async fn get_supported_methods(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        let method = |name: &str| SupportedMethod {
            method_name: name.to_owned(),
            service_name: "event_store.client.streams.streams".to_owned(),
            features: Vec::new(),
        };
        Ok(Response::new(SupportedMethods {
            methods: vec![method("read"), method("append")],
            event_store_server_version: SERVER_VERSION.to_owned(),
        }))
    }
}

#[tonic::async_trait]
impl Streams for StreamsService {
    type ReadStream = ReadStream;
    type BatchAppendStream = Pin<Box<dyn Stream<Item = Result<BatchAppendResp, Status>> + Send>>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<ReadStream>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("ReadReq without options"))?;
        let read = Read::parse(options)?;
        let (sender, receiver) = mpsc::channel(IN_FLIGHT);
        tokio::spawn(read.run(Arc::clone(&self.shared), sender));
        let responses = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|message| (message, receiver))
        });
        Ok(Response::new(responses.boxed()))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        let mut messages = request.into_inner();
        let Some(Ok(AppendReq {
            content: Some(append_req::Content::Options(options)),
        })) = messages.next().await
        else {
            return Err(Status::invalid_argument(
                "an append starts with its options",
            ));
        };
        let stream = stream_name(options.stream_identifier)?;
        let expected = expected(options.expected_stream_revision)?;
        let mut proposed = Vec::new();
        while let Some(message) = messages.next().await {
            match message?.content {
                Some(append_req::Content::ProposedMessage(message)) => {
                    proposed.push(proposed_event(message)?);
                }
                _ => return Err(Status::invalid_argument("options sent twice in an append")),
            }
        }
        self.shared.fault_point(crate::Fault::BeforeCommit).await;
        let outcome = self.shared.commit(&stream, expected, proposed);
        self.shared.fault_point(crate::Fault::AfterCommit).await;
        Ok(Response::new(append_response(outcome, expected)))
    }

    async fn delete(&self, _request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        Err(Status::unimplemented(
            "the protocol double does not delete streams",
        ))
    }

    async fn tombstone(
        &self,
        _request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        Err(Status::unimplemented(
            "the protocol double does not tombstone streams",
        ))
    }

    async fn batch_append(
        &self,
        _request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        Err(Status::unimplemented(
            "the protocol double does not batch-append",
        ))
    }
}

fn stream_name(identifier: Option<StreamIdentifier>) -> Result<Bytes, Status> {
    identifier
        .map(|identifier| identifier.stream_name)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| Status::invalid_argument("no stream name"))
}

/// The expectation as the server reads it: the revision is converted to the server's signed
/// revision unchecked, so values above `i64::MAX` land on its negative constants.
fn expected(
    revision: Option<append_req::options::ExpectedStreamRevision>,
) -> Result<Expected, Status> {
    use append_req::options::ExpectedStreamRevision as Revision;
    Ok(match revision {
        Some(Revision::Any(_)) => Expected::Any,
        Some(Revision::NoStream(_)) => Expected::NoStream,
        Some(Revision::StreamExists(_)) => Expected::StreamExists,
        Some(Revision::Revision(revision)) => match i64::from_ne_bytes(revision.to_ne_bytes()) {
            signed if signed >= 0 => Expected::Revision(revision),
            -1 => Expected::NoStream,
            -2 => Expected::Any,
            -4 => Expected::StreamExists,
            signed => {
                return Err(Status::invalid_argument(format!(
                    "invalid expected version {signed}"
                )));
            }
        },
        None => return Err(Status::invalid_argument("no expected stream revision")),
    })
}

fn proposed_event(message: append_req::ProposedMessage) -> Result<Proposed, Status> {
    let id = message
        .id
        .and_then(|id| from_proto_uuid(&id))
        .ok_or_else(|| Status::invalid_argument("a proposed event without a valid id"))?;
    let event_type = message
        .metadata
        .get("type")
        .cloned()
        .ok_or_else(|| Status::invalid_argument("a proposed event without a type"))?;
    let content_type = message
        .metadata
        .get("content-type")
        .cloned()
        .ok_or_else(|| Status::invalid_argument("a proposed event without a content-type"))?;
    Ok(Proposed {
        id,
        event_type,
        content_type,
        custom_metadata: message.custom_metadata,
        data: message.data,
    })
}

fn from_proto_uuid(id: &ProtoUuid) -> Option<Uuid> {
    match id.value.as_ref()? {
        uuid::Value::Structured(parts) => {
            let high = u64::from_ne_bytes(parts.most_significant_bits.to_ne_bytes());
            let low = u64::from_ne_bytes(parts.least_significant_bits.to_ne_bytes());
            Some(Uuid::from_u64_pair(high, low))
        }
        uuid::Value::String(text) => text.parse().ok(),
    }
}

fn to_proto_uuid(id: Uuid, structured: bool) -> ProtoUuid {
    let value = if structured {
        let (high, low) = id.as_u64_pair();
        uuid::Value::Structured(uuid::Structured {
            most_significant_bits: i64::from_ne_bytes(high.to_ne_bytes()),
            least_significant_bits: i64::from_ne_bytes(low.to_ne_bytes()),
        })
    } else {
        uuid::Value::String(id.to_string())
    };
    ProtoUuid { value: Some(value) }
}

fn append_response(outcome: AppendOutcome, expected: Expected) -> AppendResp {
    use append_resp::{Result as Outcome, Success, WrongExpectedVersion, success};
    let result = match outcome {
        AppendOutcome::Written {
            last_revision,
            position,
        } => Outcome::Success(Success {
            current_revision_option: Some(success::CurrentRevisionOption::CurrentRevision(
                last_revision,
            )),
            position_option: Some(success::PositionOption::Position(append_resp::Position {
                commit_position: position,
                prepare_position: position,
            })),
        }),
        // The server answers an idempotent append with the revision of the events already
        // written and no position.
        AppendOutcome::Idempotent { last_revision } => Outcome::Success(Success {
            current_revision_option: Some(success::CurrentRevisionOption::CurrentRevision(
                last_revision,
            )),
            position_option: Some(success::PositionOption::NoPosition(Empty {})),
        }),
        AppendOutcome::WrongExpectedVersion { current } => {
            use append_resp::wrong_expected_version::{
                CurrentRevisionOption, CurrentRevisionOption2060, ExpectedRevisionOption,
                ExpectedRevisionOption2060,
            };
            let (current_option, current_2060) = match current {
                Some(revision) => (
                    CurrentRevisionOption::CurrentRevision(revision),
                    CurrentRevisionOption2060::CurrentRevision2060(revision),
                ),
                None => (
                    CurrentRevisionOption::CurrentNoStream(Empty {}),
                    CurrentRevisionOption2060::NoStream2060(Empty {}),
                ),
            };
            let (expected_option, expected_2060) = match expected {
                Expected::Any => (
                    ExpectedRevisionOption::ExpectedAny(Empty {}),
                    ExpectedRevisionOption2060::Any2060(Empty {}),
                ),
                Expected::StreamExists => (
                    ExpectedRevisionOption::ExpectedStreamExists(Empty {}),
                    ExpectedRevisionOption2060::StreamExists2060(Empty {}),
                ),
                Expected::NoStream => (
                    ExpectedRevisionOption::ExpectedNoStream(Empty {}),
                    ExpectedRevisionOption2060::Any2060(Empty {}),
                ),
                Expected::Revision(revision) => (
                    ExpectedRevisionOption::ExpectedRevision(revision),
                    ExpectedRevisionOption2060::ExpectedRevision2060(revision),
                ),
            };
            Outcome::WrongExpectedVersion(WrongExpectedVersion {
                current_revision_option_20_6_0: Some(current_2060),
                expected_revision_option_20_6_0: Some(expected_2060),
                current_revision_option: Some(current_option),
                expected_revision_option: Some(expected_option),
            })
        }
    };
    AppendResp {
        result: Some(result),
    }
}

/// A parsed `ReadReq`.
#[derive(Debug)]
struct Read {
    scope: Scope,
    backwards: bool,
    /// `None`: a subscription.
    count: Option<u64>,
    filter: Option<Filter>,
    structured_ids: bool,
}

#[derive(Debug)]
enum Scope {
    Stream { name: Bytes, from: From },
    All { from: From },
}

/// Where a read starts: the start, the end, or a revision (stream) or commit position ($all).
#[derive(Debug, Clone, Copy)]
enum From {
    Start,
    End,
    At(u64),
}

#[derive(Debug)]
struct Filter {
    on_stream: bool,
    prefixes: Vec<String>,
    /// Records scanned between two checkpoints of a filtered subscription.
    checkpoint_interval: usize,
}

impl Filter {
    fn passes(&self, record: &Record) -> bool {
        let text: &[u8] = if self.on_stream {
            &record.stream
        } else {
            record.event_type.as_bytes()
        };
        self.prefixes
            .iter()
            .any(|prefix| text.starts_with(prefix.as_bytes()))
    }
}

impl Read {
    fn parse(options: read_req::Options) -> Result<Self, Status> {
        use read_req::options::{
            CountOption, FilterOption, StreamOption, all_options::AllOption, filter_options,
            stream_options::RevisionOption, uuid_option,
        };
        let scope = match options.stream_option {
            Some(StreamOption::Stream(stream)) => Scope::Stream {
                name: stream_name(stream.stream_identifier)?,
                from: match stream.revision_option {
                    Some(RevisionOption::Revision(revision)) => From::At(revision),
                    Some(RevisionOption::End(_)) => From::End,
                    Some(RevisionOption::Start(_)) | None => From::Start,
                },
            },
            Some(StreamOption::All(all)) => Scope::All {
                from: match all.all_option {
                    Some(AllOption::Position(position)) => From::At(position.commit_position),
                    Some(AllOption::End(_)) => From::End,
                    Some(AllOption::Start(_)) | None => From::Start,
                },
            },
            None => {
                return Err(Status::invalid_argument(
                    "a read of neither a stream nor $all",
                ));
            }
        };
        let filter = match options.filter_option {
            Some(FilterOption::Filter(filter)) => {
                let (on_stream, expression) = match filter.filter {
                    Some(filter_options::Filter::StreamIdentifier(expression)) => {
                        (true, expression)
                    }
                    Some(filter_options::Filter::EventType(expression)) => (false, expression),
                    None => return Err(Status::invalid_argument("a filter without a criterion")),
                };
                if !expression.regex.is_empty() {
                    return Err(Status::unimplemented(
                        "the protocol double filters by prefixes only, not by regex",
                    ));
                }
                let window = match filter.window {
                    Some(filter_options::Window::Max(max)) => max,
                    _ => 32,
                };
                let multiplier = filter.checkpoint_interval_multiplier.max(1);
                Some(Filter {
                    on_stream,
                    prefixes: expression.prefix,
                    checkpoint_interval: usize::try_from(u64::from(window) * u64::from(multiplier))
                        .unwrap_or(usize::MAX)
                        .max(1),
                })
            }
            Some(FilterOption::NoFilter(_)) | None => None,
        };
        if filter.is_some() && matches!(scope, Scope::Stream { .. }) {
            return Err(Status::invalid_argument("filters apply to $all only"));
        }
        let count = match options.count_option {
            Some(CountOption::Count(count)) => Some(count),
            Some(CountOption::Subscription(_)) => None,
            None => {
                return Err(Status::invalid_argument(
                    "neither a count nor a subscription",
                ));
            }
        };
        let structured_ids = matches!(
            options.uuid_option.and_then(|option| option.content),
            Some(uuid_option::Content::Structured(_))
        );
        Ok(Self {
            scope,
            backwards: options.read_direction == read_req::options::ReadDirection::Backwards as i32,
            count,
            filter,
            structured_ids,
        })
    }

    /// Produces the responses into `sender` until done or the client goes away.
    async fn run(self, shared: Arc<Shared>, sender: mpsc::Sender<Result<ReadResp, Status>>) {
        let outcome = match self.count {
            Some(count) => self.read(&shared, &sender, count).await,
            None => self.subscribe(&shared, &sender).await,
        };
        // `Err` only means the client went away: nothing more to do.
        let _ = outcome;
    }

    fn event(&self, record: &Record) -> ReadResp {
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("type".to_owned(), record.event_type.clone());
        metadata.insert("content-type".to_owned(), record.content_type.clone());
        metadata.insert("created".to_owned(), record.created_ticks.to_string());
        let event = read_resp::read_event::RecordedEvent {
            id: Some(to_proto_uuid(record.id, self.structured_ids)),
            stream_identifier: Some(StreamIdentifier {
                stream_name: record.stream.clone(),
            }),
            stream_revision: record.revision,
            prepare_position: record.position,
            commit_position: record.position,
            metadata,
            custom_metadata: record.custom_metadata.clone(),
            data: record.data.clone(),
        };
        ReadResp {
            content: Some(read_resp::Content::Event(read_resp::ReadEvent {
                event: Some(event),
                link: None,
                position: Some(read_resp::read_event::Position::CommitPosition(
                    record.position,
                )),
            })),
        }
    }

    /// A read of at most `count` events; a stream that does not exist answers `StreamNotFound`.
    async fn read(
        &self,
        shared: &Shared,
        sender: &mpsc::Sender<Result<ReadResp, Status>>,
        count: u64,
    ) -> Result<(), Closed> {
        let mut remaining = count;
        let start = self.start(&shared.log());
        let mut cursor = match start {
            Start::NotFound(name) => {
                let not_found = read_resp::Content::StreamNotFound(read_resp::StreamNotFound {
                    stream_identifier: Some(StreamIdentifier { stream_name: name }),
                });
                return send(sender, not_found).await;
            }
            Start::At(cursor) => cursor,
        };
        while remaining > 0 {
            let (records, next) = self.chunk(&shared.log(), cursor);
            if records.is_empty() {
                break;
            }
            cursor = next;
            for record in records {
                if remaining == 0 {
                    break;
                }
                if self
                    .filter
                    .as_ref()
                    .is_none_or(|filter| filter.passes(&record))
                {
                    sender
                        .send(Ok(self.event(&record)))
                        .await
                        .map_err(|_| Closed)?;
                    remaining -= 1;
                }
            }
        }
        Ok(())
    }

    /// Catch-up from the start point, `CaughtUp`, then live, until the client goes away.
    async fn subscribe(
        &self,
        shared: &Shared,
        sender: &mpsc::Sender<Result<ReadResp, Status>>,
    ) -> Result<(), Closed> {
        let confirmation = read_resp::Content::Confirmation(read_resp::SubscriptionConfirmation {
            subscription_id: Uuid::new_v4().to_string(),
        });
        send(sender, confirmation).await?;
        let mut head = shared.head_receiver();
        let start = self.start(&shared.log());
        let mut cursor = match start {
            // A subscription to a missing stream waits for its first event.
            Start::NotFound(_) => Cursor::Stream(0),
            Start::At(cursor) => cursor,
        };
        let mut caught_up = false;
        let mut scanned = 0_usize;
        loop {
            let (records, next) = self.chunk(&shared.log(), cursor);
            if records.is_empty() {
                if !caught_up {
                    caught_up = true;
                    let caught_up_message = self.caught_up(&shared.log());
                    send(sender, caught_up_message).await?;
                }
                // Wait for the next append; a stopped double closes the connection instead.
                head.changed().await.map_err(|_| Closed)?;
                continue;
            }
            cursor = next;
            for record in records {
                if self
                    .filter
                    .as_ref()
                    .is_none_or(|filter| filter.passes(&record))
                {
                    sender
                        .send(Ok(self.event(&record)))
                        .await
                        .map_err(|_| Closed)?;
                }
                if let Some(filter) = &self.filter {
                    scanned += 1;
                    if scanned.is_multiple_of(filter.checkpoint_interval) {
                        let checkpoint = read_resp::Content::Checkpoint(read_resp::Checkpoint {
                            commit_position: record.position,
                            prepare_position: record.position,
                            timestamp: Some(now()),
                        });
                        send(sender, checkpoint).await?;
                    }
                }
            }
        }
    }

    fn caught_up(&self, log: &Log) -> read_resp::Content {
        let (stream_revision, position) = match &self.scope {
            Scope::Stream { name, .. } => (
                log.last_revision(name)
                    .map(|revision| i64::try_from(revision).unwrap_or(i64::MAX)),
                None,
            ),
            Scope::All { .. } => (
                None,
                log.head().map(|position| read_resp::Position {
                    commit_position: position,
                    prepare_position: position,
                }),
            ),
        };
        read_resp::Content::CaughtUp(read_resp::CaughtUp {
            timestamp: Some(now()),
            stream_revision,
            position,
        })
    }

    /// Where the read begins. Reads include their start point; subscriptions begin after it.
    fn start(&self, log: &Log) -> Start {
        let subscription = self.count.is_none();
        match &self.scope {
            Scope::Stream { name, from } => {
                let length = log.stream(name).len() as u64;
                if length == 0 && !subscription {
                    return Start::NotFound(name.clone());
                }
                let revision = match (from, self.backwards) {
                    (From::Start, false) => 0,
                    (From::Start, true) => 0,
                    (From::End, false) => length,
                    (From::End, true) => length.saturating_sub(1),
                    (From::At(revision), _) if subscription => revision.saturating_add(1),
                    (From::At(revision), _) => *revision,
                };
                if self.backwards && revision >= length {
                    // Backwards from past the end: from the last event.
                    return Start::At(Cursor::StreamBackwards(length));
                }
                if self.backwards {
                    Start::At(Cursor::StreamBackwards(revision + 1))
                } else {
                    Start::At(Cursor::Stream(revision))
                }
            }
            Scope::All { from } => Start::At(match (from, self.backwards) {
                (From::Start, false) => Cursor::All(0),
                (From::Start, true) => Cursor::AllBackwards(0),
                (From::End, false) => Cursor::All(log.len()),
                (From::End, true) => Cursor::AllBackwards(log.len()),
                (From::At(position), false) if subscription => {
                    Cursor::All(log.index_after(*position))
                }
                (From::At(position), false) => Cursor::All(log.index_at_or_after(*position)),
                // Backwards from a position: the records before it.
                (From::At(position), true) => {
                    Cursor::AllBackwards(log.index_at_or_after(*position))
                }
            }),
        }
    }

    /// The next records from `cursor`, and the cursor after them.
    fn chunk(&self, log: &Log, cursor: Cursor) -> (Vec<Arc<Record>>, Cursor) {
        let mut records = Vec::new();
        match (cursor, &self.scope) {
            (Cursor::All(mut index), _) => {
                while records.len() < CHUNK
                    && let Some(record) = log.get(index)
                {
                    records.push(Arc::clone(record));
                    index += 1;
                }
                (records, Cursor::All(index))
            }
            (Cursor::AllBackwards(mut end), _) => {
                while records.len() < CHUNK && end > 0 {
                    end -= 1;
                    if let Some(record) = log.get(end) {
                        records.push(Arc::clone(record));
                    }
                }
                (records, Cursor::AllBackwards(end))
            }
            (Cursor::Stream(mut revision), Scope::Stream { name, .. }) => {
                let indexes = log.stream(name);
                while records.len() < CHUNK
                    && let Some(record) = usize::try_from(revision)
                        .ok()
                        .and_then(|revision| indexes.get(revision))
                        .and_then(|&index| log.get(index))
                {
                    records.push(Arc::clone(record));
                    revision += 1;
                }
                (records, Cursor::Stream(revision))
            }
            (Cursor::StreamBackwards(mut end), Scope::Stream { name, .. }) => {
                let indexes = log.stream(name);
                while records.len() < CHUNK && end > 0 {
                    end -= 1;
                    if let Some(record) = usize::try_from(end)
                        .ok()
                        .and_then(|revision| indexes.get(revision))
                        .and_then(|&index| log.get(index))
                    {
                        records.push(Arc::clone(record));
                    }
                }
                (records, Cursor::StreamBackwards(end))
            }
            (cursor, Scope::All { .. }) => (records, cursor),
        }
    }
}

enum Start {
    NotFound(Bytes),
    At(Cursor),
}

/// The next record to read: a global index or a revision, forwards; one past it, backwards.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    All(usize),
    AllBackwards(usize),
    Stream(u64),
    StreamBackwards(u64),
}

/// The client went away.
struct Closed;

async fn send(
    sender: &mpsc::Sender<Result<ReadResp, Status>>,
    content: read_resp::Content,
) -> Result<(), Closed> {
    sender
        .send(Ok(ReadResp {
            content: Some(content),
        }))
        .await
        .map_err(|_| Closed)
}

fn now() -> prost_types::Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}
