//! Pauses between retries: a bound that doubles per retry up to a cap, and where below it to
//! wait. One place for the arithmetic the command handler and the projection runner share.

use std::time::Duration;

/// `base` doubled `doublings` times, at most `max` (no overflow, however many doublings).
pub(crate) fn capped(base: Duration, doublings: u32, max: Duration) -> Duration {
    base.saturating_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
        .min(max)
}

/// Anywhere from nothing to `bound` ("full jitter"): writers that collided spread out most.
pub(crate) fn full_jitter(bound: Duration) -> Duration {
    Duration::from_nanos(fastrand::u64(0..=nanos(bound)))
}

/// Anywhere in the upper half of `bound` ("equal jitter"): spread out, yet never at once, for
/// waits on something that needs time to come back.
pub(crate) fn equal_jitter(bound: Duration) -> Duration {
    let nanos = nanos(bound);
    Duration::from_nanos(nanos / 2 + fastrand::u64(0..=nanos - nanos / 2))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
