//! The projection control plane: see [`ProjectionControl`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::Position;
use crate::projection::status::{ProjectionStatus, RunnerState};
use crate::projection::storable_text;
use crate::store::StoreError;

/// What a runner said about itself at `reported_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerReport {
    /// The projection.
    pub projection: String,
    /// Which runner: [`runner_id`], unique per runner of a process.
    pub runner: String,
    /// Its state when it reported.
    pub state: ReportedState,
    /// The error of a `Reconnecting` (the latest fault) or `Failed` runner (U+0000 replaced by
    /// U+FFFD, so that every store can keep it).
    pub error: Option<String>,
    /// The position of the last event handled, as the runner knew it.
    pub checkpoint: Option<Position>,
    /// The head of the log, as last measured.
    pub head: Option<Position>,
    /// The lag, as last measured ([`ProjectionStatus::lag`]).
    pub lag: Option<u64>,
    /// Recent throughput, events per second.
    pub events_per_second: f64,
    /// How often the runner reports: a report much older than this is from a runner that has
    /// stopped or died.
    pub interval: Duration,
    /// When it reported.
    pub reported_at: SystemTime,
}

impl RunnerReport {
    /// The report of `status` by `runner`, which reports every `interval`.
    pub fn of(status: &ProjectionStatus, runner: &str, interval: Duration) -> Self {
        let error = match &status.state {
            RunnerState::Reconnecting { last_error, .. } => Some(storable_text(last_error)),
            RunnerState::Failed { error } => Some(storable_text(error)),
            _ => None,
        };
        Self {
            projection: status.projection.clone(),
            runner: runner.to_owned(),
            state: ReportedState::of(&status.state),
            error,
            checkpoint: status.checkpoint,
            head: status.head,
            lag: status.lag,
            events_per_second: status.events_per_second,
            interval,
            reported_at: SystemTime::now(),
        }
    }

    /// Whether the runner has reported within three of its intervals (at least five seconds)
    /// before `now`, and had not stopped: it is most likely still running.
    pub fn is_current(&self, now: SystemTime) -> bool {
        let grace = (self.interval * 3).max(Duration::from_secs(5));
        let recent = now
            .duration_since(self.reported_at)
            .is_ok_and(|age| age <= grace)
            || self.reported_at > now;
        recent && !matches!(self.state, ReportedState::Stopped | ReportedState::Failed)
    }
}

/// A [`RunnerState`] without its details, as stored by the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportedState {
    /// [`RunnerState::Idle`].
    Idle,
    /// [`RunnerState::WaitingForLease`]: another runner is the active one.
    WaitingForLease,
    /// [`RunnerState::CatchingUp`].
    CatchingUp,
    /// [`RunnerState::Live`].
    Live,
    /// [`RunnerState::Reconnecting`].
    Reconnecting,
    /// [`RunnerState::Stopped`].
    Stopped,
    /// [`RunnerState::Failed`].
    Failed,
}

impl ReportedState {
    /// Every state, in the order of [`RunnerState`]'s variants.
    pub const ALL: [Self; 7] = [
        Self::Idle,
        Self::WaitingForLease,
        Self::CatchingUp,
        Self::Live,
        Self::Reconnecting,
        Self::Stopped,
        Self::Failed,
    ];

    /// The state of `state`.
    pub fn of(state: &RunnerState) -> Self {
        match state {
            RunnerState::Idle => Self::Idle,
            RunnerState::WaitingForLease => Self::WaitingForLease,
            RunnerState::CatchingUp => Self::CatchingUp,
            RunnerState::Live => Self::Live,
            RunnerState::Reconnecting { .. } => Self::Reconnecting,
            RunnerState::Stopped => Self::Stopped,
            RunnerState::Failed { .. } => Self::Failed,
        }
    }

    /// Its name in snake case, as stored and as the `state` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::WaitingForLease => "waiting_for_lease",
            Self::CatchingUp => "catching_up",
            Self::Live => "live",
            Self::Reconnecting => "reconnecting",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    /// Whether a runner in this state holds the lease and reads the log.
    pub fn is_active(self) -> bool {
        matches!(self, Self::CatchingUp | Self::Live)
    }
}

