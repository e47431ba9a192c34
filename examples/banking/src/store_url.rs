//! Which store the bank runs on, from the `--store` URL.

use std::fmt;
use std::str::FromStr;

/// Where the events live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// In process memory: nothing to set up, nothing kept.
    Memory,
    /// An SQLite file, at a `sqlite://PATH` URL: nothing to set up, everything kept.
    Sqlite(String),
    /// PostgreSQL, at a `postgres://` or `postgresql://` URL.
    Postgres(String),
    /// EventStoreDB / KurrentDB, at a connection string of the `kurrentdb` client
    /// (`esdb://`, `kurrentdb://`, `kurrent://`, `kdb://`, each also `+discover`).
    EventStoreDb(String),
}

/// The URL schemes of the `kurrentdb` client.
const EVENTSTOREDB_SCHEMES: [&str; 8] = [
    "esdb",
    "esdb+discover",
    "kurrentdb",
    "kurrentdb+discover",
    "kurrent",
    "kurrent+discover",
    "kdb",
    "kdb+discover",
];

/// A `--store` value that names no store this build knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown store {0:?}: use a sqlite://PATH URL, a postgres:// URL, an EventStoreDB / \
     KurrentDB connection string (esdb://, kurrentdb://), or \"memory\" (nothing is kept)"
)]
pub struct UnknownStore(pub String);

impl FromStr for StoreUrl {
    type Err = UnknownStore;

    fn from_str(url: &str) -> Result<Self, UnknownStore> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        match (url, scheme) {
            ("" | "memory", _) => Ok(Self::Memory),
            (_, Some("sqlite")) => Ok(Self::Sqlite(url.to_owned())),
            (_, Some("postgres" | "postgresql")) => Ok(Self::Postgres(url.to_owned())),
            (_, Some(scheme)) if EVENTSTOREDB_SCHEMES.contains(&scheme) => {
                Ok(Self::EventStoreDb(url.to_owned()))
            }
            _ => Err(UnknownStore(url.to_owned())),
        }
    }
}

impl fmt::Debug for StoreUrl {
    /// Without the password a URL may carry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Sqlite(url) => f.write_str(url),
            Self::Postgres(url) | Self::EventStoreDb(url) => write!(f, "{}", redacted(url)),
        }
    }
}

/// `url` with any password replaced by `***`.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_of_store() {
        assert_eq!("".parse(), Ok(StoreUrl::Memory));
        assert_eq!("memory".parse(), Ok(StoreUrl::Memory));
        assert_eq!(
            "sqlite://banking.db".parse(),
            Ok(StoreUrl::Sqlite("sqlite://banking.db".into()))
        );
        assert_eq!(
            "postgres://postgres@127.0.0.1/test".parse(),
            Ok(StoreUrl::Postgres(
                "postgres://postgres@127.0.0.1/test".into()
            ))
        );
        for url in [
            "esdb://127.0.0.1:2113?tls=false",
            "kurrentdb+discover://db:2113",
        ] {
            assert_eq!(url.parse(), Ok(StoreUrl::EventStoreDb(url.into())));
        }
        assert!("mysql://localhost".parse::<StoreUrl>().is_err());
        assert!("postgres".parse::<StoreUrl>().is_err());
    }

    #[test]
    fn debug_hides_passwords() {
        let url: StoreUrl = "postgres://app:secret@db/bank"
            .parse()
            .unwrap_or(StoreUrl::Memory);
        assert_eq!(format!("{url:?}"), "postgres://app:***@db/bank");
    }
}
