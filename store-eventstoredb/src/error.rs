//! How `kurrentdb` client errors become [`StoreError`]s: a lost or refused connection, a server
//! error status (the client reports `UNAVAILABLE`, `UNKNOWN`, `INTERNAL` and `DATA_LOSS`, and a
//! connection dropped mid-call, as `ServerError`), a deadline — `Unavailable` (retryable); a
//! request the server refuses as malformed — `InvalidInput`; a deleted stream — `StreamDeleted`;
//! the rest — `Backend`. Wrong expected versions are mapped in `lib.rs`, where the stream and the
//! expectation are known.

use decider_core::{StoreError, StreamId};
use kurrentdb::Error;
use tonic::Code;

/// Maps a client error of an operation on `stream` (`None`: on `$all`). The client's error stays
/// reachable as the result's [`source`](std::error::Error::source).
pub(crate) fn from_client(error: Error, stream: Option<&StreamId>) -> StoreError {
    let unavailable = |message: String, error| StoreError::unavailable_caused_by(message, error);
    let backend = |message: String, error| StoreError::backend_caused_by(message, error);
    match &error {
        Error::ServerError(message) => unavailable(
            format!("EventStoreDB server error or lost connection: {message}"),
            error,
        ),
        Error::ConnectionClosed => unavailable(
            "the EventStoreDB client's connection is closed".to_owned(),
            error,
        ),
        Error::GrpcConnectionError(cause) => {
            unavailable(format!("cannot connect to EventStoreDB: {cause}"), error)
        }
        Error::DeadlineExceeded => unavailable(
            "EventStoreDB did not answer before the deadline".to_owned(),
            error,
        ),
        Error::NotLeaderException(leader) => unavailable(
            format!(
                "the EventStoreDB node is not the leader; the leader is {}:{}",
                leader.host, leader.port
            ),
            error,
        ),
        Error::ResourceDeleted => match stream {
            Some(stream) => StoreError::StreamDeleted {
                stream: stream.clone(),
            },
            None => backend("EventStoreDB: a stream was deleted".to_owned(), error),
        },
        Error::AccessDenied => backend(
            "EventStoreDB denied access: check the credentials in the connection string".to_owned(),
            error,
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
                unavailable(format!("EventStoreDB: {message} ({code:?})"), error)
            }
            _ => backend(format!("EventStoreDB: {message} ({code:?})"), error),
        },
        other => backend(format!("EventStoreDB client: {other}"), error),
    }
}

/// What tonic's client puts before the message of a status it made from an HTTP/2 error, as
/// opposed to a status the server sent.
const H2_ERROR: &str = "h2 protocol error";

/// Whether the server refused the request before any of it was processed: an HTTP/2
/// `REFUSED_STREAM` reset (RFC 9113 §8.7: the request was not processed, so any request may be
/// sent again). tonic reports that reset, and no other HTTP/2 error, as `UNAVAILABLE` with its
/// own message; the client turns `UNAVAILABLE` into `ServerError` with the status's text, which
/// is all that is left to recognise it by.
pub(crate) fn refused_before_start(error: &Error) -> bool {
    match error {
        Error::ServerError(status) => {
            status.starts_with(&format!("status: Unavailable, message: \"{H2_ERROR}"))
        }
        _ => false,
    }
}

/// Whether the HTTP/2 stream or connection under a call failed, rather than the server
/// answering it (for instance the connection was closed with `ENHANCE_YOUR_CALM`): the call may
/// or may not have been processed, so only a call that is safe to repeat may be sent again.
pub(crate) fn transport_failed(error: &Error) -> bool {
    match error {
        Error::ServerError(status) => status.contains(&format!("message: \"{H2_ERROR}")),
        Error::Grpc { message, .. } => message.starts_with(H2_ERROR),
        _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    /// The client's error for `status`, as it makes it (`ServerError` carries the status's text).
    fn client_error(status: Status) -> Error {
        match status.code() {
            Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss => {
                Error::ServerError(status.to_string())
            }
            code => Error::Grpc {
                code,
                message: status.message().to_owned(),
            },
        }
    }

    #[test]
    fn only_a_refused_stream_counts_as_refused_before_start() {
        let refused = client_error(Status::unavailable("h2 protocol error: http2 error"));
        let calm_down = client_error(Status::resource_exhausted("h2 protocol error: http2 error"));
        let server_down = client_error(Status::unavailable("Server Is Not Ready"));
        assert!(refused_before_start(&refused));
        assert!(!refused_before_start(&calm_down));
        assert!(!refused_before_start(&server_down));
        assert!(transport_failed(&refused));
        assert!(transport_failed(&calm_down));
        assert!(!transport_failed(&server_down));
    }
}
