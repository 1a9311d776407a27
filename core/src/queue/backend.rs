//! The worker side of the queue engine: an apalis [`Backend`] that leases jobs from Redis,
//! and the middleware that settles each job with Redis when its handler returns.
//!
//! Per worker process and queue there are four small tasks:
//! - the fetcher leases up to `concurrency` jobs (in batches, one round trip each) and hands
//!   them to apalis; when nothing is due it sleeps until the next due time, a push
//!   notification, or `idle_poll`, whichever comes first;
//! - the heartbeat extends the leases of every job this process holds, in one call;
//! - the subscriber turns Redis pub/sub notifications into wake-ups for the fetcher;
//! - the acker acknowledges finished jobs in batches.
//!
//! A job's lease is taken before it is handed to apalis and released only through Redis (ack,
//! retry, dead, or hand-back at shutdown), so a process that dies leaves nothing behind that
//! another worker cannot take once the lease expires.

use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    backend::{Backend, BackendConfig, finalize::Ephemeral},
    error::{AbortError, BoxDynError},
    task::{Task, builder::TaskBuilder, task_id::RandomId, task_id::TaskId},
    worker::context::WorkerContext,
};
use futures_util::{
    FutureExt, StreamExt,
    future::{BoxFuture, try_join_all},
};
use rand::RngExt;
use serde::de::DeserializeOwned;
use tokio::{
    sync::{Notify, Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};
use tracing::{Instrument, debug, error, info_span, warn};

use super::{
    BUCKET_TTL_SECS, CHUNK, Pace, Queue, QueueError,
    job::{JobError, JobMeta},
    now_ms,
};

/// How a worker process uses one queue.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs leased at once by this process (running plus handed to apalis).
    pub concurrency: usize,
    /// How long a fetched job is held before another worker may take it; the heartbeat
    /// extends it every third of this while the handler runs.
    pub lease: Duration,
    /// The most jobs leased in one round trip.
    pub batch: usize,
    /// The longest an idle fetcher sleeps without a notification, in case one was lost.
    pub idle_poll: Duration,
}

