//! How `kurrentdb` client errors become [`StoreError`]s: a lost or refused connection, a server
//! error status (the client reports `UNAVAILABLE`, `UNKNOWN`, `INTERNAL` and `DATA_LOSS`, and a
//! connection dropped mid-call, as `ServerError`), a deadline — `Unavailable` (retryable); a
//! request the server refuses as malformed — `InvalidInput`; a deleted stream — `StreamDeleted`;
//! the rest — `Backend`. Wrong expected versions are mapped in `lib.rs`, where the stream and the
//! expectation are known.

use decider_core::{StoreError, StreamId};
use kurrentdb::Error;
use tonic::Code;

/// Maps a client error of an operation on `stream` (`None`: on `$all`).
pub(crate) fn from_client(error: Error, stream: Option<&StreamId>) -> StoreError {
    match error {
        Error::ServerError(message) => StoreError::Unavailable(format!(
            "EventStoreDB server error or lost connection: {message}"
        )),
        Error::ConnectionClosed => {
            StoreError::Unavailable("the EventStoreDB client's connection is closed".to_owned())
        }
        Error::GrpcConnectionError(error) => {
            StoreError::Unavailable(format!("cannot connect to EventStoreDB: {error}"))
        }
        Error::DeadlineExceeded => {
            StoreError::Unavailable("EventStoreDB did not answer before the deadline".to_owned())
        }
        Error::NotLeaderException(leader) => StoreError::Unavailable(format!(
            "the EventStoreDB node is not the leader; the leader is {}:{}",
            leader.host, leader.port
        )),
        Error::ResourceDeleted => match stream {
            Some(stream) => StoreError::StreamDeleted {
                stream: stream.clone(),
            },
            None => StoreError::Backend("EventStoreDB: a stream was deleted".to_owned()),
        },
        Error::AccessDenied => StoreError::Backend(
            "EventStoreDB denied access: check the credentials in the connection string".to_owned(),
        ),
        Error::Grpc { code, message } => match code {
            Code::InvalidArgument | Code::OutOfRange => {
                StoreError::InvalidInput(format!("EventStoreDB refused the request: {message}"))
            }
            Code::Unavailable
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::DeadlineExceeded => {
                StoreError::Unavailable(format!("EventStoreDB: {message} ({code:?})"))
            }
            _ => StoreError::Backend(format!("EventStoreDB: {message} ({code:?})")),
        },
        other => StoreError::Backend(format!("EventStoreDB client: {other}")),
    }
}

/// Whether the client's connection task has ended, so the client must be built anew before the
/// next call can reach the server (the `kurrentdb` client gives up for good when its first
/// connection attempt fails).
pub(crate) fn needs_new_client(error: &Error) -> bool {
    matches!(
        error,
        Error::ConnectionClosed | Error::GrpcConnectionError(_)
    )
}
