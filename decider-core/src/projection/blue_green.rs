//! Blue/green rebuilds: a new version of a read model builds beside the live one, and readers
//! are switched to it once it has caught up.
//!
//! A read model (a *group*, such as `balances`) has numbered versions. Version `n` is built by
//! its own projection, [`BlueGreen::projection`]: named like the group for version 1 (so a read
//! model that predates versioning is its version 1) and `<group>@v<n>` after, so each version has
//! its own checkpoint (and, with partitions, its own partitions). Its code keeps its data apart
//! (other tables or keys). The control plane keeps which version readers read
//! ([`ProjectionControl::active_version`]), durably and for every process.
//!
//! A rebuild into version `n + 1`:
//! 1. Start the new version's runner beside the live one (in this process or another). It
//!    replays the log into the new tables while readers keep reading version `n`.
//! 2. [`BlueGreen::switch_when_caught_up`] waits until every partition of the new version has
//!    handled every event of its filter up to the head of the log at its previous look (one
//!    poll interval ago: under steady traffic, a live runner is never exactly at the head, but
//!    always past where the head was a moment ago), then switches the active version from `n`
//!    to `n + 1` (compare-and-set: one switcher wins). Readers that ask after the switch read the
//!    new version; none ever reads a half-built one.
//! 3. After a grace period for reads in flight, it calls the drop hook with the old version
//!    (drop its tables). Runners of the old version stop by themselves: run them until
//!    [`BlueGreen::superseded`].
//!
//! Changing a projection's partition count is such a rebuild: the new version has the new count.

use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;

use crate::Position;
use crate::projection::control::ProjectionControl;
use crate::projection::sink::{Sink, SinkError};
use crate::projection::{Projection, ProjectionError};
use crate::store::{EventStore, StoreError};

/// The versions of one read model, kept by a control plane.
///
/// ```
/// use decider_core::projection::{BlueGreen, MemoryControl, Projection};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let versions = BlueGreen::new("balances", MemoryControl::default());
/// let base = Projection::new("balances");
/// assert_eq!(versions.projection(&base, 1).name(), "balances");
/// assert_eq!(versions.projection(&base, 2).name(), "balances@v2");
/// assert_eq!(versions.active().await.unwrap(), 1); // before any switch
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct BlueGreen<C> {
    group: String,
    control: C,
    poll: Duration,
    grace: Duration,
}

/// What [`BlueGreen::switch_when_caught_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Readers were switched from version `from` to `to`, and the hook dropped `from`.
    Switched {
        /// The old version.
        from: u32,
        /// The new version.
        to: u32,
    },
    /// The active version was already this one or a later one (another process switched):
    /// nothing was done.
    AlreadyActive {
        /// The active version.
        active: u32,
    },
}

impl<C: ProjectionControl> BlueGreen<C> {
    /// The versions of `group`, kept in `control`; polls every 200 ms, and drops an old version
    /// 2 s after the switch.
    pub fn new(group: impl Into<String>, control: C) -> Self {
        Self {
            group: group.into(),
            control,
            poll: Duration::from_millis(200),
            grace: Duration::from_secs(2),
        }
    }

