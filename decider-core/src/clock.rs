//! Where time and identity enter the system: a [`Clock`] and an [`IdGenerator`], injected so that
//! nothing else reads the time or draws random ids, and tests can fix both.
//!
//! Deciders never see either: what time it is, or which id a new order gets, arrives inside the
//! command, read from these at the edge.
//!
//! ```
//! use decider_core::{Clock, ManualClock};
//! use std::time::{Duration, SystemTime};
//!
//! let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
//! clock.advance(Duration::from_secs(60));
//! assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(60));
//! ```

use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use uuid::Uuid;

/// Tells the time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to: for deterministic tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: SystemTime) -> Self {
        Self(Mutex::new(at))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Draws ids for events and correlations that carry no idempotency key.
pub trait IdGenerator: Send + Sync + 'static {
    /// A new, unique id.
    fn new_id(&self) -> Uuid;
}

/// Random (v4) ids from the operating system's secure generator.
///
/// The randomness is drawn 4 KiB at a time into a per-thread pool: one system call per 256 ids
/// instead of one per id, which was a tenth of the cost of a command on the memory store.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

struct RandomPool {
    bytes: [u8; 4096],
    used: usize,
}

thread_local! {
    static POOL: RefCell<RandomPool> = const {
        RefCell::new(RandomPool { bytes: [0; 4096], used: 4096 })
    };
}

impl IdGenerator for RandomIds {
    fn new_id(&self) -> Uuid {
        POOL.with_borrow_mut(|pool| {
            if pool.used + 16 > pool.bytes.len() {
                if getrandom::fill(&mut pool.bytes).is_err() {
                    // Only on a system without a random source; uuid's own path reports it.
                    return Uuid::new_v4();
                }
                pool.used = 0;
            }
            let mut random = [0; 16];
            random.copy_from_slice(&pool.bytes[pool.used..pool.used + 16]);
            pool.used += 16;
            uuid::Builder::from_random_bytes(random).into_uuid()
        })
    }
}

/// Ids 1, 2, 3, … as UUIDs: for deterministic tests.
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl IdGenerator for SequentialIds {
    fn new_id(&self) -> Uuid {
        Uuid::from_u128(u128::from(self.0.fetch_add(1, Ordering::Relaxed) + 1))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn random_ids_are_v4_and_distinct_across_pool_refills() {
        let ids: HashSet<Uuid> = (0..10_000).map(|_| RandomIds.new_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.get_version_num() == 4));
    }
}
