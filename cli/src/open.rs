//! From a store URL to an opened store, refusing to create anything: the CLI inspects stores
//! that an application made, so a missing schema or file is the user's mistake to report.

use crate::error::{CliError, redacted};

/// A store the CLI can inspect.
pub(crate) enum Opened {
    #[cfg(feature = "postgres")]
    Postgres(decider_store_postgres::PostgresStore),
    #[cfg(feature = "sqlite")]
    Sqlite(decider_store_sqlite::SqliteStore),
}

/// The URL forms this build understands, for the unknown-scheme message.
fn supported() -> String {
    let mut forms: Vec<&str> = Vec::new();
    if cfg!(feature = "postgres") {
        forms.push("postgres://USER@HOST:PORT/DATABASE");
    }
    if cfg!(feature = "sqlite") {
        forms.push("sqlite://PATH");
    }
    if forms.is_empty() {
        "none (this build has neither the postgres nor the sqlite feature)".to_owned()
    } else {
        forms.join(", ")
    }
}

/// Opens the store `url` names; `schema` is PostgreSQL's (`None`: the store's default).
pub(crate) async fn open(url: &str, schema: Option<&str>) -> Result<Opened, CliError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return open_postgres(url, schema).await;
    }
    if url.starts_with("sqlite://") {
        if schema.is_some() {
            return Err(CliError::Usage(
                "--schema applies to PostgreSQL stores only".to_owned(),
            ));
        }
        #[cfg(feature = "sqlite")]
        return open_sqlite(url);
    }
    Err(CliError::UnknownScheme {
        url: redacted(url),
        supported: supported(),
    })
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, schema: Option<&str>) -> Result<Opened, CliError> {
    use decider_store_postgres::{PostgresOptions, PostgresStore};
    use std::time::Duration;

    let defaults = PostgresOptions::default();
    let options = PostgresOptions {
        schema: schema.map_or(defaults.schema.clone(), str::to_owned),
        // One command at a time needs few connections, and an operator wants a prompt answer.
        pool_size: 2,
        pool_timeout: Duration::from_secs(5),
        ..defaults
    };
    let schema = options.schema.clone();
    let store = PostgresStore::connect_with(url, options)
        .await
        .map_err(|e| match e {
            decider_core::StoreError::Unavailable { .. } => CliError::NotAnswering {
                url: redacted(url),
                detail: e.to_string(),
            },
            other => CliError::Store(other),
        })?;
    if !store.is_migrated().await? {
        return Err(CliError::NotInitialised { schema });
    }
    Ok(Opened::Postgres(store))
}

#[cfg(feature = "sqlite")]
fn open_sqlite(url: &str) -> Result<Opened, CliError> {
    use decider_store_sqlite::SqliteStore;

    let path = url.trim_start_matches("sqlite://");
    // Opening creates a missing file: check first, so that a typo is not a new empty store.
    if !path.is_empty() && !std::path::Path::new(path).is_file() {
        return Err(CliError::NoDatabaseFile {
            path: path.to_owned(),
        });
    }
    let store = SqliteStore::connect(url).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Opened::Sqlite(store))
}