impl fmt::Display for ReportedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReportedState {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| StoreError::backend(format!("unknown stored runner state {text:?}")))
    }
}

/// What an operator can ask of a projection's runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlAction {
    /// [`ProjectionRunner::rebuild`](crate::projection::ProjectionRunner::rebuild): empty the
    /// read model, forget the checkpoint, replay the log.
    Rebuild,
    /// [`ProjectionRunner::redrive_dead_letters`](crate::projection::ProjectionRunner::redrive_dead_letters).
    RedriveDeadLetters,
}

impl ControlAction {
    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rebuild => "rebuild",
            Self::RedriveDeadLetters => "redrive_dead_letters",
        }
    }
}

impl fmt::Display for ControlAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ControlAction {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        [Self::Rebuild, Self::RedriveDeadLetters]
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| StoreError::backend(format!("unknown stored control action {text:?}")))
    }
}

/// An operator's request, and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlRequest {
    /// Its id, handed out by the store.
    pub id: u64,
    /// The projection asked.
    pub projection: String,
    /// What it is asked to do.
    pub action: ControlAction,
    /// When it was asked.
    pub requested_at: SystemTime,
    /// What became of it; `None` while pending.
    pub done: Option<RequestDone>,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestDone {
    /// When.
    pub at: SystemTime,
    /// The runner that carried it out.
    pub by: String,
    /// What it reported: a summary on success, the error otherwise.
    pub result: Result<String, String>,
}

