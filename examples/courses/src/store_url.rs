//! Which store the courses live in, from the `--store` URL.

use std::fmt;
use std::str::FromStr;

/// Where the events live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// In process memory: nothing to set up, nothing kept.
    Memory,
    /// An SQLite file, at a `sqlite://PATH` URL.
    Sqlite(String),
    /// PostgreSQL, at a `postgres://` or `postgresql://` URL.
    Postgres(String),
}

/// A `--store` value that names no store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown store {0:?}: use \"memory\", a sqlite://PATH URL, or a postgres:// URL")]
pub struct UnknownStore(pub String);

impl FromStr for StoreUrl {
    type Err = UnknownStore;

    fn from_str(url: &str) -> Result<Self, UnknownStore> {
        match url.split_once("://") {
            None if url == "memory" => Ok(Self::Memory),
            Some(("sqlite", path)) if !path.is_empty() => Ok(Self::Sqlite(url.to_owned())),
            Some(("postgres" | "postgresql", _)) => Ok(Self::Postgres(url.to_owned())),
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
            Self::Postgres(url) => f.write_str(&redacted(url)),
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
        assert_eq!("memory".parse(), Ok(StoreUrl::Memory));
        assert_eq!(
            "sqlite://courses.db".parse(),
            Ok(StoreUrl::Sqlite("sqlite://courses.db".into()))
        );
        assert_eq!(
            "postgresql://postgres@127.0.0.1/test".parse(),
            Ok(StoreUrl::Postgres(
                "postgresql://postgres@127.0.0.1/test".into()
            ))
        );
        for refused in ["", "sqlite://", "mysql://localhost", "postgres"] {
            assert!(refused.parse::<StoreUrl>().is_err(), "{refused:?}");
        }
    }

    #[test]
    fn debug_hides_passwords() {
        let url: Result<StoreUrl, _> = "postgres://app:secret@db/courses".parse();
        assert_eq!(format!("{url:?}"), r#"Ok(postgres://app:***@db/courses)"#);
    }
}