    /// The same with other timings: how often to look whether the new version has caught up
    /// (and whether a version is superseded), and how long reads that started before the
    /// switch may still use the old version before it is dropped.
    pub fn with_timings(mut self, poll: Duration, grace: Duration) -> Self {
        self.poll = poll;
        self.grace = grace;
        self
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The projection that builds `version` of the read model that `base` (its filter) feeds:
    /// named like the group for version 1, `<group>@v<version>` after.
    pub fn projection(&self, base: &Projection, version: u32) -> Projection {
        Projection::new(version_name(&self.group, version)).with_filter(base.filter().clone())
    }

    /// The version readers read now: 1 until the first switch.
    pub async fn active(&self) -> Result<u32, StoreError> {
        version_number(self.control.active_version(&self.group).await?.as_deref())
    }

    /// Resolves once a later version than `version` is active: the shutdown signal of the
    /// runners of `version`, so that they stop by themselves after a switch. A failed look is
    /// logged and tried again at the next poll.
    pub async fn superseded(&self, version: u32) {
        loop {
            match self.active().await {
                Ok(active) if active > version => return,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(group = self.group, %error, "cannot read the active version")
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Whether every one of `partitions` (the new version's projection, or its partitions) has
    /// handled every event of its filter that exists now, by the checkpoints `sink` keeps.
    pub async fn caught_up<S: EventStore, K: Sink>(
        &self,
        store: &S,
        sink: &K,
        partitions: &[Projection],
    ) -> Result<bool, ProjectionError> {
        let head = store
            .head_position()
            .await
            .map_err(|error| ProjectionError::Store {
                projection: self.group.clone(),
                error,
            })?;
        self.caught_up_to(store, sink, partitions, head).await
    }

    /// Whether every one of `partitions` has handled every event of its filter at or before
    /// `head` (`None`: the empty log, which every projection has handled).
    async fn caught_up_to<S: EventStore, K: Sink>(
        &self,
        store: &S,
        sink: &K,
        partitions: &[Projection],
        head: Option<Position>,
    ) -> Result<bool, ProjectionError> {
        let Some(head) = head else {
            return Ok(true);
        };
        for partition in partitions {
            let projection = partition.name().to_owned();
            let checkpoint =
                sink.checkpoint(partition.name())
                    .await
                    .map_err(|error| match error {
                        SinkError::Retryable(reason) => ProjectionError::Store {
                            projection: projection.clone(),
                            error: StoreError::unavailable(reason),
                        },
                        other => ProjectionError::Fatal {
                            projection: projection.clone(),
                            reason: other.to_string(),
                        },
                    })?;
            let mut next = pin!(store.read_all(checkpoint, Some(1), partition.filter()));
            match next.next().await {
                None => {}
                Some(Ok(event)) if event.position > head => {}
                Some(Ok(_)) => return Ok(false),
                Some(Err(error)) => return Err(ProjectionError::Store { projection, error }),
            }
        }
        Ok(true)
    }

    /// Waits until version `to`, built by `partitions` into `sink`, has caught up
    /// ([`caught_up`](Self::caught_up)), switches readers to it from the active version, waits
    /// the grace period, and hands the old version to `drop_old` (which drops its data).
    ///
    /// Faults while waiting (the store or the control plane away) are weather: logged and
    /// tried again at the next poll. `to` must be later than the active version; if it is not
    /// (another process switched already), nothing is done.
    pub async fn switch_when_caught_up<S, K, F, Fut>(
        &self,
        store: &S,
        sink: &K,
        partitions: &[Projection],
        to: u32,
        drop_old: F,
    ) -> Result<Switch, ProjectionError>
    where
        S: EventStore,
        K: Sink,
        F: FnOnce(u32) -> Fut,
        Fut: Future<Output = Result<(), SinkError>>,
    {
        // The head at the previous look: the new version must have got that far. At the first
        // look, the head now (on a quiet log, the switch need not wait a poll).
        let mut previous: Option<Option<Position>> = None;
        let from = loop {
            match self
                .try_switch(store, sink, partitions, to, &mut previous)
                .await
            {
                Ok(Some(outcome)) => break outcome,
                Ok(None) => {}
                Err(error) if is_retryable(&error) => {
                    tracing::warn!(group = self.group, %error, "cannot switch yet; trying again")
                }
                Err(error) => return Err(error),
            }
            tokio::time::sleep(self.poll).await;
        };
        let from = match from {
            Switch::Switched { from, .. } => from,
            already => return Ok(already),
        };
        tracing::info!(
            group = self.group,
            from,
            to,
            "readers switched to the new version"
        );
        tokio::time::sleep(self.grace).await;
        drop_old(from)
            .await
            .map_err(|error| ProjectionError::Fatal {
                projection: self
                    .projection(&Projection::new(""), from)
                    .name()
                    .to_owned(),
                reason: format!("cannot drop version {from} of {}: {error}", self.group),
            })?;
        tracing::info!(group = self.group, version = from, "old version dropped");
        Ok(Switch::Switched { from, to })
    }

    /// One look: `None` while the new version is behind the head at the `previous` look (which
    /// becomes the head now).
    async fn try_switch<S: EventStore, K: Sink>(
        &self,
        store: &S,
        sink: &K,
        partitions: &[Projection],
        to: u32,
        previous: &mut Option<Option<Position>>,
    ) -> Result<Option<Switch>, ProjectionError> {
        let store_error = |error: StoreError| ProjectionError::Store {
            projection: self.group.clone(),
            error,
        };
        let stored = self
            .control
            .active_version(&self.group)
            .await
            .map_err(store_error)?;
        let active = version_number(stored.as_deref()).map_err(store_error)?;
        if active >= to {
            return Ok(Some(Switch::AlreadyActive { active }));
        }
        let head = store.head_position().await.map_err(store_error)?;
        let target = previous.replace(head).unwrap_or(head);
        if !self.caught_up_to(store, sink, partitions, target).await? {
            return Ok(None);
        }
        let switched = self
            .control
            .switch_version(&self.group, stored.as_deref(), &format!("v{to}"))
            .await
            .map_err(store_error)?;
        // Lost the compare-and-set: look again at what is active now.
        Ok(switched.then_some(Switch::Switched { from: active, to }))
    }
}

fn is_retryable(error: &ProjectionError) -> bool {
    matches!(error, ProjectionError::Store { error, .. } if error.is_retryable())
}

/// The name of the projection that builds `version` of `group` (its checkpoint's, and the
/// prefix of its partitions' names): the group's own for version 1, `<group>@v<version>` after.
///
/// ```
/// use decider_core::projection::version_name;
///
/// assert_eq!(version_name("balances", 1), "balances");
/// assert_eq!(version_name("balances", 2), "balances@v2");
/// ```
pub fn version_name(group: &str, version: u32) -> String {
    if version <= 1 {
        group.to_owned()
    } else {
        format!("{group}@v{version}")
    }
}

/// The version number of what [`ProjectionControl::active_version`] answered: 1 for `None`
/// (no switch yet), 3 for `v3`; an error for anything else.
///
/// ```
/// use decider_core::projection::version_number;
///
/// assert_eq!(version_number(None).unwrap(), 1);
/// assert_eq!(version_number(Some("v3")).unwrap(), 3);
/// assert!(version_number(Some("three")).is_err());
/// ```
pub fn version_number(stored: Option<&str>) -> Result<u32, StoreError> {
    stored.map_or(Ok(1), parse_version)
}

/// `v3` is version 3.
fn parse_version(text: &str) -> Result<u32, StoreError> {
    text.strip_prefix('v')
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| {
            StoreError::backend(format!("stored projection version {text:?} is not v<n>"))
        })
}
