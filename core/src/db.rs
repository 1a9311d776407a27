//! Postgres: the pool, the embedded migrations, and waiting for the schema.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};
use tracing::info;

/// The migrations in `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool whose acquire fails within a few seconds when Postgres is down, so the API answers
/// 503 quickly instead of after a 30 s pool timeout. Connects lazily: a process can start
/// before Postgres does.
pub fn pool(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    options(size).connect_lazy(url)
}

/// A worker's pool for its batched statements (claims, outcomes, put-offs; see
/// [`crate::batch`]): a few connections of their own, on which a prepared statement is
/// planned once and its generic plan kept. Those statements have one shape whatever their
/// arrays hold, and planning the claim takes milliseconds. Left to its default, Postgres
/// plans a prepared statement afresh for its first five runs on each connection: a worker
/// spread over a pool of 20 paid that a hundred times at every start, and again whenever an
/// idle connection was replaced.
pub fn batch_pool(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    options(size)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(conn, "SET plan_cache_mode = force_generic_plan").await?;
                Ok(())
            })
        })
        .connect_lazy(url)
}

fn options(size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
}

/// `host:port/database` of a Postgres URL, for messages (never its user or password).
pub fn describe(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => "(an unreadable HERALD_DATABASE_URL)".to_owned(),
    }
}

/// Runs pending migrations (herald-api does this at start).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await?;
    info!(
        migrations = MIGRATOR.iter().count(),
        "database schema is up to date"
    );
    Ok(())
}

/// Waits until every embedded migration has been applied (by herald-api), so the worker and
/// the scheduler never run against an older schema. Gives up after `timeout`.
pub async fn wait_for_schema(pool: &PgPool, timeout: Duration) -> anyhow::Result<()> {
    let wanted: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut logged = false;
    loop {
        let applied: Result<Vec<i64>, sqlx::Error> = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(pool)
        .await;
        match applied {
            Ok(applied) if wanted.iter().all(|v| applied.contains(v)) => return Ok(()),
            Ok(_) | Err(_) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!(
                    "the database schema was not migrated within {timeout:?}: start herald-api or run `herald-api migrate`"
                )
            }
            result => {
                if !logged {
                    match result {
                        Ok(_) => info!("waiting for herald-api to migrate the database schema"),
                        Err(e) => info!(error = %e, "waiting for Postgres and its schema"),
                    }
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}