impl WorkerOptions {
    pub fn new(concurrency: usize, lease: Duration) -> Self {
        Self {
            concurrency: concurrency.max(1),
            lease,
            batch: 100,
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// One leased job as the fetch script returns it.
struct Leased {
    id: String,
    part: usize,
    payload: String,
    attempt: u32,
    /// The job was released from its sender's pace: its slot is taken.
    paced: bool,
}

struct FetchResult {
    jobs: Vec<Leased>,
    /// When nothing was leased: the time something next becomes due (ms), or -1.
    hint: i64,
}

impl Queue {
    async fn fetch(
        &self,
        part: usize,
        n: usize,
        lease: Duration,
        token: &str,
    ) -> Result<FetchResult, QueueError> {
        let now = now_ms();
        let values: Vec<redis::Value> = self
            .invoke(part, &self.inner.scripts.fetch, now)
            .arg(now)
            .arg(n)
            .arg(lease.as_millis() as u64)
            .arg(token)
            .arg(self.inner.max_attempts)
            .arg(CHUNK)
            .arg(BUCKET_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await?;
        let mut it = values.into_iter();
        let hint = match it.next() {
            Some(redis::Value::Int(h)) => h,
            _ => -1,
        };
        let mut jobs = Vec::new();
        while let (Some(id), Some(payload), Some(attempt), Some(granted)) =
            (it.next(), it.next(), it.next(), it.next())
        {
            jobs.push(Leased {
                id: redis::from_redis_value(id)?,
                part,
                payload: redis::from_redis_value(payload)?,
                attempt: redis::from_redis_value(attempt)?,
                paced: redis::from_redis_value::<i64>(granted)? == 1,
            });
        }
        Ok(FetchResult { jobs, hint })
    }

    /// Acknowledges finished jobs, one round trip per partition they are in (at once).
    async fn ack_many(&self, ids: &[(String, usize)], token: &str) -> Result<usize, QueueError> {
        let acks = by_partition(ids).into_iter().map(|(part, ids)| async move {
            let now = now_ms();
            let mut inv = self.invoke(part, &self.inner.scripts.ack, now);
            inv.arg(BUCKET_TTL_SECS).arg(now);
            for id in ids {
                inv.arg(id).arg(token);
            }
            let n: usize = inv.invoke_async(&mut self.conn()).await?;
            Ok::<_, QueueError>(n)
        });
        Ok(try_join_all(acks).await?.into_iter().sum())
    }

    async fn settle(
        &self,
        id: &str,
        part: usize,
        token: &str,
        settle: &Settle,
    ) -> Result<String, QueueError> {
        let now = now_ms();
        let (kind, due, error) = match settle {
            Settle::Retry { delay, error } => {
                ("retry", now + delay.as_millis() as i64, error.as_str())
            }
            Settle::RetryAt { at_ms, error } => ("retry_at", *at_ms, error.as_str()),
            Settle::Defer { at_ms, reason } => ("defer", *at_ms, reason.as_str()),
            Settle::Dead { error } => ("dead", now, error.as_str()),
            Settle::Park(pace) => return self.park(id, part, token, pace).await,
        };
        Ok(self
            .invoke(part, &self.inner.scripts.settle, now)
            .arg(now)
            .arg(id)
            .arg(token)
            .arg(kind)
            .arg(due)
            .arg(error)
            .arg(self.inner.max_attempts)
            .arg(BUCKET_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await?)
    }

    async fn park(
        &self,
        id: &str,
        part: usize,
        token: &str,
        pace: &Pace,
    ) -> Result<String, QueueError> {
        let now = now_ms();
        Ok(self
            .invoke(part, &self.inner.scripts.park, now)
            .arg(now)
            .arg(id)
            .arg(token)
            .arg(&pace.sender)
            .arg(match pace.priority {
                crate::domain::Priority::Transactional => "0",
                crate::domain::Priority::Bulk => "1",
            })
            .arg(pace.cost)
            .arg(pace.rate)
            .invoke_async(&mut self.conn())
            .await?)
    }

    /// Extends the leases of `ids` (with their partitions); returns those no longer held.
    async fn extend(
        &self,
        ids: &[(String, usize)],
        lease: Duration,
        token: &str,
    ) -> Result<Vec<String>, QueueError> {
        let extends = by_partition(ids).into_iter().map(|(part, ids)| async move {
            let mut lost = Vec::new();
            for chunk in ids.chunks(CHUNK) {
                let now = now_ms();
                let mut inv = self.invoke(part, &self.inner.scripts.extend, now);
                inv.arg(now + lease.as_millis() as i64).arg(token);
                for id in chunk {
                    inv.arg(*id);
                }
                let l: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
                lost.extend(l);
            }
            Ok::<_, QueueError>(lost)
        });
        Ok(try_join_all(extends).await?.into_iter().flatten().collect())
    }

    /// Hands the leases of `ids` (with their partitions) back; returns how many were held.
    async fn release(&self, ids: &[(String, usize)], token: &str) -> Result<usize, QueueError> {
        let releases = by_partition(ids).into_iter().map(|(part, ids)| async move {
            let mut total = 0;
            for chunk in ids.chunks(CHUNK) {
                let mut inv = self.invoke(part, &self.inner.scripts.release, now_ms());
                inv.arg(token);
                for id in chunk {
                    inv.arg(*id);
                }
                let n: usize = inv.invoke_async(&mut self.conn()).await?;
                total += n;
            }
            Ok::<_, QueueError>(total)
        });
        Ok(try_join_all(releases).await?.into_iter().sum())
    }
}

/// Job ids grouped by partition.
fn by_partition(ids: &[(String, usize)]) -> HashMap<usize, Vec<&str>> {
    let mut parts: HashMap<usize, Vec<&str>> = HashMap::new();
    for (id, part) in ids {
        parts.entry(*part).or_default().push(id);
    }
    parts
}

/// How a finished attempt is settled in Redis.
enum Settle {
    Retry {
        delay: Duration,
        error: String,
    },
    RetryAt {
        at_ms: i64,
        error: String,
    },
    Defer {
        at_ms: i64,
        reason: String,
    },
    Dead {
        error: String,
    },
    /// Wait behind the sender's pace.
    Park(Pace),
}

/// State shared by a worker process's tasks for one queue.
struct Shared {
    queue: Queue,
    opts: WorkerOptions,
    /// Names this process's leases, so an ack from a process whose lease was reclaimed
    /// cannot remove a job another worker now runs.
    token: Arc<str>,
    /// Jobs this process holds a lease on, with their partitions: the heartbeat extends them,
    /// shutdown hands back whatever is left.
    leased: Mutex<HashMap<String, usize>>,
    /// One permit per job this process may lease; a finished job gives its permit back.
    capacity: Semaphore,
    /// Wakes a partition's idle fetcher (a push notification arrived).
    wake: Vec<Notify>,
    acks: mpsc::UnboundedSender<(String, usize)>,
    acks_rx: Mutex<Option<mpsc::UnboundedReceiver<(String, usize)>>>,
    /// Stops the background tasks of this process for this queue.
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn leased(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.leased.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Settles a finished job with Redis and gives its permit back.
    async fn finish(&self, meta: &JobMeta, result: &Result<(), String>, verdict: Option<Settle>) {
        match (result, verdict) {
            (Ok(()), _) => {
                // The acker removes the id from `leased` once Redis has the ack, so the
                // heartbeat keeps the lease alive until then.
                if self.acks.send((meta.id.clone(), meta.partition)).is_err() {
                    self.leased().remove(&meta.id);
                }
            }
            (Err(_), Some(settle)) => {
                let mut tries = 0;
                loop {
                    match self
                        .queue
                        .settle(&meta.id, meta.partition, &self.token, &settle)
                        .await
                    {
                        Ok(outcome) => {
                            log_settled(meta, &settle, &outcome);
                            break;
                        }
                        Err(e) if tries < 3 => {
                            tries += 1;
                            warn!(queue = %meta.queue, job_id = %meta.id, error = %e, "could not settle a failed job; trying again");
                            tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                        }
                        Err(e) => {
                            error!(queue = %meta.queue, job_id = %meta.id, error = %e,
                                "could not settle a failed job; it runs again when its lease expires");
                            break;
                        }
                    }
                }
                self.leased().remove(&meta.id);
            }
            (Err(_), None) => {
                self.leased().remove(&meta.id);
            }
        }
        self.capacity.add_permits(1);
    }
}

fn log_settled(meta: &JobMeta, settle: &Settle, outcome: &str) {
    let recorded = match (settle, outcome) {
        (_, "lost") => "lost",
        (_, "dead") => "dead",
        (Settle::Defer { .. }, _) => "deferred",
        (Settle::Park(_), _) => "paced",
        _ => "retried",
    };
    ::metrics::counter!("herald_jobs_total", "queue" => meta.queue.clone(), "outcome" => recorded)
        .increment(1);
    match (settle, outcome) {
        (_, "lost") => warn!(queue = %meta.queue, job_id = %meta.id, attempt = meta.attempt,
            "the job's lease was lost while it ran; its new holder decides"),
        (_, "dead") => {
            let error = match settle {
                Settle::Retry { error, .. }
                | Settle::RetryAt { error, .. }
                | Settle::Dead { error } => error.as_str(),
                Settle::Defer { reason, .. } => reason.as_str(),
                Settle::Park(_) => "",
            };
            error!(queue = %meta.queue, job_id = %meta.id, attempt = meta.attempt, error = %error, "job is dead")
        }
        (Settle::Retry { delay, error }, _) => {
            warn!(queue = %meta.queue, job_id = %meta.id, attempt = meta.attempt,
            delay_ms = delay.as_millis() as u64, error = %error, "job failed; retry scheduled")
        }
        (Settle::RetryAt { at_ms, error }, _) => {
            warn!(queue = %meta.queue, job_id = %meta.id, attempt = meta.attempt,
            in_ms = at_ms - now_ms(), error = %error, "job failed; retry scheduled")
        }
        (Settle::Defer { at_ms, reason }, _) => debug!(queue = %meta.queue, job_id = %meta.id,
            in_ms = at_ms - now_ms(), reason = %reason, "job deferred"),
        (Settle::Park(pace), _) => debug!(queue = %meta.queue, job_id = %meta.id,
            sender = %pace.sender, "job waits for its sender's pace"),
        (Settle::Dead { .. }, _) => {}
    }
}

/// A handle on a worker process's state for one queue, kept outside apalis so that a forced
/// shutdown can still hand back the leases of jobs that did not finish.
#[derive(Clone)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("queue", &self.shared.queue.name())
            .finish()
    }
}

impl WorkerHandle {
    /// Jobs this process holds a lease on.
    pub fn leased(&self) -> usize {
        self.shared.leased().len()
    }

    /// Stops fetching and hands every lease this process still holds back to the queue, so
    /// another worker takes those jobs at once. Returns how many were handed back.
    pub async fn release_all(&self) -> Result<usize, QueueError> {
        self.shared.cancel.cancel();
        let ids: Vec<(String, usize)> = self.shared.leased().drain().collect();
        if ids.is_empty() {
            return Ok(0);
        }
        self.shared.queue.release(&ids, &self.shared.token).await
    }
}

/// An apalis backend over one Herald queue, yielding `Task<J>`.
pub struct QueueBackend<J> {
    shared: Arc<Shared>,
    rx: Option<mpsc::Receiver<Task<J>>>,
    tx: Option<mpsc::Sender<Task<J>>>,
    closing: Option<BoxFuture<'static, ()>>,
    _job: PhantomData<fn() -> J>,
}

impl<J> std::fmt::Debug for QueueBackend<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBackend")
            .field("queue", &self.shared.queue.name())
            .finish()
    }
}

impl<J: DeserializeOwned + Send + 'static> QueueBackend<J> {
    pub fn new(queue: Queue, opts: WorkerOptions) -> Self {
        let token: Arc<str> = format!(
            "{}:{}:{:08x}",
            hostname(),
            std::process::id(),
            rand::rng().random::<u32>()
        )
        .into();
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::channel(opts.concurrency);
        let parts = queue.partitions();
        let shared = Arc::new(Shared {
            capacity: Semaphore::new(opts.concurrency),
            queue,
            opts,
            token,
            leased: Mutex::new(HashMap::new()),
            wake: (0..parts).map(|_| Notify::new()).collect(),
            acks,
            acks_rx: Mutex::new(Some(acks_rx)),
            cancel: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        });
        Self {
            shared,
            rx: Some(rx),
            tx: Some(tx),
            closing: None,
            _job: PhantomData,
        }
    }

    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Starts the fetcher, heartbeat, subscriber and acker on the first poll.
    fn start(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        let s = &self.shared;
        let acks_rx = s
            .acks_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut tasks = s.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        for part in 0..s.queue.partitions() {
            tasks.push(tokio::spawn(fetch_loop::<J>(s.clone(), part, tx.clone())));
        }
        tasks.push(tokio::spawn(heartbeat_loop(s.clone())));
        tasks.push(tokio::spawn(subscribe_loop(s.clone())));
        if let Some(rx) = acks_rx {
            tasks.push(tokio::spawn(ack_loop(s.clone(), rx)));
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

impl<J: DeserializeOwned + Send + 'static> Backend for QueueBackend<J> {
    type Task = Task<J>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.start();
        match self.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx).map(|task| task.map(Ok)),
            None => Poll::Ready(None),
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.closing.is_none() {
            let shared = self.shared.clone();
            let rx = self.rx.take();
            self.closing = Some(close(shared, rx).boxed());
        }
        match self.closing.as_mut() {
            Some(fut) => fut.poll_unpin(cx).map(Ok),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Graceful close: stop fetching, hand back jobs leased but never started, flush the acks.
async fn close<J>(shared: Arc<Shared>, rx: Option<mpsc::Receiver<Task<J>>>) {
    shared.cancel.cancel();
    let tasks: Vec<JoinHandle<()>> =
        std::mem::take(&mut *shared.tasks.lock().unwrap_or_else(PoisonError::into_inner));
    for task in tasks {
        let _ = task.await;
    }
    let mut unstarted = Vec::new();
    if let Some(mut rx) = rx {
        rx.close();
        let mut leased = shared.leased();
        while let Ok(task) = rx.try_recv() {
            if let Some(TaskId::String(id)) = task.task_id()
                && let Some(part) = leased.remove(id)
            {
                unstarted.push((id.clone(), part));
            }
        }
    }
    if !unstarted.is_empty() {
        match shared.queue.release(&unstarted, &shared.token).await {
            Ok(n) => {
                debug!(queue = %shared.queue.name(), released = n, "handed back jobs that had not started")
            }
            Err(e) => {
                warn!(queue = %shared.queue.name(), error = %e, "could not hand back unstarted jobs; they run when their lease expires")
            }
        }
    }
}

/// Leases the due jobs of one partition while there is room: every partition has its own
/// fetcher, and they wait for room in turn (the semaphore is fair), so no partition starves.
async fn fetch_loop<J: DeserializeOwned + Send + 'static>(
    shared: Arc<Shared>,
    part: usize,
    tx: mpsc::Sender<Task<J>>,
) {
    let opts = shared.opts.clone();
    let name = shared.queue.name().to_owned();
    let mut backoff = Duration::from_millis(50);
    // A fetch that reached Redis, even an empty one, is a turn of a live worker; one that
    // waits for room behind handlers that never finish is not.
    let heartbeat =
        ::metrics::gauge!("herald_worker_heartbeat_timestamp_seconds", "queue" => name.clone());
    loop {
        let Some(n) = room(&shared).await else { return };
        let batch = match shared.queue.fetch(part, n, opts.lease, &shared.token).await {
            Ok(batch) => {
                heartbeat.set(now_ms() as f64 / 1000.0);
                backoff = Duration::from_millis(50);
                batch
            }
            Err(e) => {
                shared.capacity.add_permits(n);
                warn!(queue = %name, error = %e, retry_in_ms = backoff.as_millis() as u64, "could not fetch jobs");
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };

        let got = batch.jobs.len();
        shared.capacity.add_permits(n - got);
        let mut jobs = batch.jobs.into_iter();
        while let Some(job) = jobs.next() {
            if !hand_over(&shared, &tx, &name, job).await {
                // The worker stopped: the rest of the batch goes straight back too.
                let rest: Vec<(String, usize)> = jobs.map(|j| (j.id, j.part)).collect();
                if !rest.is_empty() {
                    let _ = shared.queue.release(&rest, &shared.token).await;
                }
                return;
            }
        }

        if got == 0 {
            let wait = if batch.hint < 0 {
                opts.idle_poll
            } else {
                Duration::from_millis(u64::try_from(batch.hint - now_ms()).unwrap_or(0))
                    .min(opts.idle_poll)
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = shared.wake[part].notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Waits for room and takes it: never lease more jobs than this process can run. Returns how
/// many jobs to lease (at least one, at most a batch), or `None` when the worker stops.
async fn room(shared: &Shared) -> Option<usize> {
    let first = tokio::select! {
        _ = shared.cancel.cancelled() => return None,
        permit = shared.capacity.acquire() => permit,
    };
    first.ok()?.forget();
    let mut n = 1;
    let extra = shared
        .capacity
        .available_permits()
        .min(shared.opts.batch.saturating_sub(1));
    if extra > 0
        && let Ok(more) = shared.capacity.try_acquire_many(extra as u32)
    {
        more.forget();
        n += extra;
    }
    Some(n)
}

/// Hands one leased job to the worker. A payload that cannot be decoded goes dead at once.
/// Returns false when the worker is gone or stopping (the job is handed back to the queue).
async fn hand_over<J: DeserializeOwned>(
    shared: &Shared,
    tx: &mpsc::Sender<Task<J>>,
    name: &str,
    job: Leased,
) -> bool {
    let meta = JobMeta {
        id: job.id.clone(),
        attempt: job.attempt,
        queue: name.to_owned(),
        paced: job.paced,
        partition: job.part,
    };
    shared.leased().insert(job.id.clone(), job.part);
    if shared.cancel.is_cancelled() {
        // Stopped while this fetch was on its way: hand the job straight back. The stop drains
        // `leased` after cancelling, so whichever of the two sees the job releases it (a
        // second release of it finds no lease and does nothing).
        shared.leased().remove(&job.id);
        let _ = shared
            .queue
            .release(&[(job.id.clone(), job.part)], &shared.token)
            .await;
        return false;
    }
    let args = match serde_json::from_str::<J>(&job.payload) {
        Ok(args) => args,
        Err(e) => {
            let settle = Settle::Dead {
                error: format!("the job's payload could not be decoded: {e}"),
            };
            shared
                .finish(&meta, &Err(String::new()), Some(settle))
                .await;
            return true;
        }
    };
    let task = TaskBuilder::new(args)
        .task_id(TaskId::String(job.id.clone()))
        // apalis counts the attempt up by one when the task starts.
        .attempt(job.attempt.saturating_sub(1) as usize)
        .data(meta)
        .build();
    if tx.send(task).await.is_err() {
        // The worker is gone: hand the job straight back.
        shared.leased().remove(&job.id);
        shared.capacity.add_permits(1);
        let _ = shared
            .queue
            .release(&[(job.id.clone(), job.part)], &shared.token)
            .await;
        return false;
    }
    true
}

async fn heartbeat_loop(shared: Arc<Shared>) {
    let every = shared.opts.lease / 3;
    let name = shared.queue.name().to_owned();
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let ids: Vec<(String, usize)> = shared
            .leased()
            .iter()
            .map(|(id, part)| (id.clone(), *part))
            .collect();
        if ids.is_empty() {
            continue;
        }
        match shared
            .queue
            .extend(&ids, shared.opts.lease, &shared.token)
            .await
        {
            Ok(lost) if !lost.is_empty() => {
                warn!(queue = %name, lost = lost.len(), "leases were reclaimed by another worker; their jobs run there");
            }
            Ok(_) => {}
            Err(e) => warn!(queue = %name, error = %e, "could not extend leases"),
        }
    }
}

/// Turns push notifications into wake-ups of the partitions' fetchers. On a cluster it listens
/// on one node (every node hears every `PUBLISH`) and goes round the nodes while one is down.
async fn subscribe_loop(shared: Arc<Shared>) {
    let channels: HashMap<String, usize> = shared
        .queue
        .inner
        .parts
        .iter()
        .enumerate()
        .map(|(part, k)| (k.notify.clone(), part))
        .collect();
    let name = shared.queue.name().to_owned();
    let wake_all = || shared.wake.iter().for_each(Notify::notify_one);
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        let connected = async {
            let mut pubsub = shared.queue.inner.redis.pubsub(attempt).await?;
            for channel in channels.keys() {
                pubsub.subscribe(channel).await?;
            }
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            p = connected => p,
        };
        attempt += 1;
        match pubsub {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(100);
                // Anything may have been pushed while we were not listening.
                wake_all();
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        _ = shared.cancel.cancelled() => return,
                        msg = messages.next() => match msg {
                            Some(msg) => match channels.get(msg.get_channel_name()) {
                                Some(part) => shared.wake[*part].notify_one(),
                                None => wake_all(),
                            },
                            None => break,
                        }
                    }
                }
                debug!(queue = %name, "notification connection closed; reconnecting");
            }
            Err(e) => {
                debug!(queue = %name, error = %e, "could not subscribe to notifications");
            }
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn ack_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(String, usize)>) {
    let name = shared.queue.name().to_owned();
    let mut batch: Vec<(String, usize)> = Vec::new();
    loop {
        if batch.is_empty() {
            let first = tokio::select! {
                id = rx.recv() => id,
                _ = shared.cancel.cancelled() => {
                    // Shutting down: flush what is queued, then stop.
                    rx.close();
                    rx.recv().await
                }
            };
            match first {
                Some(job) => batch.push(job),
                None => return,
            }
        }
        while batch.len() < CHUNK {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match shared.queue.ack_many(&batch, &shared.token).await {
            Ok(_) => {
                let mut leased = shared.leased();
                for (id, _) in batch.drain(..) {
                    leased.remove(&id);
                }
            }
            Err(e) => {
                warn!(queue = %name, error = %e, pending = batch.len(), "could not acknowledge jobs; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shared.cancel.cancelled() => {
                        // One last try, then leave them to lease expiry.
                        if shared.queue.ack_many(&batch, &shared.token).await.is_err() {
                            warn!(queue = %name, pending = batch.len(), "acknowledgements lost at shutdown; those jobs run again");
                        }
                        let mut leased = shared.leased();
                        for (id, _) in batch.drain(..) {
                            leased.remove(&id);
                        }
                    }
                }
            }
        }
    }
}

impl<J: Send + 'static> BackendConfig for QueueBackend<J> {
    type Args = J;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = WorkerOptions;
    type Layer = QueueLayer;

    fn config(&self) -> &Self::Config {
        &self.shared.opts
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        QueueLayer {
            shared: self.shared.clone(),
        }
    }
}

/// Settles every job with Redis once the handler stack below it has finished.
#[derive(Clone)]
pub struct QueueLayer {
    shared: Arc<Shared>,
}

impl<S> Layer<S> for QueueLayer {
    type Service = QueueService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        QueueService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct QueueService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, J, R> Service<Task<J>> for QueueService<S>
where
    S: Service<Task<J>, Response = R>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = R;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<R, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<J>) -> Self::Future {
        let meta = task.data().get::<JobMeta>().cloned();
        let shared = self.shared.clone();
        let span = match &meta {
            Some(m) => info_span!("job", queue = %m.queue, job_id = %m.id, attempt = m.attempt),
            None => info_span!("job"),
        };
        let fut = self.inner.call(task);
        async move {
            let started = std::time::Instant::now();
            let res = fut.await.map_err(Into::into);
            if let Some(meta) = &meta {
                ::metrics::histogram!("herald_job_duration_seconds", "queue" => meta.queue.clone())
                    .record(started.elapsed().as_secs_f64());
                if res.is_ok() {
                    ::metrics::counter!("herald_jobs_total", "queue" => meta.queue.clone(), "outcome" => "completed")
                        .increment(1);
                }
            }
            if let Some(meta) = meta {
                match &res {
                    Ok(_) => shared.finish(&meta, &Ok(()), None).await,
                    Err(e) => {
                        let settle = verdict(&shared, &meta, e);
                        shared
                            .finish(&meta, &Err(e.to_string()), Some(settle))
                            .await;
                    }
                }
            }
            res
        }
        .instrument(span)
        .boxed()
    }
}

/// Turns a handler's error into how the job is settled.
fn verdict(shared: &Shared, meta: &JobMeta, error: &BoxDynError) -> Settle {
    let text = |s: &str| crate::domain::truncate(s, 2000);
    match error.downcast_ref::<JobError>() {
        Some(JobError::Transient {
            message,
            retry_after,
        }) => Settle::Retry {
            delay: shared.queue.policy().delay(meta.attempt, *retry_after),
            error: text(message),
        },
        Some(JobError::RetryAt { message, at_ms }) => Settle::RetryAt {
            at_ms: *at_ms,
            error: text(message),
        },
        Some(JobError::Defer { reason, at_ms }) => Settle::Defer {
            at_ms: *at_ms,
            reason: text(reason),
        },
        Some(JobError::Permanent(message)) => Settle::Dead {
            error: text(message),
        },
        Some(JobError::Park(pace)) => Settle::Park(pace.clone()),
        None => {
            let message = if let Some(abort) = error.downcast_ref::<AbortError>() {
                format!("the handler panicked: {abort}")
            } else {
                error.to_string()
            };
            Settle::Retry {
                delay: shared.queue.policy().delay(meta.attempt, None),
                error: text(&message),
            }
        }
    }
}
