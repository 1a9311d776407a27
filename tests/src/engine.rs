//! The queue engine on its own: a queue under a fresh prefix of the test Redis, and apalis
//! workers on it with whatever handler a test needs.

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::{Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use herald_core::queue::{
    self, JobError, JobMeta, Queue, QueueBackend, RetryPolicy, WorkerHandle, WorkerOptions,
};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{redis_url, unique};

pub struct Engine {
    pub queue: Queue,
    pub prefix: String,
    pub name: String,
    pub redis: queue::Redis,
}

/// A running in-process worker.
pub struct EngineWorker {
    token: CancellationToken,
    task: JoinHandle<()>,
    pub handle: WorkerHandle,
}

impl EngineWorker {
    /// Graceful stop: SIGTERM's path (finish within the shutdown bound, then hand leases back).
    pub async fn stop(self) {
        self.token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

impl Engine {
    pub async fn new(max_attempts: u32, policy: RetryPolicy) -> Self {
        Self::with_partitions(None, max_attempts, policy).await
    }

    /// A queue in `partitions` partitions (`None`: the default for the test Redis, one).
    pub async fn with_partitions(
        partitions: Option<usize>,
        max_attempts: u32,
        policy: RetryPolicy,
    ) -> Self {
        crate::app::init_logs();
        let prefix = unique("q");
        let name = "jobs".to_owned();
        let redis = queue::connect(&redis_url()).unwrap();
        let queue = Queue::new(
            redis.clone(),
            &prefix,
            &name,
            partitions.unwrap_or_else(|| queue::default_partitions(&redis)),
            max_attempts,
            policy,
        );
        Self {
            queue,
            prefix,
            name,
            redis,
        }
    }

    /// A second handle on the same queue, as another process would have.
    pub fn same_queue(&self) -> Queue {
        Queue::new(
            self.redis.clone(),
            &self.prefix,
            &self.name,
            self.queue.partitions(),
            self.queue.max_attempts(),
            *self.queue.policy(),
        )
    }

    /// Starts a worker whose jobs are JSON values handled by `handler`.
    pub fn worker<F, Fut>(
        &self,
        options: WorkerOptions,
        shutdown_timeout: Duration,
        handler: F,
    ) -> EngineWorker
    where
        F: Fn(Value, JobMeta) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        Self::worker_on(self.same_queue(), options, shutdown_timeout, handler)
    }

    /// [`Self::worker`] on this handle of the queue (as another process configured it).
    pub fn worker_on<F, Fut>(
        queue: Queue,
        options: WorkerOptions,
        shutdown_timeout: Duration,
        handler: F,
    ) -> EngineWorker
    where
        F: Fn(Value, JobMeta) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let backend = QueueBackend::<Value>::new(queue, options);
        let handle = backend.handle();
        let slot = Arc::new(std::sync::Mutex::new(Some(backend)));
        let token = CancellationToken::new();
        let monitor = Monitor::new()
            .shutdown_timeout(shutdown_timeout)
            .register(move |_| {
                let backend = slot
                    .lock()
                    .unwrap()
                    .take()
                    .expect("this test worker is not restarted");
                let handler = handler.clone();
                WorkerBuilder::new("test-worker")
                    .backend(backend)
                    .catch_panic()
                    .build(move |job: Value, meta: Data<JobMeta>| {
                        let handler = handler.clone();
                        async move { handler(job, meta.0).await }
                    })
            });
        let stop = token.clone();
        let release = handle.clone();
        let task = tokio::spawn(async move {
            let _ = monitor
                .run_with_signal(async move {
                    stop.cancelled().await;
                    Ok(())
                })
                .await;
            let _ = release.release_all().await;
        });
        EngineWorker {
            token,
            task,
            handle,
        }
    }

    /// Keys under this queue's prefix.
    pub async fn keys(&self) -> Vec<String> {
        let pattern = format!("{{{}:*", self.prefix);
        crate::scan_keys(&self.redis, &pattern).await
    }

    /// Bytes Redis uses for this queue's keys (`MEMORY USAGE`, summed).
    pub async fn memory(&self) -> u64 {
        let mut conn = self.redis.clone();
        let mut total = 0;
        for key in self.keys().await {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await
                .unwrap();
            total += bytes.unwrap_or(0);
        }
        total
    }
}
