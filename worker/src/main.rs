//! herald-worker: deliver messages until SIGTERM or SIGINT.

use std::process::ExitCode;

use herald_core::{binary, shutdown};

const USAGE: &str = "usage: herald-worker

Delivers messages and answers inbound texts: the apalis workers of the `deliveries` and
`ai-replies` queues.
";

#[tokio::main]
async fn main() -> ExitCode {
    if binary::help_requested(&format!("{USAGE}\n{}", binary::CONFIGURED_BY)) {
        return ExitCode::SUCCESS;
    }
    let config = match binary::start("herald-worker") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result = herald_worker::run(config.clone(), shutdown::on_signal()).await;
    binary::finished("herald-worker", &config, result)
}
