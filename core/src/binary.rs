//! What every binary's `main` does around its `run`: `--help`, reading the configuration
//! (exit 2 naming every bad variable), logging, and reporting a failure once.

use std::{process::ExitCode, sync::Arc};

use crate::{Config, config::LogFormat, telemetry, traces};

/// Prints `usage` and returns `true` when the arguments ask for help.
pub fn help_requested(usage: &str) -> bool {
    let asked = std::env::args()
        .skip(1)
        .any(|a| matches!(a.as_str(), "-h" | "--help" | "help"));
    if asked {
        println!("{usage}");
    }
    asked
}

/// The configuration from the environment, with logging started; or the exit code to leave
/// with after saying what is wrong.
pub fn start(name: &str) -> Result<Arc<Config>, ExitCode> {
    match Config::from_env() {
        Ok(config) => {
            let traces = config
                .otlp_endpoint
                .as_deref()
                .map(|endpoint| traces::Export::new(endpoint, name));
            telemetry::init_with(config.log_format, &config.log_filter, traces.as_ref());
            Ok(Arc::new(config))
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// What a binary's `main` returns once `run` is over: the spans still waiting are sent first.
pub fn finished(name: &str, config: &Config, result: anyhow::Result<()>) -> ExitCode {
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(name, config, &e),
    };
    traces::flush();
    code
}

/// Reports a failed run once: as a JSON log line when logs are JSON (what collects them reads
/// it), else as one plain line.
fn failed(name: &str, config: &Config, e: &anyhow::Error) -> ExitCode {
    match config.log_format {
        LogFormat::Json => tracing::error!(error = format!("{e:#}"), "{name} failed"),
        LogFormat::Pretty => eprintln!("{name}: {e:#}"),
    }
    ExitCode::FAILURE
}

/// The lines every binary's usage ends with.
pub const CONFIGURED_BY: &str = "Configured by HERALD_* environment variables (README, \"Configuration\"); \
HERALD_DATABASE_URL and HERALD_REDIS_URL are required. Stops cleanly on SIGTERM or SIGINT.";
