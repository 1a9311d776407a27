//! herald-worker: deliver messages until SIGTERM or SIGINT.

use std::{process::ExitCode, sync::Arc};

use herald_core::{Config, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("herald-worker: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format, &config.log_filter);
    match herald_worker::run(config, shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "herald-worker failed");
            eprintln!("herald-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
