//! OpenTelemetry traces. With `HERALD_OTLP_ENDPOINT` set, every binary exports its spans over
//! OTLP/HTTP (protobuf) in batches: the API request, the Postgres commit and the Redis push of
//! a message, the job that sends it (queue, attempt, lease), the provider call, the model
//! call, the status callback. One trace follows a message: the W3C `traceparent` of the span
//! that queued it travels in the job (and in the status callback's URL), an incoming
//! `traceparent` header on the API is honoured, and outbound webhooks carry one.
//!
//! Without the variable no layer is installed: spans stay the log's own, no context is read
//! or written anywhere ([`enabled`] is one atomic load), and nothing is exported.

use std::{
    collections::HashMap,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Where and how a process exports its spans.
#[derive(Debug, Clone)]
pub struct Export {
    /// The OTLP/HTTP traces URL (`.../v1/traces`).
    pub endpoint: String,
    /// `service.name`: `herald-api`, `herald-worker`, `herald-scheduler`.
    pub service: String,
    /// How long finished spans wait to be sent in one batch.
    pub every: Duration,
}

impl Export {
    pub fn new(endpoint: &str, service: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            service: service.to_owned(),
            every: Duration::from_secs(2),
        }
    }
}

/// Whether spans are exported (and trace context read and written).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The layer that turns `tracing` spans into OpenTelemetry spans and exports them, for
/// [`crate::telemetry::init`]. `None` when the exporter cannot be built (logged), so a bad
/// collector address never stops the work.
pub fn layer<S>(export: &Export) -> Option<impl tracing_subscriber::Layer<S> + use<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&export.endpoint)
        .with_timeout(Duration::from_secs(10))
        .build();
    let exporter = match exporter {
        Ok(e) => e,
        Err(e) => {
            eprintln!("HERALD_OTLP_ENDPOINT: cannot export traces: {e}");
            return None;
        }
    };
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(export.every)
                // What a collector that is down costs: at most this many spans held.
                .with_max_queue_size(8_192)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(
            Resource::builder()
                .with_service_name(export.service.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("herald");
    if PROVIDER.set(provider).is_err() {
        return None;
    }
    global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false),
    )
}

/// Sends what is left to send, at the end of a process.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// The W3C `traceparent` of `span`, when traces are on.
pub fn traceparent_of(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent")
}

/// The `traceparent` of the current span, when traces are on.
pub fn traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&Span::current())
}

/// Names the current span's OpenTelemetry span `name` (a request's, once its route is
/// known), when traces are on.
pub fn rename_current(name: String) {
    if enabled() {
        use opentelemetry::trace::TraceContextExt as _;
        Span::current().context().span().update_name(name);
    }
}

/// Makes `span` a child of the remote span `traceparent` names (a job's, a request's), when
/// traces are on and it is well formed; call it before the span is first entered.
pub fn follow(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|_| enabled()) else {
        return;
    };
    if traceparent.len() > 64 {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(cx);
}
