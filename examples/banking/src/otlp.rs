//! Span export over OTLP (feature `otlp`): a `tracing-opentelemetry` layer whose tracer sends
//! spans over HTTP/protobuf to `OTEL_EXPORTER_OTLP_ENDPOINT` (and the other standard `OTEL_*`
//! variables), and a [`TraceHook`] that makes the OpenTelemetry span ids the ones stored in the
//! events' `traceparent`, so that a saga's span is parented on the command that wrote its event
//! even across a restart. Without the variable, no exporter starts.

use decider_core::{SpanId, TraceHook, TraceId, TraceParent, set_trace_hook};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState, TracerProvider};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

/// The variable that turns the export on.
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The layer that hands spans to the exporter.
pub type ExportLayer<S> = OpenTelemetryLayer<S, Tracer>;

/// The running export; [`shutdown`](Self::shutdown) sends the spans still buffered.
#[derive(Debug)]
pub struct Otlp {
    provider: SdkTracerProvider,
}

/// The exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the OTLP span exporter: {0}")]
pub struct OtlpError(#[from] opentelemetry_otlp::ExporterBuildError);

/// The export layer, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: spans go out in batches, from
/// the SDK's own thread. Sets the process's [`TraceHook`].
pub fn from_env<S>() -> Result<Option<(ExportLayer<S>, Otlp)>, OtlpError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if std::env::var_os(ENDPOINT).is_none() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("banking").build())
        .build();
    set_trace_hook(OpenTelemetryIds);
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("banking"));
    Ok(Some((layer, Otlp { provider })))
}

impl Otlp {
    /// Sends what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "the OTLP exporter did not shut down cleanly");
        }
    }
}

/// The span ids of OpenTelemetry, and its parents from the stored trace contexts.
struct OpenTelemetryIds;

impl TraceHook for OpenTelemetryIds {
    fn continue_trace(&self, span: &tracing::Span, parent: &TraceParent) -> Option<SpanId> {
        let remote = SpanContext::new(
            opentelemetry::TraceId::from_bytes(parent.trace_id.to_bytes()),
            opentelemetry::SpanId::from_bytes(parent.parent_id.to_bytes()),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        // Refused for a disabled span (filtered out): the crate then draws an id.
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
            .ok()?;
        let context = span.context();
        SpanId::new(u64::from_be_bytes(
            context.span().span_context().span_id().to_bytes(),
        ))
    }

    fn start_trace(&self, span: &tracing::Span) -> Option<TraceParent> {
        let context = span.context();
        let own = context.span().span_context().clone();
        Some(TraceParent {
            trace_id: TraceId::new(u128::from_be_bytes(own.trace_id().to_bytes()))?,
            parent_id: SpanId::new(u64::from_be_bytes(own.span_id().to_bytes()))?,
            flags: own.trace_flags().to_u8(),
        })
    }
}
