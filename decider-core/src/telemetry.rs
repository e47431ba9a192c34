//! Every metric the crate emits: names as constants, and one small function per measurement so
//! that a call site is one line.
//!
//! Metrics go through the [`metrics`] facade: without an installed recorder each call is a no-op,
//! and the application chooses the exporter (banking serves Prometheus text on `GET /metrics`).
//! Names follow Prometheus' conventions: a `decider_` prefix, `_total` counters, `_seconds`
//! histograms. `docs/metrics.md` lists them with their labels and example queries.
//!
//! Labels are bounded sets: decider, store and projection names, and the fixed outcome and state
//! words below; never a stream id or an error message, which would grow without bound.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::projection::{ReportedState, RunnerState};
use crate::store::{AppendResult, StoreError};

/// Commands handled, by `decider` and `outcome` (see [`CommandOutcomeLabel`]).
pub(crate) const COMMANDS: &str = "decider_commands_total";
/// How long a command took from its first read to its outcome, by `decider` and `outcome`.
pub(crate) const COMMAND_DURATION: &str = "decider_command_duration_seconds";
/// Concurrency conflicts a command met on append, by `decider`.
pub(crate) const COMMAND_CONFLICTS: &str = "decider_command_conflicts_total";
/// Attempts made again, by `decider` and `reason` (`conflict` or `unavailable`).
pub(crate) const COMMAND_RETRIES: &str = "decider_command_retries_total";

/// Appends asked of a store, by `store` and `outcome` (`ok`, `conflict`, `error`).
pub(crate) const APPENDS: &str = "decider_appends_total";
/// Events written by appends, by `store`; an append that repeated an earlier one writes none.
pub(crate) const APPENDED_EVENTS: &str = "decider_appended_events_total";
/// How long an append took, by `store`.
pub(crate) const APPEND_DURATION: &str = "decider_append_duration_seconds";

/// Events a projection handled (checkpointed), by `projection`.
pub(crate) const PROJECTION_EVENTS: &str = "decider_projection_events_total";
/// How long a projection's batch took to apply and checkpoint, by `projection`.
pub(crate) const PROJECTION_BATCH_DURATION: &str = "decider_projection_batch_duration_seconds";
/// Events of the log a projection has yet to handle, by `projection`.
pub(crate) const PROJECTION_LAG_EVENTS: &str = "decider_projection_lag_events";
/// Age of the last event of a projection's latest batch when the batch was checkpointed, by
/// `projection`; `0` when a measurement finds nothing left to handle.
pub(crate) const PROJECTION_LAG_SECONDS: &str = "decider_projection_lag_seconds";
/// Events a projection dead-lettered, by `projection`.
pub(crate) const PROJECTION_DEAD_LETTERS: &str = "decider_projection_dead_letters_total";
/// `1` for the state a projection's runner is in and `0` for the others, by `projection` and
/// `state`.
pub(crate) const PROJECTION_STATE: &str = "decider_projection_state";

/// The `outcome` label of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandOutcomeLabel {
    /// Decided and written, or decided to write nothing.
    Ok,
    /// Answered from its idempotency key: an earlier run's outcome.
    Replayed,
    /// The decider refused it, or the stream was terminal.
    Rejected,
    /// Still conflicting when out of retries.
    Conflict,
    /// Any other error: the store, the codec.
    Error,
}

impl CommandOutcomeLabel {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Replayed => "replayed",
            Self::Rejected => "rejected",
            Self::Conflict => "conflict",
            Self::Error => "error",
        }
    }
}

/// Records a command's outcome and how long it took.
pub(crate) fn command_done(decider: &Arc<str>, outcome: CommandOutcomeLabel, took: Duration) {
    let outcome = outcome.as_str();
    metrics::counter!(COMMANDS, "decider" => Arc::clone(decider), "outcome" => outcome)
        .increment(1);
    metrics::histogram!(COMMAND_DURATION, "decider" => Arc::clone(decider), "outcome" => outcome)
        .record(took.as_secs_f64());
}

/// Records a concurrency conflict met by a command of `decider`.
pub(crate) fn command_conflict(decider: &Arc<str>) {
    metrics::counter!(COMMAND_CONFLICTS, "decider" => Arc::clone(decider)).increment(1);
}

/// Records that a command of `decider` is tried again, for `reason`.
pub(crate) fn command_retry(decider: &Arc<str>, reason: &'static str) {
    metrics::counter!(COMMAND_RETRIES, "decider" => Arc::clone(decider), "reason" => reason)
        .increment(1);
}

