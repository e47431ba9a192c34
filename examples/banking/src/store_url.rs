//! Which store the bank runs on, from the `--store` URL.
//!
//! Every kind of store parses, whether or not this build can open it: a store sits behind a
//! cargo feature (`sqlite`, `postgres`, `eventstoredb`; see Cargo.toml), and asking this build
//! for one it was compiled without is [`MissingFeature`], which names the feature to enable.
//! [`StoreUrl::openable`] is the one place that decides.

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

/// A `--store` value that names no store banking knows.
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

/// A store this build can open: a [`StoreUrl`] whose store is compiled in. Each variant exists
/// only with its store's feature, so a `match` over it has an arm for exactly the stores built.
#[derive(Clone, PartialEq, Eq)]
pub enum Openable {
    /// In process memory (always compiled in).
    Memory,
    /// An SQLite file, at a `sqlite://PATH` URL.
    #[cfg(feature = "sqlite")]
    Sqlite(String),
    /// PostgreSQL, at a `postgres://` or `postgresql://` URL.
    #[cfg(feature = "postgres")]
    Postgres(String),
    /// EventStoreDB / KurrentDB, at a connection string of the `kurrentdb` client.
    #[cfg(feature = "eventstoredb")]
    EventStoreDb(String),
}

/// A store this build of banking was compiled without, by the cargo feature that brings it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MissingFeature {
    /// `sqlite`, for `sqlite://` URLs.
    Sqlite,
    /// `postgres`, for `postgres://` and `postgresql://` URLs.
    Postgres,
    /// `eventstoredb`, for EventStoreDB / KurrentDB connection strings.
    EventStoreDb,
}

impl fmt::Display for MissingFeature {
    /// What is missing and the command that builds it in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (store, feature) = (self.store(), self.feature());
        write!(
            f,
            "this build of banking has no {store} support: build it with `--features {feature}` \
             (cargo run -p banking --features {feature} -- …)"
        )
    }
}

impl MissingFeature {
    /// The name of the cargo feature.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::EventStoreDb => "eventstoredb",
        }
    }

    /// The store it compiles in, as people call it.
    pub fn store(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
            Self::EventStoreDb => "EventStoreDB / KurrentDB",
        }
    }
}

impl StoreUrl {
    /// The store, if this build can open it; else the feature it was compiled without.
    pub fn openable(self) -> Result<Openable, MissingFeature> {
        match self {
            Self::Memory => Ok(Openable::Memory),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(url) => Ok(Openable::Sqlite(url)),
            #[cfg(not(feature = "sqlite"))]
            Self::Sqlite(_) => Err(MissingFeature::Sqlite),
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => Ok(Openable::Postgres(url)),
            #[cfg(not(feature = "postgres"))]
            Self::Postgres(_) => Err(MissingFeature::Postgres),
            #[cfg(feature = "eventstoredb")]
            Self::EventStoreDb(url) => Ok(Openable::EventStoreDb(url)),
            #[cfg(not(feature = "eventstoredb"))]
            Self::EventStoreDb(_) => Err(MissingFeature::EventStoreDb),
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

impl fmt::Debug for Openable {
    /// Without the password a URL may carry, as [`StoreUrl`]'s.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(url) => f.write_str(url),
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => f.write_str(&redacted(url)),
            #[cfg(feature = "eventstoredb")]
            Self::EventStoreDb(url) => f.write_str(&redacted(url)),
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

    /// What opening `url` answers in this build: the store, or why not, as the user reads it.
    fn opening(url: &str) -> Result<Openable, String> {
        let url: StoreUrl = url
            .parse()
            .map_err(|error: UnknownStore| error.to_string())?;
        url.openable().map_err(|missing| missing.to_string())
    }

    #[test]
    fn the_stores_compiled_in_open() {
        assert_eq!(opening("memory"), Ok(Openable::Memory));
        #[cfg(feature = "sqlite")]
        assert_eq!(
            opening("sqlite://banking.db"),
            Ok(Openable::Sqlite("sqlite://banking.db".into()))
        );
        #[cfg(feature = "postgres")]
        assert_eq!(
            opening("postgres://db/bank"),
            Ok(Openable::Postgres("postgres://db/bank".into()))
        );
        #[cfg(feature = "eventstoredb")]
        assert_eq!(
            opening("esdb://db:2113"),
            Ok(Openable::EventStoreDb("esdb://db:2113".into()))
        );
    }

    #[cfg(not(feature = "sqlite"))]
    #[test]
    fn without_the_sqlite_feature_sqlite_urls_name_it() {
        assert_eq!(
            opening("sqlite://banking.db"),
            Err(
                "this build of banking has no SQLite support: build it with `--features \
                 sqlite` (cargo run -p banking --features sqlite -- …)"
                    .to_owned()
            )
        );
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn without_the_postgres_feature_postgres_urls_name_it() {
        for url in ["postgres://postgres@127.0.0.1/test", "postgresql://db/bank"] {
            assert_eq!(
                opening(url),
                Err(
                    "this build of banking has no PostgreSQL support: build it with \
                     `--features postgres` (cargo run -p banking --features postgres -- …)"
                        .to_owned()
                ),
                "{url}"
            );
        }
    }

    #[cfg(not(feature = "eventstoredb"))]
    #[test]
    fn without_the_eventstoredb_feature_eventstoredb_urls_name_it() {
        for url in ["esdb://127.0.0.1:2113?tls=false", "kurrentdb://db:2113"] {
            assert_eq!(
                opening(url),
                Err(
                    "this build of banking has no EventStoreDB / KurrentDB support: build it \
                     with `--features eventstoredb` (cargo run -p banking --features \
                     eventstoredb -- …)"
                        .to_owned()
                ),
                "{url}"
            );
        }
    }
}
