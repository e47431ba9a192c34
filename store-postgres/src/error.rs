//! How PostgreSQL and pool failures become [`StoreError`]s: lost or refused connections are
//! `Unavailable` (retryable), bad data is `InvalidInput`, a missing schema says to migrate, and the
//! rest, a server certificate that TLS refused included, is `Backend`.

use std::error::Error as _;

use deadpool_postgres::PoolError;
use decider_core::StoreError;
use tokio_postgres::error::SqlState;

#[cfg(feature = "tls")]
use crate::tls::CertificateRefused;

/// Maps a driver error, for code that runs its own queries beside the store (read models,
/// say) and wants the store's error classification. The driver's error stays reachable as the
/// result's [`source`](std::error::Error::source).
pub fn from_pg(error: tokio_postgres::Error) -> StoreError {
    match classify(&error) {
        Class::Unavailable(message) => StoreError::unavailable_caused_by(message, error),
        Class::InvalidInput(message) => StoreError::InvalidInput(message),
        Class::Backend(message) => StoreError::backend_caused_by(message, error),
    }
}

/// Whether [`from_pg`] would call `error` retryable, without taking it.
pub(crate) fn is_retryable(error: &tokio_postgres::Error) -> bool {
    matches!(classify(error), Class::Unavailable(_))
}

/// What a driver error is, and the message that says so.
enum Class {
    Unavailable(String),
    InvalidInput(String),
    Backend(String),
}

fn classify(error: &tokio_postgres::Error) -> Class {
    let Some(code) = error.code() else {
        if let Some(refusal) = certificate_refusal(error) {
            return Class::Backend(format!("PostgreSQL connection: {refusal}"));
        }
        // No SQLSTATE: the connection closed or its socket failed, or a value did not convert.
        let io = error
            .source()
            .is_some_and(|source| source.is::<std::io::Error>());
        return if error.is_closed() || io {
            Class::Unavailable(format!("PostgreSQL connection failed or lost: {error}"))
        } else {
            Class::Backend(format!("PostgreSQL client error: {error}"))
        };
    };
    let message = error
        .as_db_error()
        .map_or_else(|| error.to_string(), |db| db.message().to_owned());
    let class = &code.code()[..2];
    if class == "08"
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::QUERY_CANCELED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
        ]
        .contains(code)
    {
        return Class::Unavailable(format!("PostgreSQL: {message} ({})", code.code()));
    }
    if class == "22"
        || *code == SqlState::UNIQUE_VIOLATION
        || *code == SqlState::PROGRAM_LIMIT_EXCEEDED
    {
        return Class::InvalidInput(format!(
            "PostgreSQL refused the data: {message} ({})",
            code.code()
        ));
    }
    if [
        SqlState::INVALID_SCHEMA_NAME,
        SqlState::UNDEFINED_TABLE,
        SqlState::UNDEFINED_FUNCTION,
    ]
    .contains(code)
    {
        return Class::Backend(format!(
            "PostgreSQL: {message} ({}); has `PostgresStore::migrate` run for this schema?",
            code.code()
        ));
    }
    Class::Backend(format!("PostgreSQL: {message} ({})", code.code()))
}

#[cfg(not(feature = "tls"))]
fn certificate_refusal(_error: &tokio_postgres::Error) -> Option<String> {
    None
}

/// Why the TLS handshake refused the server's certificate, if that is what `error` is: the same
/// certificate would be refused on every retry, so the caller must not be told to retry.
#[cfg(feature = "tls")]
fn certificate_refusal(error: &tokio_postgres::Error) -> Option<String> {
    // tokio-rustls reports the rustls error inside an `io::Error`, whose `source` skips it: the
    // chain is searched for the `io::Error` and its payload read with `get_ref`.
    let mut next: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(cause) = next {
        let rustls_error = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(certificate)) = rustls_error {
            if let rustls::CertificateError::Other(rustls::OtherError(other)) = certificate
                && let Some(refused) = other.downcast_ref::<CertificateRefused>()
            {
                return Some(refused.to_string());
            }
            // A connector of the caller's own (a pool given to `with_pool`).
            return Some(format!(
                "the server's TLS certificate is refused: {certificate}"
            ));
        }
        next = cause.source();
    }
    None
}

/// Maps a failure to get a connection from the store's pool ([`PostgresStore::pool`](crate::PostgresStore::pool)).
pub fn from_pool(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => from_pg(error),
        PoolError::Timeout(kind) => StoreError::unavailable(format!(
            "timed out getting a PostgreSQL connection from the pool ({kind:?})"
        )),
        PoolError::Closed => StoreError::unavailable("the connection pool is closed"),
        other => StoreError::backend_caused_by(format!("connection pool: {other}"), other),
    }
}
