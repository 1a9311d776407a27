//! Logging: JSON lines by default, human-readable with `HERALD_LOG_FORMAT=pretty`; and, with
//! `HERALD_OTLP_ENDPOINT`, the same spans exported as OpenTelemetry traces (see
//! [`crate::traces`]).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{config::LogFormat, traces};

/// Installs the global subscriber. Safe to call more than once (later calls do nothing), so
/// tests that start several apps in one process can all call it.
pub fn init(format: LogFormat, filter: &str) {
    init_with(format, filter, None);
}

/// [`init`], exporting spans as `traces` says when it is given.
pub fn init_with(format: LogFormat, filter: &str, traces: Option<&traces::Export>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(traces.and_then(traces::layer));
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    // Every enclosing span's fields (the job's queue and attempt, the
                    // delivery's message, tenant and request), not just the innermost's.
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_target(true),
            )
            .try_init(),
        // Colours only for a terminal: a file or a pipe gets plain text.
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .try_init(),
    };
}
