//! How many decisions were made again after losing a race: the decision handler records each
//! as `decider_command_retries_total{decider, reason="conflict"}` through the `metrics` facade
//! (docs/metrics.md); this reads the count back from the Prometheus recorder banking serves
//! `/metrics` from.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

/// The metric the handler increments before it decides again.
const RETRIES: &str = "decider_command_retries_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's retry counts.
#[derive(Debug, Clone)]
pub struct Retries(PrometheusHandle);

impl Retries {
    /// Installs the Prometheus recorder as the process's metrics recorder, once; later calls
    /// share it. Fails if another recorder was installed first.
    pub fn install() -> Result<Self, BuildError> {
        if let Some(handle) = HANDLE.get() {
            return Ok(Self(handle.clone()));
        }
        let handle = PrometheusBuilder::new().install_recorder()?;
        Ok(Self(HANDLE.get_or_init(|| handle).clone()))
    }

    /// How many times, so far, a handler of the decision model `decider` (the last segment of
    /// its type's path, such as `StudentSubscription`) decided again after its append
    /// condition failed.
    pub fn after_conflicts(&self, decider: &str) -> u64 {
        let labels = [
            format!("decider=\"{decider}\""),
            "reason=\"conflict\"".to_owned(),
        ];
        self.0
            .render()
            .lines()
            .filter_map(|line| line.strip_prefix(RETRIES)?.strip_prefix('{'))
            .filter(|line| labels.iter().all(|label| line.contains(label.as_str())))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            // Counters are whole numbers, rendered as floats.
            .map(|count| count as u64)
            .sum()
    }
}
