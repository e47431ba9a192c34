//! `GET /metrics`: the process's metrics in Prometheus' text format.
//!
//! decider-core records its metrics through the `metrics` facade (`docs/metrics.md` lists them);
//! this module installs the Prometheus recorder that keeps them and renders them on request, in
//! the API's own server: no listener of the exporter's.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let handle = banking::metrics::install()?; // before the bank, so its start is counted
//! let running = banking::bank::in_memory();
//! let router = banking::http::router(running.bank().clone())
//!     .merge(banking::metrics::routes(handle));
//! # let _ = router;
//! # Ok(())
//! # }
//! ```

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of every `_seconds` histogram, in seconds: from a warm in-memory command
/// (tens of microseconds) to a slow database round trip under load (seconds).
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// How often the recorder drops what it no longer needs when nobody scrapes it.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's metrics recorder, once; later calls return
/// the same handle. Fails if another recorder was installed first.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
        .install_recorder()?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The `GET /metrics` route, rendering what `handle`'s recorder holds.
pub fn routes(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    )
}

/// Runs the recorder's upkeep every few seconds, forever: histograms drained between scrapes
/// stay bounded. Spawn it next to the server.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        ticks.tick().await;
        handle.run_upkeep();
    }
}
