//! herald-scheduler: apalis-cron ticks under one monitor. Every tick's work is safe to run
//! in several scheduler processes at once.
//!
//! - every second, the outbox sweep pushes messages committed in Postgres but never pushed to
//!   Redis (a crash between the two, or Redis down while they were accepted);
//! - every minute (and once at start, to catch up), the daily tick creates each due
//!   subscription's message for its contact's local date, exactly once;
//! - every two seconds, the reconcile checks whether Redis restarted, failed over or lost its
//!   data, and if so queues again every job Postgres says should exist;
//! - every second, the event sweep pushes the jobs of event deliveries committed since its
//!   last step, and group sends with nothing left on their way are marked complete (with
//!   their `group_send.completed` event);
//! - every hour, retention removes expired idempotency keys, old AI-budget records, old daily-run records and old
//!   log-provider records, and the texts (message bodies, conversation texts, error texts, dead-letter
//!   payloads), webhook events and endpoint attempts older than each tenant's `retention_days`;
//! - every five minutes, the usage gauges: each tenant's SMS segments and model tokens today
//!   and on average over its 7 days before (for the alert rule on a tenant's sudden spend).

mod outbox;
pub mod reconcile;

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use apalis::prelude::{Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use apalis_cron::{CronScheduler, Tick};
use herald_core::{
    Config, db, queue,
    services::{events, privacy, usage},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use outbox::sweep;

#[derive(Clone)]
struct Ctx {
    db: PgPool,
    stale_claim: Duration,
    deliveries: queue::Queue,
    replies: queue::Queue,
    events: queue::Queue,
    /// Cancelled at shutdown: a long retention pass stops after its statement under way.
    shutdown: CancellationToken,
    /// The usage gauges' baselines between passes.
    usage: Arc<tokio::sync::Mutex<usage::UsageWatch>>,
}

async fn event_tick(_tick: Tick, ctx: Data<Ctx>) -> Result<(), anyhow::Error> {
    recorded("events", event_work(&ctx)).await
}

async fn event_work(ctx: &Ctx) -> Result<(), anyhow::Error> {
    let completed = events::complete_group_sends(&ctx.db).await?;
    if completed > 0 {
        info!(completed, "group sends completed");
    }
    events::sweep(&ctx.db, &ctx.events).await?;
    Ok(())
}

async fn outbox_tick(_tick: Tick, ctx: Data<Ctx>) -> Result<(), anyhow::Error> {
    recorded("outbox", outbox_work(&ctx)).await
}

async fn outbox_work(ctx: &Ctx) -> Result<(), anyhow::Error> {
    let replies = outbox::sweep_replies(&ctx.db, &ctx.replies).await?;
    if replies > 0 {
        info!(
            replies,
            "outbox sweep queued AI replies that had not reached the queue"
        );
    }
    let pushed = outbox::sweep(&ctx.db, &ctx.deliveries).await?;
    if pushed > 0 {
        info!(
            pushed,
            "outbox sweep pushed messages that had not reached the queue"
        );
    }
    Ok(())
}

async fn reconcile_tick(_tick: Tick, ctx: Data<Ctx>) -> Result<(), anyhow::Error> {
    recorded("reconcile", reconcile_work(&ctx)).await
}

async fn reconcile_work(ctx: &Ctx) -> Result<(), anyhow::Error> {
    reconcile::replies(&ctx.db, &ctx.replies).await?;
    reconcile::events(&ctx.db, &ctx.events).await?;
    reconcile::deliveries(&ctx.db, &ctx.deliveries, ctx.stale_claim).await?;
    Ok(())
}

async fn daily_tick(_tick: Tick, ctx: Data<Ctx>) -> Result<(), anyhow::Error> {
    recorded("daily", daily_work(&ctx)).await
}

async fn daily_work(ctx: &Ctx) -> Result<(), anyhow::Error> {
    herald_core::services::daily::tick(&ctx.db, &ctx.deliveries, &ctx.replies).await?;
    Ok(())
}

async fn retention_tick(_tick: Tick, ctx: Data<Ctx>) -> Result<(), anyhow::Error> {
    recorded("retention", retention_work(&ctx)).await
}

async fn retention_work(ctx: &Ctx) -> Result<(), anyhow::Error> {
    let removed = herald_core::store::retention::remove_expired(&ctx.db).await?;
    if removed.total() > 0 {
        info!(?removed, "retention removed what is of no more use");
    }
    let started = std::time::Instant::now();
    let retained = privacy::retention_pass(
        &ctx.db,
        chrono::Utc::now(),
        privacy::RetentionPace::default(),
        &ctx.shutdown,
    )
    .await?;
    if retained.messages_redacted + retained.events_removed + retained.attempts_removed > 0 {
        info!(
            ?retained,
            took_ms = started.elapsed().as_millis() as u64,
            "retention removed texts older than their tenants keep them"
        );
    }
    Ok(())
}

/// Runs one tick's work and records it for the alert rules: the time of its last success
/// (`herald_scheduler_last_run_timestamp_seconds{task}`), or one more failure.
async fn recorded(
    task: &'static str,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let result = work.await;
    match &result {
        Ok(()) => ::metrics::gauge!("herald_scheduler_last_run_timestamp_seconds", "task" => task)
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0),
        Err(_) => {
            ::metrics::counter!("herald_scheduler_failures_total", "task" => task).increment(1)
        }
    }
    result
}

async fn usage_tick(_tick: Tick, ctx: Data<Ctx>) -> Result<(), anyhow::Error> {
    recorded("usage", async {
        let mut watch = ctx.usage.lock().await;
        watch.record(&ctx.db, chrono::Utc::now()).await?;
        Ok(())
    })
    .await
}

fn schedule(expr: &str) -> anyhow::Result<cron::Schedule> {
    cron::Schedule::from_str(expr).with_context(|| format!("bad cron expression {expr}"))
}

/// Runs the ticks until `shutdown` is cancelled.
pub async fn run(config: Arc<Config>, shutdown: CancellationToken) -> anyhow::Result<()> {
    herald_core::install_crypto();
    // Before anything is counted (see herald_core::metrics::install).
    herald_core::metrics::install();
    let pool = db::pool(config.database_url.expose(), 5).context("HERALD_DATABASE_URL")?;
    tokio::select! {
        ready = db::wait_for_schema(&pool, Duration::from_secs(120)) => ready?,
        _ = shutdown.cancelled() => return Ok(()),
    }
    let redis = queue::connect(config.redis_url.expose()).context("HERALD_REDIS_URL")?;
    let queues = queue::Queues::adopted(&config, &redis).await;
    let ctx = Ctx {
        db: pool,
        stale_claim: config.stale_claim_after(),
        replies: queues.replies,
        events: queues.events,
        shutdown: shutdown.clone(),
        deliveries: queues.deliveries,
        usage: Arc::default(),
    };
    if let Some(addr) = config.scheduler_metrics_listen {
        let queues = vec![
            ctx.deliveries.clone(),
            ctx.replies.clone(),
            ctx.events.clone(),
        ];
        tokio::spawn(herald_core::metrics::serve(
            addr,
            queues,
            shutdown.child_token(),
        ));
    }
    let every_second = schedule("* * * * * *")?;
    let daily = if config.daily_tick_seconds >= 60 {
        schedule("0 * * * * *")?
    } else {
        schedule(&format!("*/{} * * * * *", config.daily_tick_seconds))?
    };
    let every_two_seconds = schedule("*/2 * * * * *")?;
    let hourly = schedule("0 17 * * * *")?;
    let every_five_minutes = schedule("30 */5 * * * *")?;
    info!("herald-scheduler starting");
    // Catch up at once: deliveries due while no scheduler ran go out now, not at the next
    // minute.
    if let Err(e) = recorded("daily", daily_work(&ctx)).await {
        warn!(
            error = format!("{e:#}"),
            "daily catch-up failed; the minute tick retries"
        );
    }

    let monitor = {
        let (c1, c2, c3, c4, c5, c6) = (
            ctx.clone(),
            ctx.clone(),
            ctx.clone(),
            ctx.clone(),
            ctx.clone(),
            ctx,
        );
        let every_second_too = every_second.clone();
        Monitor::new()
            .shutdown_timeout(config.shutdown_timeout)
            .register(move |_| {
                WorkerBuilder::new("herald-outbox-sweep")
                    .backend(CronScheduler::new(every_second.clone()))
                    .data(c1.clone())
                    .enable_tracing()
                    .catch_panic()
                    .concurrency(1)
                    .build(outbox_tick)
            })
            .register(move |_| {
                WorkerBuilder::new("herald-event-sweep")
                    .backend(CronScheduler::new(every_second_too.clone()))
                    .data(c5.clone())
                    .enable_tracing()
                    .catch_panic()
                    .concurrency(1)
                    .build(event_tick)
            })
            .register(move |_| {
                WorkerBuilder::new("herald-reconcile")
                    .backend(CronScheduler::new(every_two_seconds.clone()))
                    .data(c4.clone())
                    .enable_tracing()
                    .catch_panic()
                    .concurrency(1)
                    .build(reconcile_tick)
            })
            .register(move |_| {
                WorkerBuilder::new("herald-daily")
                    .backend(CronScheduler::new(daily.clone()))
                    .data(c2.clone())
                    .enable_tracing()
                    .catch_panic()
                    .concurrency(1)
                    .build(daily_tick)
            })
            .register(move |_| {
                WorkerBuilder::new("herald-retention")
                    .backend(CronScheduler::new(hourly.clone()))
                    .data(c3.clone())
                    .enable_tracing()
                    .catch_panic()
                    .concurrency(1)
                    .build(retention_tick)
            })
            .register(move |_| {
                WorkerBuilder::new("herald-usage")
                    .backend(CronScheduler::new(every_five_minutes.clone()))
                    .data(c6.clone())
                    .enable_tracing()
                    .catch_panic()
                    .concurrency(1)
                    .build(usage_tick)
            })
    };
    let result = monitor
        .run_with_signal(async move {
            shutdown.cancelled().await;
            Ok(())
        })
        .await;
    if let Err(e) = &result {
        warn!(error = %e, "a scheduler tick stopped with an error");
    }
    info!("herald-scheduler stopped");
    result.context("running scheduler ticks")
}
