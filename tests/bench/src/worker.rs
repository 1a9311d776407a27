//! `herald-bench worker`: one worker process on Herald's queue engine, running no-op jobs
//! (or, for probes, jobs that record when they start and finish). It is the process the
//! benchmark measures, and the one the test suite kills.
//!
//! ```sh
//! herald-bench worker --redis redis://127.0.0.1:6379 --prefix bench1 --queue bench \
//!     --concurrency 200 --lease-ms 10000 --max-attempts 8 --shutdown-ms 5000
//! ```
//! On SIGTERM it stops gracefully and prints one JSON line: jobs processed and the lateness
//! of jobs that carried a due time.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use apalis::prelude::{Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use herald_core::queue::{
    self, JobError, JobMeta, Queue, QueueBackend, RetryPolicy, WorkerOptions, now_ms,
};
use serde::{Deserialize, Serialize};

use crate::flag;

/// A benchmark job: nothing to do but note its lateness, unless told to sleep, fail or
/// record its start and end for a probe.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenchJob {
    /// When it was due (ms since the epoch); 0 if lateness is not measured.
    #[serde(default)]
    pub due_ms: i64,
    #[serde(default)]
    pub sleep_ms: u64,
    /// Record `start`/`done` events in the probe list.
    #[serde(default)]
    pub probe: bool,
    /// Fail every attempt (transiently).
    #[serde(default)]
    pub fail: bool,
}

impl herald_core::queue::QueuedJob for BenchJob {}

/// The Redis list where probe jobs record `"<start|done> <id> <attempt> <pid> <ms>"`.
pub fn probe_key(prefix: &str) -> String {
    format!("{{{prefix}}}:probe")
}

struct Ctx {
    processed: AtomicU64,
    lateness: Mutex<Vec<i64>>,
    redis: queue::Redis,
    probe: String,
}

async fn run_job(job: BenchJob, meta: Data<JobMeta>, ctx: Data<Arc<Ctx>>) -> Result<(), JobError> {
    if job.due_ms > 0 {
        let late = now_ms() - job.due_ms;
        ctx.lateness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(late);
    }
    let record = |kind: &'static str| {
        let entry = format!(
            "{kind} {} {} {} {}",
            meta.id,
            meta.attempt,
            std::process::id(),
            now_ms()
        );
        let mut conn = ctx.redis.clone();
        let key = ctx.probe.clone();
        async move {
            let _: Result<i64, _> = redis::cmd("RPUSH")
                .arg(key)
                .arg(entry)
                .query_async(&mut conn)
                .await;
        }
    };
    if job.probe {
        record("start").await;
    }
    if job.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    }
    if job.probe {
        record("done").await;
    }
    ctx.processed.fetch_add(1, Ordering::Relaxed);
    if job.fail {
        return Err(JobError::transient("this job is told to fail"));
    }
    Ok(())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub async fn main(flags: HashMap<String, String>) -> anyhow::Result<()> {
    herald_core::telemetry::init(
        herald_core::config::LogFormat::Json,
        &flag(&flags, "log", "warn".to_owned()),
    );
    let redis_url: String = flag(&flags, "redis", "redis://127.0.0.1:6379".to_owned());
    let prefix: String = flag(&flags, "prefix", "bench".to_owned());
    let name: String = flag(&flags, "queue", "bench".to_owned());
    let concurrency: usize = flag(&flags, "concurrency", 100);
    let lease = Duration::from_millis(flag(&flags, "lease-ms", 10_000));
    let max_attempts: u32 = flag(&flags, "max-attempts", 8);
    let shutdown = Duration::from_millis(flag(&flags, "shutdown-ms", 5_000));
    let retry_base = Duration::from_millis(flag(&flags, "retry-base-ms", 100));
    let retry_max = Duration::from_millis(flag(&flags, "retry-max-ms", 10_000));

    let redis = queue::connect(&redis_url)?;
    let q = Queue::new(
        redis.clone(),
        &prefix,
        &name,
        queue::default_partitions(&redis),
        max_attempts,
        RetryPolicy::new(retry_base, retry_max),
    );
    let ctx = Arc::new(Ctx {
        processed: AtomicU64::new(0),
        lateness: Mutex::new(Vec::new()),
        redis,
        probe: probe_key(&prefix),
    });
    let options = WorkerOptions::new(concurrency, lease);
    let handle = Arc::new(Mutex::new(None));
    let monitor = {
        let ctx = ctx.clone();
        let handle = handle.clone();
        Monitor::new()
            .shutdown_timeout(shutdown)
            .register(move |_| {
                let backend = QueueBackend::<BenchJob>::new(q.clone(), options.clone());
                *handle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(backend.handle());
                WorkerBuilder::new("herald-bench")
                    .backend(backend)
                    .data(ctx.clone())
                    .catch_panic()
                    .build(run_job)
            })
    };
    let token = herald_core::shutdown::on_signal();
    let _ = monitor
        .run_with_signal(async move {
            token.cancelled().await;
            Ok(())
        })
        .await;
    let worker_handle = handle
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(h) = worker_handle {
        let _ = h.release_all().await;
    }

    let mut late = std::mem::take(
        &mut *ctx
            .lateness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    late.sort_unstable();
    let summary = serde_json::json!({
        "processed": ctx.processed.load(Ordering::Relaxed),
        "lateness_ms": {
            "count": late.len(),
            "p50": percentile(&late, 0.50),
            "p99": percentile(&late, 0.99),
            "max": late.last().copied().unwrap_or(0),
            "early": late.iter().filter(|l| **l < 0).count(),
        },
    });
    println!("{summary}");
    Ok(())
}
