//! Fault injection for the runtime's tests: refuse an append, or lose its reply after the commit.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use decider_core::StoreError;

/// What happens to one scheduled append.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Fail with this error; write nothing.
    Refuse(StoreError),
    /// Write, then fail with `Unavailable`.
    LoseReply,
}

/// Faults scheduled by append number.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    appends: AtomicU64,
    /// Lets appends skip the mutex while nothing is scheduled, which is almost always.
    armed: AtomicBool,
    scheduled: Mutex<Vec<(u64, Fault)>>,
}

impl Faults {
    /// Schedules `fault` for the `nth` append (1-based) counted from now.
    pub(crate) fn schedule(&self, nth: u64, fault: Fault) {
        let mut scheduled = self.lock();
        let at = self.appends.load(Ordering::SeqCst) + nth;
        scheduled.push((at, fault));
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Counts one append and returns the fault scheduled for it, if any.
    pub(crate) fn next(&self) -> Option<Fault> {
        let number = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.armed.load(Ordering::SeqCst) {
            return None;
        }
        let mut scheduled = self.lock();
        let index = scheduled.iter().position(|(at, _)| *at == number)?;
        let (_, fault) = scheduled.swap_remove(index);
        if scheduled.is_empty() {
            self.armed.store(false, Ordering::SeqCst);
        }
        Some(fault)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Fault)>> {
        self.scheduled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
