//! What a running projection reports about itself, readable at any time from any task.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::Position;
use crate::telemetry;

/// What a runner is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerState {
    /// Not started.
    Idle,
    /// Waiting for its lease: another runner of the same projection holds it, or the runner is
    /// taking it again after a fault.
    WaitingForLease,
    /// Reading events that were in the store when it started.
    CatchingUp,
    /// Caught up; following new events as they are appended.
    Live,
    /// Recovering from a fault that retrying fixes (a lost connection or lease, a database
    /// restart, a sink that asked to be retried): the batch in hand was dropped uncommitted, and
    /// the runner backs off before it takes its lease again and resumes from its checkpoint.
    Reconnecting {
        /// When the first fault of this run of faults happened.
        since: SystemTime,
        /// Faults in a row, without progress in between.
        attempts: u32,
        /// The latest fault.
        last_error: String,
    },
    /// Stopped on request.
    Stopped,
    /// Stopped by an error that retrying cannot fix: a poison event under
    /// [`PoisonPolicy::Stop`](crate::projection::PoisonPolicy::Stop), a handler's fatal error.
    Failed {
        /// The error.
        error: String,
    },
}

/// A snapshot of a projection's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionStatus {
    /// The projection.
    pub projection: String,
    /// What the runner is doing.
    pub state: RunnerState,
    /// The position of the last event handled.
    pub checkpoint: Option<Position>,
    /// The newest position of the store, as last looked up.
    pub head: Option<Position>,
    /// How far behind the log the projection is: `0` when no event it selects is left to
    /// handle; otherwise the events of the log from the first one it has yet to handle up to the
    /// head (counted on the second part of positions: exact on the memory store; on PostgreSQL
    /// identities, which rolled-back appends skip, so it may overstate). Measured every
    /// [`RunnerOptions::status_interval`](crate::projection::RunnerOptions::status_interval)
    /// while the runner runs, whatever its state, against the checkpoint the sink holds;
    /// `None` until first measured.
    pub lag: Option<u64>,
    /// When `lag` and `head` were measured.
    pub measured_at: Option<SystemTime>,
    /// Events handled since the runner started.
    pub handled: u64,
    /// Recent throughput, events per second.
    pub events_per_second: f64,
    /// How long the last batch took to apply and checkpoint.
    pub last_batch_latency: Option<Duration>,
    /// Events read from the store and not yet checkpointed; never above the buffer size.
    pub in_flight: usize,
}

impl ProjectionStatus {
    pub(crate) fn new(projection: &str) -> Self {
        Self {
            projection: projection.to_owned(),
            state: RunnerState::Idle,
            checkpoint: None,
            head: None,
            lag: None,
            measured_at: None,
            handled: 0,
            events_per_second: 0.0,
            last_batch_latency: None,
            in_flight: 0,
        }
    }
}

/// A shared, always-readable view of a runner's status.
#[derive(Debug, Clone)]
pub struct StatusHandle(Arc<Mutex<Tracker>>);

#[derive(Debug)]
struct Tracker {
    status: ProjectionStatus,
    last_batch_end: Option<Instant>,
}

impl StatusHandle {
    pub(crate) fn new(projection: &str) -> Self {
        telemetry::projection_state(projection, &RunnerState::Idle);
        Self(Arc::new(Mutex::new(Tracker {
            status: ProjectionStatus::new(projection),
            last_batch_end: None,
        })))
    }

    /// The current status.
    pub fn get(&self) -> ProjectionStatus {
        self.lock().status.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut ProjectionStatus)) {
        let mut tracker = self.lock();
        let before = std::mem::discriminant(&tracker.status.state);
        change(&mut tracker.status);
        let status = &tracker.status;
        if std::mem::discriminant(&status.state) != before {
            telemetry::projection_state(&status.projection, &status.state);
        }
    }

    pub(crate) fn set_state(&self, state: RunnerState) {
        self.update(|status| status.state = state);
    }

    /// Records a checkpointed batch of `events` that took `latency`, the last of them recorded
    /// at `last_recorded_at`.
    pub(crate) fn batch_done(
        &self,
        events: usize,
        checkpoint: Position,
        latency: Duration,
        last_recorded_at: Option<SystemTime>,
    ) {
        let mut tracker = self.lock();
        telemetry::projection_batch(
            &tracker.status.projection,
            events,
            latency,
            last_recorded_at,
        );
        let now = Instant::now();
        if let Some(previous) = tracker.last_batch_end {
            let seconds = now.duration_since(previous).as_secs_f64().max(1e-6);
            let rate = events as f64 / seconds;
            // An exponential moving average: steady, yet follows a change within a few batches.
            let status = &mut tracker.status;
            status.events_per_second = if status.events_per_second == 0.0 {
                rate
            } else {
                0.8 * status.events_per_second + 0.2 * rate
            };
        }
        tracker.last_batch_end = Some(now);
        let status = &mut tracker.status;
        status.handled += events as u64;
        status.checkpoint = Some(checkpoint);
        status.last_batch_latency = Some(latency);
    }

    pub(crate) fn set_checkpoint(&self, checkpoint: Option<Position>) {
        self.update(|status| status.checkpoint = checkpoint);
    }

    /// Records that the projection has handled everything its subscription had.
    pub(crate) fn caught_up(&self) {
        self.update(|status| {
            status.lag = Some(0);
            status.measured_at = Some(SystemTime::now());
            telemetry::projection_lag(&status.projection, 0);
        });
    }

    /// Records a measurement: the head, and how far behind it a projection at checkpoint `from`
    /// is. `from_sink`: `from` was read from the sink because the runner was not running, and
    /// becomes the status's checkpoint unless the runner has started since.
    ///
    /// The measurement takes two reads, while batches go on committing: when the checkpoint has
    /// moved past `from` meanwhile, the lag measured is stale (too high) and is capped at the
    /// distance from the new checkpoint to the head, so that it never undoes a `caught_up`.
    pub(crate) fn measured(
        &self,
        from: Option<Position>,
        from_sink: bool,
        head: Option<Position>,
        lag: u64,
    ) {
        self.update(|status| {
            if from_sink && !matches!(status.state, RunnerState::CatchingUp | RunnerState::Live) {
                status.checkpoint = from;
            }
            let lag = match (status.checkpoint, head) {
                (now, _) if now == from => lag,
                (Some(now), Some(head)) => lag.min(head.prepare().saturating_sub(now.prepare())),
                _ => lag,
            };
            status.head = status.head.max(head);
            status.lag = Some(lag);
            telemetry::projection_lag(&status.projection, lag);
            status.measured_at = Some(SystemTime::now());
        });
    }
}

/// The lag of a projection whose first event left to handle is at `pending` (if any), with the
/// log's head at `head`.
pub(crate) fn lag(pending: Option<Position>, head: Option<Position>) -> u64 {
    match (pending, head) {
        (Some(pending), Some(head)) => head
            .prepare()
            .saturating_add(1)
            .saturating_sub(pending.prepare())
            .max(1),
        // The head was read before the pending event was appended: one event at least.
        (Some(_), None) => 1,
        (None, _) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_first_pending_event_to_the_head() {
        let at = |n| Some(Position::new(n, n));
        assert_eq!(lag(None, at(10)), 0, "nothing pending");
        assert_eq!(lag(at(10), at(10)), 1);
        assert_eq!(lag(at(4), at(10)), 7);
        assert_eq!(lag(at(12), at(10)), 1, "appended after the head was read");
        assert_eq!(lag(at(3), None), 1);
    }
}
