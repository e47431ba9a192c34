//! What a running projection reports about itself, readable at any time from any task.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::event::Position;

/// What a runner is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerState {
    /// Not started.
    Idle,
    /// Waiting for another runner of the same projection to give up its lease.
    WaitingForLease,
    /// Reading events that were in the store when it started.
    CatchingUp,
    /// Caught up; following new events as they are appended.
    Live,
    /// Retrying after a passing failure.
    Stalled {
        /// The failure.
        reason: String,
    },
    /// Stopped on request.
    Stopped,
    /// Stopped by an error (a poison event under the `Stop` policy, a lost lease, …).
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
    /// Events between the checkpoint and the head, counted on the second part of positions
    /// (exact on the memory store; on PostgreSQL it counts identities, which rolled-back appends
    /// skip, so it may overstate). Counts every event of the log, not only those the projection
    /// selects.
    pub lag: Option<u64>,
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
        change(&mut self.lock().status);
    }

    pub(crate) fn set_state(&self, state: RunnerState) {
        self.update(|status| status.state = state);
    }

    /// Records a checkpointed batch of `events` that took `latency`.
    pub(crate) fn batch_done(&self, events: usize, checkpoint: Position, latency: Duration) {
        let mut tracker = self.lock();
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
        status.lag = lag(status.checkpoint, status.head);
    }

    pub(crate) fn set_checkpoint(&self, checkpoint: Option<Position>) {
        self.update(|status| {
            status.checkpoint = checkpoint;
            status.lag = lag(status.checkpoint, status.head);
        });
    }

    pub(crate) fn set_head(&self, head: Option<Position>) {
        self.update(|status| {
            status.head = head;
            status.lag = lag(status.checkpoint, status.head);
        });
    }
}

fn lag(checkpoint: Option<Position>, head: Option<Position>) -> Option<u64> {
    let head = head?;
    let done = checkpoint.map_or(0, Position::prepare);
    Some(head.prepare().saturating_sub(done))
}
