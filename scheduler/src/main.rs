//! herald-scheduler: run the cron ticks until SIGTERM or SIGINT.

use std::process::ExitCode;

use herald_core::{binary, shutdown};

const USAGE: &str = "usage: herald-scheduler

Runs the cron ticks: the outbox sweep, the Redis reconcile, the daily tick and retention.
Safe to run more than once.
";

#[tokio::main]
async fn main() -> ExitCode {
    if binary::help_requested(&format!("{USAGE}\n{}", binary::CONFIGURED_BY)) {
        return ExitCode::SUCCESS;
    }
    let config = match binary::start("herald-scheduler") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result = herald_scheduler::run(config.clone(), shutdown::on_signal()).await;
    binary::finished("herald-scheduler", &config, result)
}
