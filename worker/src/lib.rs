//! herald-worker: apalis workers on Herald's Redis queue engine, under one monitor:
//! `herald-deliveries` sends messages, `herald-ai-replies` answers inbound texts.
//! `run` is what the binary calls; tests call it too.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context;
use apalis::{
    layers::tracing::{DefaultOnFailure, TraceLayer},
    prelude::{Data, Monitor, WorkerBuilder, WorkerBuilderExt},
};
use herald_core::{
    Config, db,
    domain::{
        events::EventJob,
        jobs::{AiJob, DeliveryJob},
    },
    providers::llm::Assistant,
    queue::{self, JobError, JobMeta, QueueBackend, WorkerHandle, WorkerOptions},
    ratelimit::RateLimiter,
    services::{
        delivery::{self, BATCH_CONNECTIONS, Deliverer},
        events::{self, EventSender},
        messages::Intake,
        replies::{self, Replier},
    },
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, info, warn};

/// Sends one message: the `deliveries` queue's handler.
async fn send_message(
    job: DeliveryJob,
    meta: Data<JobMeta>,
    deliverer: Data<Arc<Deliverer>>,
) -> Result<(), JobError> {
    // Every line of this job carries its message, tenant and the request that caused it.
    let span = tracing::info_span!(
        "delivery",
        message_id = %job.message_id,
        tenant_id = job.tenant_id.as_deref().unwrap_or_default(),
        request_id = job.request_id.as_deref().unwrap_or_default(),
        // The trace's fields stay empty (and out of the logs) unless traces are on.
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        queue = tracing::field::Empty,
        attempt = tracing::field::Empty,
        partition = tracing::field::Empty,
        lease_ms = tracing::field::Empty,
    );
    if herald_core::traces::enabled() {
        span.record("otel.name", "job deliveries");
        span.record("otel.kind", "consumer");
        span.record("queue", meta.queue.as_str());
        span.record("attempt", meta.attempt);
        span.record("partition", meta.partition);
        span.record("lease_ms", deliverer.lease.as_millis() as u64);
        // The message's trace, begun by the request (or the schedule) that queued it.
        herald_core::traces::follow(&span, job.traceparent.as_deref());
    }
    delivery::deliver(&deliverer, &job, &meta)
        .instrument(span)
        .await
}

/// Answers an inbound text or writes a daily AI message: the `ai-replies` queue's handler.
async fn answer_text(job: AiJob, replier: Data<Arc<Replier>>) -> Result<(), JobError> {
    replies::run(&replier, &job).await
}

/// Posts one event to one endpoint: the `events` queue's handler.
async fn post_event(job: EventJob, sender: Data<Arc<EventSender>>) -> Result<(), JobError> {
    let span = tracing::info_span!(
        "event",
        event_id = %job.event_id,
        endpoint_id = %job.endpoint_id,
        tenant_id = %job.tenant_id,
    );
    events::deliver(&sender, &job).instrument(span).await
}

/// apalis's tracing layer, quiet about jobs that return an error: the queue engine logs each
/// settled job once at the level its fate deserves (a job put off by an open circuit is no
/// ERROR, and thousands of them would bury the one line saying the circuit opened).
fn job_tracing() -> TraceLayer {
    TraceLayer::new().on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
}

/// Runs the workers until `shutdown` is cancelled. In-flight jobs get
/// `HERALD_SHUTDOWN_TIMEOUT_MS` to finish; the leases of any still running are then handed
/// back so another worker takes them at once, and the outcomes and pushes still batched
/// are written before the process exits.
pub async fn run(config: Arc<Config>, shutdown: CancellationToken) -> anyhow::Result<()> {
    herald_core::install_crypto();
    // Before anything is counted: a recorder installed at the first scrape would lose
    // everything counted until then.
    herald_core::metrics::install();
    let pool = db::pool(config.database_url.expose(), config.database_pool_size)
        .context("HERALD_DATABASE_URL")?;
    let batch_pool = db::batch_pool(config.database_url.expose(), BATCH_CONNECTIONS)
        .context("HERALD_DATABASE_URL")?;
    tokio::select! {
        ready = db::wait_for_schema(&pool, Duration::from_secs(120)) => ready?,
        _ = shutdown.cancelled() => return Ok(()),
    }
    let redis = queue::connect(config.redis_url.expose()).context("HERALD_REDIS_URL")?;
    let limiter = RateLimiter::new(redis.clone(), &config.queue_prefix);
    let tasks = TaskTracker::new();
    let queue::Queues {
        deliveries,
        replies,
        events,
    } = queue::Queues::adopted(&config, &redis).await;
    let replier = Replier {
        db: pool.clone(),
        assistant: Assistant::from_config(&config),
        intake: Intake::start(pool.clone(), deliveries.clone(), &tasks),
        replies_per_hour: config.ai_replies_per_hour,
    };
    let workers = Workers {
        events,
        event_sender: EventSender::from_config(&config, pool.clone(), &tasks),
        replies,
        deliverer: Arc::new(
            Deliverer::from_config(&config, pool, batch_pool, Some(limiter), &tasks)
                .with_pacing(deliveries.clone()),
        ),
        replier: Arc::new(replier),
        deliveries,
    };
    workers.announce(&config);
    if let Some(addr) = config.worker_metrics_listen {
        let queues = vec![
            workers.deliveries.clone(),
            workers.replies.clone(),
            workers.events.clone(),
        ];
        tokio::spawn(herald_core::metrics::serve(
            addr,
            queues,
            shutdown.child_token(),
        ));
    }

    // Kept outside apalis so leases can be handed back even after a forced shutdown.
    let handles: Arc<Mutex<Vec<WorkerHandle>>> = Arc::default();
    let signal = shutdown.clone();
    let result = workers
        .monitor(&config, handles.clone())
        .run_with_signal(async move {
            signal.cancelled().await;
            Ok(())
        })
        .await;
    if let Err(e) = &result {
        warn!(error = %e, "a worker stopped with an error");
    }
    let handles = std::mem::take(&mut *handles.lock().unwrap_or_else(PoisonError::into_inner));
    release_leases(handles).await;
    // The monitor (and with it every handle on the batchers) is gone.
    herald_core::shutdown::drain(&tasks, Duration::from_secs(10)).await;
    info!("herald-worker stopped");
    result.context("running workers")
}