/// The projection control plane: how an operator with only a store URL sees the projections
/// running in application processes, and asks them to rebuild or re-drive their dead letters.
///
/// Two halves meet in the store (ADR 10):
/// - **Runners** given [`ProjectionRunner::with_control`](crate::projection::ProjectionRunner::with_control)
///   [`report`](ProjectionControl::report) their status every
///   [`status_interval`](crate::projection::RunnerOptions::status_interval), and the one that
///   holds the lease takes its projection's [`pending`](ProjectionControl::pending) requests at
///   the same pace, carries them out and [`complete`](ProjectionControl::complete)s them.
/// - **Operators** (the `decider` CLI) list the [`reports`](ProjectionControl::reports),
///   [`request`](ProjectionControl::request) an action and follow it with
///   [`request_status`](ProjectionControl::request_status).
///
/// A request is carried out at least once: a runner that dies after the action and before it
/// completes the request leaves it pending for the next holder of the lease. Both actions give
/// the same result when repeated (a rebuild replays from the start again; a re-drive finds the
/// letters it handled gone).
pub trait ProjectionControl: Send + Sync + 'static {
    /// Records `report`, replacing the previous report of the same projection and runner.
    fn report(&self, report: &RunnerReport) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every runner's latest report, by projection then runner.
    fn reports(&self) -> impl Future<Output = Result<Vec<RunnerReport>, StoreError>> + Send;

    /// Asks the runner of `projection` to carry out `action`; returns the request's id.
    fn request(
        &self,
        projection: &str,
        action: ControlAction,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The requests of `projection` not yet done, oldest first.
    fn pending(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Vec<ControlRequest>, StoreError>> + Send;

    /// Records that `runner` carried out request `id` with `result` (the runner replaces
    /// U+0000 in it by U+FFFD). Completing a request that is done already changes nothing.
    fn complete(
        &self,
        id: u64,
        runner: &str,
        result: Result<String, String>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Request `id`, if it exists.
    fn request_status(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Option<ControlRequest>, StoreError>> + Send;

    /// The version of the read model `group` that readers read now: the name of the projection
    /// that builds it, as last [`switch_version`](ProjectionControl::switch_version)ed to;
    /// `None` before the first switch. See [`BlueGreen`](crate::projection::BlueGreen).
    ///
    /// The default keeps no versions: it answers `None`.
    fn active_version(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send {
        let _ = group;
        async { Ok(None) }
    }

    /// Makes `to` the active version of `group` if `from` is the active one now (`None`: no
    /// version has been switched to yet); returns whether it switched. Compare-and-set, so two
    /// switchers never both win, and durable, so that every reader of every process sees it.
    ///
    /// The default keeps no versions: it refuses with [`StoreError::InvalidInput`].
    fn switch_version(
        &self,
        group: &str,
        from: Option<&str>,
        to: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (_, _) = (from, to);
        let error = StoreError::InvalidInput(format!(
            "cannot switch the version of {group}: this control plane keeps no versions"
        ));
        async { Err(error) }
    }

    /// Records that `projection` runs as `count` partitions, unless a count is recorded for it
    /// already; answers the recorded count. Every runner of a partitioned projection must use
    /// one count: partitions of two counts are different projections to the store (other
    /// names, checkpoints and leases), so both would handle every event. A
    /// [`PartitionedRunner`](crate::projection::PartitionedRunner) claims its count before it
    /// runs and refuses another. Durable and shared, like the versions.
    ///
    /// The default records nothing: it answers `count` (nothing to compare with).
    fn claim_partition_count(
        &self,
        projection: &str,
        count: u32,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send {
        let _ = projection;
        async move { Ok(count) }
    }

    /// The partition count recorded for `projection` by
    /// [`claim_partition_count`](ProjectionControl::claim_partition_count), if any: what a
    /// reader that waits on the partition of a stream needs to know (a version built by other
    /// processes may have another count than this one's).
    ///
    /// The default records nothing: it answers `None`.
    fn partition_count(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send {
        let _ = projection;
        async { Ok(None) }
    }
}

/// No control plane: what a runner without [`with_control`](crate::projection::ProjectionRunner::with_control)
/// has. Reports go nowhere and no request is ever pending.
#[derive(Debug, Clone, Copy, Default)]
pub struct Uncontrolled;

impl ProjectionControl for Uncontrolled {
    async fn report(&self, _report: &RunnerReport) -> Result<(), StoreError> {
        Ok(())
    }
    async fn reports(&self) -> Result<Vec<RunnerReport>, StoreError> {
        Ok(Vec::new())
    }
    async fn request(&self, projection: &str, _action: ControlAction) -> Result<u64, StoreError> {
        Err(StoreError::InvalidInput(format!(
            "projection {projection} runs without a control plane"
        )))
    }
    async fn pending(&self, _projection: &str) -> Result<Vec<ControlRequest>, StoreError> {
        Ok(Vec::new())
    }
    async fn complete(
        &self,
        _id: u64,
        _runner: &str,
        _result: Result<String, String>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn request_status(&self, _id: u64) -> Result<Option<ControlRequest>, StoreError> {
        Ok(None)
    }
}

/// A control plane in memory, for runners and operators of one process (and for tests).
#[derive(Debug, Default)]
pub struct MemoryControl(Mutex<MemoryControlState>);

#[derive(Debug, Default)]
struct MemoryControlState {
    reports: HashMap<(String, String), RunnerReport>,
    requests: Vec<ControlRequest>,
    versions: HashMap<String, String>,
    partition_counts: HashMap<String, u32>,
}

impl MemoryControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryControlState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ProjectionControl for MemoryControl {
    async fn report(&self, report: &RunnerReport) -> Result<(), StoreError> {
        let key = (report.projection.clone(), report.runner.clone());
        self.lock().reports.insert(key, report.clone());
        Ok(())
    }

    async fn reports(&self) -> Result<Vec<RunnerReport>, StoreError> {
        let mut reports: Vec<_> = self.lock().reports.values().cloned().collect();
        reports.sort_by(|a, b| (&a.projection, &a.runner).cmp(&(&b.projection, &b.runner)));
        Ok(reports)
    }

    async fn request(&self, projection: &str, action: ControlAction) -> Result<u64, StoreError> {
        let mut state = self.lock();
        let id = state.requests.len() as u64 + 1;
        state.requests.push(ControlRequest {
            id,
            projection: projection.to_owned(),
            action,
            requested_at: SystemTime::now(),
            done: None,
        });
        Ok(id)
    }

    async fn pending(&self, projection: &str) -> Result<Vec<ControlRequest>, StoreError> {
        Ok(self
            .lock()
            .requests
            .iter()
            .filter(|r| r.projection == projection && r.done.is_none())
            .cloned()
            .collect())
    }

    async fn complete(
        &self,
        id: u64,
        runner: &str,
        result: Result<String, String>,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(request) = state.requests.iter_mut().find(|r| r.id == id)
            && request.done.is_none()
        {
            request.done = Some(RequestDone {
                at: SystemTime::now(),
                by: runner.to_owned(),
                result,
            });
        }
        Ok(())
    }

    async fn request_status(&self, id: u64) -> Result<Option<ControlRequest>, StoreError> {
        Ok(self.lock().requests.iter().find(|r| r.id == id).cloned())
    }

    async fn active_version(&self, group: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().versions.get(group).cloned())
    }

    async fn switch_version(
        &self,
        group: &str,
        from: Option<&str>,
        to: &str,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if state.versions.get(group).map(String::as_str) != from {
            return Ok(false);
        }
        state.versions.insert(group.to_owned(), to.to_owned());
        Ok(true)
    }

    async fn claim_partition_count(&self, projection: &str, count: u32) -> Result<u32, StoreError> {
        Ok(*self
            .lock()
            .partition_counts
            .entry(projection.to_owned())
            .or_insert(count))
    }

    async fn partition_count(&self, projection: &str) -> Result<Option<u32>, StoreError> {
        Ok(self.lock().partition_counts.get(projection).copied())
    }
}

impl<T: ProjectionControl> ProjectionControl for Arc<T> {
    fn report(&self, report: &RunnerReport) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).report(report)
    }
    fn reports(&self) -> impl Future<Output = Result<Vec<RunnerReport>, StoreError>> + Send {
        (**self).reports()
    }
    fn request(
        &self,
        projection: &str,
        action: ControlAction,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).request(projection, action)
    }
    fn pending(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Vec<ControlRequest>, StoreError>> + Send {
        (**self).pending(projection)
    }
    fn complete(
        &self,
        id: u64,
        runner: &str,
        result: Result<String, String>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).complete(id, runner, result)
    }
    fn request_status(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Option<ControlRequest>, StoreError>> + Send {
        (**self).request_status(id)
    }
    fn active_version(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send {
        (**self).active_version(group)
    }
    fn switch_version(
        &self,
        group: &str,
        from: Option<&str>,
        to: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).switch_version(group, from, to)
    }
    fn claim_partition_count(
        &self,
        projection: &str,
        count: u32,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send {
        (**self).claim_partition_count(projection, count)
    }
    fn partition_count(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send {
        (**self).partition_count(projection)
    }
}

/// A new runner's id: `host:pid:n`, the host name, the process id, and a count of the runners
/// this process made, so that an operator can tell which process a report comes from.
pub fn runner_id() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    static RUNNERS: AtomicU64 = AtomicU64::new(0);
    let host = HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    });
    let n = RUNNERS.fetch_add(1, Ordering::Relaxed) + 1;
    format!("{host}:{}:{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_actions_round_trip_through_their_names() {
        for state in ReportedState::ALL {
            assert_eq!(state.as_str().parse::<ReportedState>().unwrap(), state);
        }
        for action in [ControlAction::Rebuild, ControlAction::RedriveDeadLetters] {
            assert_eq!(action.as_str().parse::<ControlAction>().unwrap(), action);
        }
        assert!("running".parse::<ReportedState>().is_err());
    }

    #[test]
    fn a_report_is_current_while_recent_and_not_stopped() {
        let mut status = ProjectionStatus::new("p");
        status.state = RunnerState::Live;
        let report = RunnerReport::of(&status, "r", Duration::from_secs(1));
        let now = report.reported_at;
        assert!(report.is_current(now));
        assert!(report.is_current(now + Duration::from_secs(5)));
        assert!(!report.is_current(now + Duration::from_secs(6)));
        let stopped = RunnerReport {
            state: ReportedState::Stopped,
            ..report
        };
        assert!(!stopped.is_current(now));
    }

    #[test]
    fn runner_ids_differ_within_a_process() {
        assert_ne!(runner_id(), runner_id());
    }
}
