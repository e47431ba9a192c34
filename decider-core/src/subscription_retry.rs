//! How a store's live subscription rides out a failed query.

use std::time::Duration;

use crate::StoreError;

/// For store adapters: the pauses a live subscription takes before it sends a failed query
/// again, and when it gives up.
///
/// A retryable error ([`StoreError::is_retryable`]: a dropped connection, a file locked past
/// the busy timeout) is tried again after 50, 200 and 800 ms; any other error, or one that
/// outlasts the pauses, ends the subscription with it. Short on purpose: they carry a
/// subscription over a passing fault, and a longer one ends it, after which its consumer (a
/// projection runner, say) resumes from its own checkpoint and reports that it is reconnecting.
///
/// ```
/// # use decider_core::{StoreError, SubscriptionRetry};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let mut retry = SubscriptionRetry::default();
/// // A query failed with a passing fault: pause, then send it again.
/// assert!(retry.after(StoreError::unavailable("connection reset")).await.is_ok());
/// // It succeeded: the next failure starts from the first pause again.
/// retry.succeeded();
/// // A fault retrying cannot fix ends the subscription at once.
/// assert!(retry.after(StoreError::backend("no such table")).await.is_err());
/// # });
/// ```
#[derive(Debug, Default)]
pub struct SubscriptionRetry {
    /// Failed queries in a row.
    failures: usize,
}

impl SubscriptionRetry {
    /// The pauses before the first, second and third retry of a query that keeps failing.
    pub const PAUSES: [Duration; 3] = [
        Duration::from_millis(50),
        Duration::from_millis(200),
        Duration::from_millis(800),
    ];

    /// After `error`: pauses and returns `Ok` if the query is worth sending again (the failure
    /// may pass, and has not lasted too long), else hands the error back for the subscription
    /// to end with.
    pub async fn after(&mut self, error: StoreError) -> Result<(), StoreError> {
        match Self::PAUSES.get(self.failures) {
            Some(pause) if error.is_retryable() => {
                tracing::debug!(retry = self.failures, %error, "subscription query failed; retrying");
                self.failures += 1;
                tokio::time::sleep(*pause).await;
                Ok(())
            }
            _ => Err(error),
        }
    }

    /// A query succeeded: the next failure starts from the first pause.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}
