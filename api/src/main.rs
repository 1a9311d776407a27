//! herald-api: serve the HTTP API, or `herald-api migrate` to migrate the schema and exit.

use std::{process::ExitCode, sync::Arc, time::Duration};

use herald_core::{Config, db, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("herald-api: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format, &config.log_filter);
    let result = match std::env::args().nth(1).as_deref() {
        None | Some("serve") => herald_api::run(config, shutdown::on_signal()).await,
        Some("migrate") => migrate(&config).await,
        Some(other) => {
            eprintln!("herald-api: unknown command `{other}` (commands: serve, migrate)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "herald-api failed");
            eprintln!("herald-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    herald_core::install_crypto();
    let pool = db::pool(config.database_url.expose(), 2)?;
    herald_api::migrate_with_retry(&pool, Duration::from_secs(60)).await
}
