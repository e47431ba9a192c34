//! What can go wrong, each worded to say what to do about it.

use decider_core::StoreError;

/// A failure of one `decider` invocation; its `Display` is the message the user sees.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(
        "unknown store URL {url:?}: supported are {supported} (pass one with --store or DECIDER_STORE)"
    )]
    UnknownScheme { url: String, supported: String },
    #[error(
        "the PostgreSQL database at {url} does not answer ({detail}): start PostgreSQL, or pass the right URL with --store or DECIDER_STORE"
    )]
    NotAnswering { url: String, detail: String },
    #[error(
        "no decider tables in schema {schema:?}: is this the right --schema? (the application creates them when it starts)"
    )]
    NotInitialised { schema: String },
    #[error(
        "no SQLite database at {path}: is this the right path? (the application creates it when it starts)"
    )]
    NoDatabaseFile { path: String },
    #[error(
        "no runner of projection {projection:?} has ever reported to this store; {}",
        match registered.as_slice() {
            [] => "none has: runners report once started with a control plane (ProjectionRunner::with_control)".to_owned(),
            names => format!("those that have: {}", names.join(", ")),
        }
    )]
    UnknownProjection {
        projection: String,
        registered: Vec<String>,
    },
    #[error(
        "{projection} runs as partitions ({}), and a partition cannot be rebuilt alone (its reset \
         would empty every partition's read model): build a new version beside the live one and \
         switch to it once caught up (BlueGreen; `decider version {projection}` shows the active \
         one), or stop every runner of it and call PartitionedRunner::rebuild",
        partitions.join(", ")
    )]
    Partitioned {
        projection: String,
        partitions: Vec<String>,
    },
    #[error("request {id} failed in runner {runner}: {error}")]
    RequestFailed {
        id: u64,
        runner: String,
        error: String,
    },
    #[error(
        "runner {runner} of {projection} stopped reporting during the rebuild (last state {state}{}); \
         the next runner to start goes on from its checkpoint: see `decider projections`",
        if error.is_empty() { String::new() } else { format!(": {error}") }
    )]
    RunnerGone {
        projection: String,
        runner: String,
        state: String,
        error: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("writing the output failed: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// Whether the error is a closed pipe on stdout (`decider read x | head`): not a failure.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// `url` with any password replaced, for messages.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redacted("postgres://app:secret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redacted("postgres://app@db/x?a=b"),
            "postgres://app@db/x?a=b"
        );
        assert_eq!(redacted("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }
}
