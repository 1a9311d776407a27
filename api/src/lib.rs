//! herald-api: the HTTP API. `run` is what the binary calls; tests call [`serve`] with a
//! listener on port 0 to start the very same code.

mod auth;
mod body;
mod csv;
mod error;
mod openapi;
mod ops;
mod requests;
mod routes;
mod state;
mod views;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use herald_core::{
    Config, db, queue,
    services::{messages::Intake, tenants::KeyLookup},
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

pub use state::AppState;

/// Binds `HERALD_LISTEN` and serves until `shutdown` is cancelled.
pub async fn run(config: Arc<Config>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("could not listen on {} (HERALD_LISTEN)", config.listen))?;
    serve(config, listener, shutdown).await
}

/// Migrates the schema (waiting up to a minute for Postgres), then serves on `listener`
/// until `shutdown` is cancelled; in-flight requests finish and queued pushes are flushed.
pub async fn serve(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    herald_core::install_crypto();
    // Before anything is counted: a recorder installed at the first scrape would lose
    // everything counted until then.
    herald_core::metrics::install();
    let db = db::pool(config.database_url.expose(), config.database_pool_size)
        .context("HERALD_DATABASE_URL")?;
    migrate_with_retry(
        &db,
        config.database_url.expose(),
        Duration::from_secs(60),
        &shutdown,
    )
    .await?;
    if shutdown.is_cancelled() {
        return Ok(());
    }
    let redis = queue::connect(config.redis_url.expose()).context("HERALD_REDIS_URL")?;
    let limiter = herald_core::ratelimit::RateLimiter::new(redis.clone(), &config.queue_prefix);
    let queue::Queues {
        deliveries: queue,
        replies,
        events,
    } = queue::Queues::adopted(&config, &redis).await;
    let tasks = TaskTracker::new();
    let intake = Arc::new(Intake::start(db.clone(), queue.clone(), &tasks));
    let keys = KeyLookup::start(db.clone(), &tasks);
    let state = AppState {
        config: config.clone(),
        db,
        queue,
        replies,
        events,
        intake,
        keys,
        limiter,
        failed_auth: Arc::default(),
    };
    let app = routes::router(state);
    info!(addr = %listener.local_addr()?, public_url = %config.public_url, "herald-api listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
    .context("serving HTTP")?;
    // Every request is answered and the router (with the batchers' handles) dropped: what
    // they accepted is inserted and pushed before the process exits.
    herald_core::shutdown::drain(&tasks, config.shutdown_timeout).await;
    info!("herald-api stopped");
    Ok(())
}

/// Runs migrations, retrying while Postgres is not up yet; gives up after `within`, saying
/// where it looked, or at once (successfully) when `shutdown` is cancelled meanwhile.
pub async fn migrate_with_retry(
    db: &sqlx::PgPool,
    url: &str,
    within: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    let mut told = false;
    loop {
        let attempt = tokio::select! {
            result = db::migrate(db) => result,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(e))
                if herald_core::store::is_unavailable(&e) =>
            {
                if tokio::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "Postgres at {} did not answer within {} s ({e}); is it running, and is HERALD_DATABASE_URL right?",
                        db::describe(url),
                        within.as_secs()
                    );
                }
                if !told {
                    warn!(postgres = %db::describe(url), error = %e, "Postgres is not reachable yet; retrying");
                    told = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Err(e) => return Err(e).context("running database migrations"),
        }
    }
}
