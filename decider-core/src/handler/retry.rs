//! How often and how patiently a command is tried again.

use std::time::Duration;

use crate::backoff;

/// How often and how patiently the handler retries a command that lost an optimistic-concurrency
/// race, and a command with an idempotency key that met an unavailable store.
///
/// A command *without* an idempotency key is never retried after
/// [`StoreError::Unavailable`](crate::StoreError::Unavailable): the append may have committed before the connection dropped,
/// and a retry would decide again and could write twice. With a key, the key fixes the event
/// ids, so a retry of an append that did commit is recognised as its repeat and answered with
/// the original outcome (`replayed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Reloads after the first conflict; `0` returns the first conflict.
    pub max_retries: u32,
    /// Upper bound of the first backoff after a conflict; doubles with every retry.
    pub base_delay: Duration,
    /// Upper bound of any backoff after a conflict.
    pub max_delay: Duration,
    /// Retries of a keyed command after [`StoreError::Unavailable`](crate::StoreError::Unavailable); `0` returns the first
    /// such error. Default 5.
    pub unavailable_retries: u32,
    /// The first pause before such a retry; doubles with every one, up to 1 s, and is drawn
    /// from the upper half of that bound. Default 50 ms (so the default policy gives a store
    /// about 1.5 s to come back).
    pub unavailable_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(100),
            unavailable_retries: 5,
            unavailable_delay: Duration::from_millis(50),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0-based): uniformly random up to the capped
    /// exponential bound ("full jitter"), so that writers that collided spread out.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        backoff::full_jitter(backoff::capped(self.base_delay, retry, self.max_delay))
    }

    /// The pause before retry number `retry` (0-based) of a keyed command whose store was
    /// unavailable: never short, since the store needs time to come back.
    pub(crate) fn unavailable_backoff(&self, retry: u32) -> Duration {
        let max = Duration::from_secs(1).max(self.unavailable_delay);
        backoff::equal_jitter(backoff::capped(self.unavailable_delay, retry, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_capped_exponential_bound() {
        let policy = RetryPolicy::default();
        for retry in 0..40 {
            let bound =
                (policy.base_delay * 2u32.saturating_pow(retry.min(20))).min(policy.max_delay);
            assert!(policy.backoff(retry) <= bound);
        }
    }
}
