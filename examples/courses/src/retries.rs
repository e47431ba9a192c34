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

    /// How many times, so far, a handler of the decision model `M` decided again after its
    /// append condition failed. Handlers name their model in the metrics by the last segment of
    /// its type's path, without generic arguments (`StudentSubscription`), unless they were
    /// given another name.
    pub fn after_conflicts_of<M>(&self) -> u64 {
        let path = std::any::type_name::<M>();
        let path = path.split('<').next().unwrap_or(path);
        self.after_conflicts(path.rsplit("::").next().unwrap_or(path))
    }

    /// How many times, so far, a handler named `decider` decided again after its append
    /// condition failed.
    pub fn after_conflicts(&self, decider: &str) -> u64 {
        conflict_retries(&self.0.render(), decider)
    }
}

/// The count of conflict retries of `decider` in `rendered`, Prometheus' text format.
fn conflict_retries(rendered: &str, decider: &str) -> u64 {
    let labels = [
        format!("decider=\"{decider}\""),
        "reason=\"conflict\"".to_owned(),
    ];
    rendered
        .lines()
        .filter_map(|line| line.strip_prefix(RETRIES)?.strip_prefix('{'))
        .filter(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        // Counters are whole numbers, rendered as floats.
        .map(|count| count as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_conflict_retries_of_one_decider_only() {
        let rendered = "\
# TYPE decider_command_retries_total counter
decider_command_retries_total{decider=\"StudentSubscription\",reason=\"conflict\"} 7
decider_command_retries_total{decider=\"StudentSubscription\",reason=\"unavailable\"} 2
decider_command_retries_total{decider=\"CourseDefinition\",reason=\"conflict\"} 1
decider_command_retries_total_other{decider=\"StudentSubscription\",reason=\"conflict\"} 5
decider_command_conflicts_total{decider=\"StudentSubscription\"} 7
";
        assert_eq!(conflict_retries(rendered, "StudentSubscription"), 7);
        assert_eq!(conflict_retries(rendered, "CourseDefinition"), 1);
        assert_eq!(conflict_retries(rendered, "StudentUnsubscription"), 0);
    }
}