/// What the two workers share across restarts of their apalis workers.
struct Workers {
    deliveries: queue::Queue,
    replies: queue::Queue,
    events: queue::Queue,
    deliverer: Arc<Deliverer>,
    replier: Arc<Replier>,
    event_sender: Arc<EventSender>,
}

impl Workers {
    fn announce(&self, config: &Config) {
        info!(
            sms = self.deliverer.sms.name(),
            email = self.deliverer.email.name(),
            llm = config.llm.as_ref().map_or("none", |l| l.model.as_str()),
            llm_fallback = config
                .llm_fallback
                .as_ref()
                .map_or("none", |l| l.model.as_str()),
            concurrency = config.worker_concurrency,
            lease_ms = config.lease.as_millis() as u64,
            "herald-worker starting"
        );
    }

    /// One monitor over both workers; each registers its backend's handle in `handles`.
    fn monitor(self, config: &Config, handles: Arc<Mutex<Vec<WorkerHandle>>>) -> Monitor {
        let Workers {
            deliveries,
            replies,
            events,
            deliverer,
            replier,
            event_sender,
        } = self;
        let job_timeout = config.delivery_job_timeout();
        // Two model calls per endpoint, each bounded, plus the database.
        let reply_timeout = config.llm_timeout * 5 + Duration::from_secs(30);
        let options = WorkerOptions::new(config.worker_concurrency, config.lease);
        let reply_options =
            WorkerOptions::new(config.worker_concurrency.div_ceil(4).max(1), config.lease);
        let keep = move |handle: WorkerHandle| {
            handles
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(handle);
        };
        let keep_reply = keep.clone();
        let keep_event = keep.clone();
        let event_options = options.clone();
        // One call, bounded by the provider timeout, and the database around it.
        let event_timeout = config.provider_timeout + Duration::from_secs(30);
        Monitor::new()
            .shutdown_timeout(config.shutdown_timeout)
            .register(move |_restarts| {
                let backend = QueueBackend::<DeliveryJob>::new(deliveries.clone(), options.clone());
                keep(backend.handle());
                WorkerBuilder::new("herald-deliveries")
                    .backend(backend)
                    .data(deliverer.clone())
                    .timeout(job_timeout)
                    .catch_panic()
                    .layer(job_tracing())
                    .build(send_message)
            })
            .register(move |_restarts| {
                let backend = QueueBackend::<AiJob>::new(replies.clone(), reply_options.clone());
                keep_reply(backend.handle());
                WorkerBuilder::new("herald-ai-replies")
                    .backend(backend)
                    .data(replier.clone())
                    .timeout(reply_timeout)
                    .catch_panic()
                    .layer(job_tracing())
                    .build(answer_text)
            })
            .register(move |_restarts| {
                let backend = QueueBackend::<EventJob>::new(events.clone(), event_options.clone());
                keep_event(backend.handle());
                WorkerBuilder::new("herald-events")
                    .backend(backend)
                    .data(event_sender.clone())
                    .timeout(event_timeout)
                    .catch_panic()
                    .layer(job_tracing())
                    .build(post_event)
            })
    }
}

/// Hands the leases of jobs that did not finish back to the queue, so another worker takes
/// them now instead of when the leases expire.
async fn release_leases(handles: Vec<WorkerHandle>) {
    for handle in handles {
        match handle.release_all().await {
            Ok(0) => {}
            Ok(n) => info!(
                released = n,
                "handed back the leases of jobs that did not finish"
            ),
            Err(e) => {
                warn!(error = %e, "could not hand back leases; those jobs run again when their leases expire")
            }
        }
    }
}
