//! herald-api: serve the HTTP API, or `herald-api migrate` to migrate the schema and exit.

use std::{process::ExitCode, time::Duration};

use herald_core::{Config, binary, db, shutdown};

const USAGE: &str = "usage: herald-api [serve | migrate]

  serve     serve the HTTP API on HERALD_LISTEN (the default); runs pending migrations first
  migrate   apply the database migrations and exit
";

#[tokio::main]
async fn main() -> ExitCode {
    if binary::help_requested(&format!("{USAGE}\n{}", binary::CONFIGURED_BY)) {
        return ExitCode::SUCCESS;
    }
    let command = std::env::args().nth(1);
    if let Some(other) = command
        .as_deref()
        .filter(|c| !matches!(*c, "serve" | "migrate"))
    {
        eprintln!("herald-api: unknown command `{other}`\n\n{USAGE}");
        return ExitCode::from(2);
    }
    let config = match binary::start("herald-api") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result = match command.as_deref() {
        Some("migrate") => migrate(&config).await,
        _ => herald_api::run(config.clone(), shutdown::on_signal()).await,
    };
    binary::finished("herald-api", &config, result)
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    herald_core::install_crypto();
    let pool = db::pool(config.database_url.expose(), 2)?;
    herald_api::migrate_with_retry(
        &pool,
        config.database_url.expose(),
        Duration::from_secs(60),
        &shutdown::on_signal(),
    )
    .await
}