/// Runs a store's `append` of `events` events and records it under `store` (`"memory"`,
/// `"sqlite"`, `"postgres"`, `"eventstoredb"`, or another adapter's name).
///
/// Every [`EventStore`](crate::EventStore) adapter wraps its append in this, so that every append
/// in a process is counted, whoever calls it. It records `decider_appends_total`,
/// `decider_appended_events_total` and `decider_append_duration_seconds` through the
/// [`metrics`] facade: a no-op until the application installs a recorder.
///
/// ```
/// # use decider_core::{AppendResult, Position, StoreError, measured_append};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let written = measured_append("memory", 2, async {
///     Ok::<_, StoreError>(AppendResult { next_revision: 2, position: Position::new(1, 1), repeated: false })
/// })
/// .await?;
/// assert_eq!(written.next_revision, 2);
/// # Ok::<(), StoreError>(())
/// # }).unwrap();
/// ```
pub async fn measured_append(
    store: &'static str,
    events: usize,
    append: impl Future<Output = Result<AppendResult, StoreError>>,
) -> Result<AppendResult, StoreError> {
    let started = Instant::now();
    let result = append.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(StoreError::WrongExpectedVersion { .. } | StoreError::ConditionFailed { .. }) => {
            "conflict"
        }
        Err(_) => "error",
    };
    metrics::counter!(APPENDS, "store" => store, "outcome" => outcome).increment(1);
    metrics::histogram!(APPEND_DURATION, "store" => store).record(started.elapsed().as_secs_f64());
    if let Ok(written) = &result
        && !written.repeated
    {
        metrics::counter!(APPENDED_EVENTS, "store" => store).increment(events as u64);
    }
    result
}

/// Records a projection's checkpointed batch: its events, how long it took, and the age of its
/// last event.
pub(crate) fn projection_batch(
    projection: &str,
    events: usize,
    took: Duration,
    last_recorded_at: Option<SystemTime>,
) {
    let name = projection.to_owned();
    metrics::counter!(PROJECTION_EVENTS, "projection" => name.clone()).increment(events as u64);
    metrics::histogram!(PROJECTION_BATCH_DURATION, "projection" => name.clone())
        .record(took.as_secs_f64());
    if let Some(recorded_at) = last_recorded_at {
        // A clock that went back makes an event look newer than now: no lag, not a negative one.
        let age = SystemTime::now()
            .duration_since(recorded_at)
            .unwrap_or_default();
        metrics::gauge!(PROJECTION_LAG_SECONDS, "projection" => name).set(age.as_secs_f64());
    }
}

/// Records how many events `projection` has yet to handle; `0` also zeroes its lag in time.
pub(crate) fn projection_lag(projection: &str, events: u64) {
    metrics::gauge!(PROJECTION_LAG_EVENTS, "projection" => projection.to_owned())
        .set(events as f64);
    if events == 0 {
        metrics::gauge!(PROJECTION_LAG_SECONDS, "projection" => projection.to_owned()).set(0.0);
    }
}

/// Records an event that `projection` dead-lettered.
pub(crate) fn projection_dead_letter(projection: &str) {
    metrics::counter!(PROJECTION_DEAD_LETTERS, "projection" => projection.to_owned()).increment(1);
}

/// Records that `projection` is now in `state`: its gauge `1`, every other state's `0`, so that
/// a query for `== 1` finds exactly one state per projection.
pub(crate) fn projection_state(projection: &str, state: &RunnerState) {
    let current = ReportedState::of(state);
    for reported in ReportedState::ALL {
        let value = if reported == current { 1.0 } else { 0.0 };
        metrics::gauge!(PROJECTION_STATE, "projection" => projection.to_owned(), "state" => reported.as_str())
            .set(value);
    }
}

/// The name a handler gives its decider by default: the last segment of the type's path,
/// without generic arguments (`banking::account::Account` → `Account`).
pub(crate) fn default_decider_name(type_name: &str) -> &str {
    let path = type_name.split('<').next().unwrap_or(type_name);
    path.rsplit("::").next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decider_is_named_by_the_last_segment_of_its_type_path() {
        assert_eq!(default_decider_name("banking::account::Account"), "Account");
        assert_eq!(
            default_decider_name("decider_core::combinators::Combined<a::X, b::Y>"),
            "Combined"
        );
        assert_eq!(default_decider_name("Plain"), "Plain");
    }

    #[test]
    fn every_runner_state_has_its_own_label() {
        let states = [
            RunnerState::Idle,
            RunnerState::WaitingForLease,
            RunnerState::CatchingUp,
            RunnerState::Live,
            RunnerState::Reconnecting {
                since: SystemTime::UNIX_EPOCH,
                attempts: 1,
                last_error: String::new(),
            },
            RunnerState::Stopped,
            RunnerState::Failed {
                error: String::new(),
            },
        ];
        let reported: Vec<_> = states.iter().map(ReportedState::of).collect();
        assert_eq!(reported, ReportedState::ALL);
    }
}
