//! herald-scheduler: run the cron ticks until SIGTERM or SIGINT.

use std::{process::ExitCode, sync::Arc};

use herald_core::{Config, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("herald-scheduler: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format, &config.log_filter);
    match herald_scheduler::run(config, shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "herald-scheduler failed");
            eprintln!("herald-scheduler: {e:#}");
            ExitCode::FAILURE
        }
    }
}
