//! Herald's queue engine: durable jobs in Redis with millisecond due times, leases that a
//! heartbeat extends, persisted retries and a dead set, driven by apalis workers through
//! [`backend::QueueBackend`].
//!
//! [`Queue`] is the client side (push, stats, dead-job administration); the worker side lives
//! in [`backend`]. Both speak to Redis only through the scripts in [`scripts`].

pub mod backend;
pub mod job;
pub mod policy;
mod scripts;

use std::{fmt, sync::Arc, time::Duration};

use redis::{AsyncCommands, Script, aio::ConnectionManager};
use serde::{Serialize, de::DeserializeOwned};

use crate::domain::Priority;

pub use backend::{QueueBackend, WorkerHandle, WorkerOptions};
pub use job::{JobError, JobMeta};
pub use policy::RetryPolicy;

/// The queue that carries one job per outbound message.
pub const DELIVERIES: &str = "deliveries";

/// Promotion, reclaim and listing work in chunks of this many jobs, so no single script
/// call grows with the size of a burst or a backlog.
const CHUNK: usize = 1000;
/// Jobs completed and failed in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteCounts {
    /// The minute's start, in milliseconds since the epoch.
    pub start_ms: i64,
    pub completed: u64,
    pub failed: u64,
}

/// Completed and failed counters live in 5-second buckets for an hour (and a little): the
/// last minute's counts for `stats`, a minute-by-minute hour for `history`.
const BUCKET_SECS: i64 = 5;
const BUCKET_TTL_SECS: i64 = 3_720;

/// Errors talking to Redis or decoding what it holds.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected answer from redis: {0}")]
    Parse(#[from] redis::ParsingError),
    #[error("job payload could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// A Redis connection with bounded connect and response times, so a Redis outage turns into
/// a quick error rather than a hung request. It connects lazily and reconnects by itself: a
/// process starts while Redis is down and recovers when it is back.
pub fn connect(url: &str) -> Result<(redis::Client, ConnectionManager), QueueError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
    Ok((client, manager))
}

/// The keys of one queue, all under the hash tag `{prefix:name}` (see [`scripts`]).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub data: String,
    pub attempts: String,
    pub errors: String,
    pub scheduled: String,
    /// Due jobs as an older version kept them; the fetch drains it into the lanes.
    pub legacy_ready: String,
    pub inflight: String,
    pub lease: String,
    pub dead: String,
    pub notify: String,
    pub ready_tx: String,
    pub ready_bulk: String,
    flow: String,
    vt_tx: String,
    vt_bulk: String,
    weights: String,
    pub pace: String,
    pub pacers: String,
    pub parked: String,
    granted: String,
    /// The Redis server run (`INFO server` run_id) whose data the queue was last reconciled
    /// with Postgres against.
    reconciled: String,
    done: String,
    failed: String,
}

impl Keys {
    fn new(prefix: &str, name: &str) -> Self {
        let tag = format!("{{{prefix}:{name}}}");
        Self {
            data: format!("{tag}:data"),
            attempts: format!("{tag}:attempts"),
            errors: format!("{tag}:errors"),
            scheduled: format!("{tag}:scheduled"),
            legacy_ready: format!("{tag}:ready"),
            inflight: format!("{tag}:inflight"),
            lease: format!("{tag}:lease"),
            dead: format!("{tag}:dead"),
            notify: format!("{tag}:notify"),
            ready_tx: format!("{tag}:ready:0"),
            ready_bulk: format!("{tag}:ready:1"),
            flow: format!("{tag}:flow"),
            vt_tx: format!("{tag}:vt:0"),
            vt_bulk: format!("{tag}:vt:1"),
            weights: format!("{tag}:weights"),
            pace: format!("{tag}:pace"),
            pacers: format!("{tag}:pacers"),
            parked: format!("{tag}:parked"),
            granted: format!("{tag}:granted"),
            reconciled: format!("{tag}:reconciled"),
            done: format!("{tag}:done"),
            failed: format!("{tag}:failed"),
        }
    }

    /// The keys a script gets before the two buckets of `now`, in the order its prelude
    /// names them (the bulk lane's clock follows the buckets).
    fn fixed(&self) -> [&str; 18] {
        [
            &self.data,
            &self.attempts,
            &self.errors,
            &self.scheduled,
            &self.legacy_ready,
            &self.inflight,
            &self.lease,
            &self.dead,
            &self.notify,
            &self.ready_tx,
            &self.ready_bulk,
            &self.flow,
            &self.vt_tx,
            &self.weights,
            &self.pace,
            &self.pacers,
            &self.parked,
            &self.granted,
        ]
    }

    fn bucket(base: &str, now_ms: i64) -> String {
        format!("{base}:{}", now_ms / 1000 / BUCKET_SECS)
    }

    pub fn done_bucket(&self, now_ms: i64) -> String {
        Self::bucket(&self.done, now_ms)
    }

    pub fn failed_bucket(&self, now_ms: i64) -> String {
        Self::bucket(&self.failed, now_ms)
    }
}

pub(crate) struct Scripts {
    pub push: Script,
    pub fetch: Script,
    pub ack: Script,
    pub settle: Script,
    pub extend: Script,
    pub release: Script,
    pub take_slot: Script,
    pub park: Script,
    expected: Script,
    replay: Script,
    delete_dead: Script,
    remove_waiting: Script,
}

impl Scripts {
    fn new() -> Self {
        let script = |lua: scripts::Lua| Script::new(&lua.source());
        Self {
            push: script(scripts::PUSH),
            fetch: script(scripts::FETCH),
            ack: script(scripts::ACK),
            settle: script(scripts::SETTLE),
            extend: script(scripts::EXTEND),
            release: script(scripts::RELEASE),
            take_slot: script(scripts::TAKE_SLOT),
            park: script(scripts::PARK),
            expected: script(scripts::EXPECTED),
            replay: script(scripts::REPLAY),
            delete_dead: script(scripts::DELETE_DEAD),
            remove_waiting: script(scripts::REMOVE_WAITING),
        }
    }
}

pub(crate) struct Inner {
    pub name: String,
    pub keys: Keys,
    pub scripts: Scripts,
    pub client: redis::Client,
    pub conn: ConnectionManager,
    /// Attempts before a job that keeps failing without a handler's verdict (panics,
    /// timeouts, a worker that dies) is moved to the dead set.
    pub max_attempts: u32,
    pub policy: RetryPolicy,
}

/// A handle on one named queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.inner.name)
            .field("keys", &self.inner.keys.data)
            .finish()
    }
}

/// Which lane a job waits in and whose share of the workers it takes: due transactional jobs
/// go before due bulk ones, and within a lane the tenants with due jobs take turns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub priority: Priority,
    /// `None`: a job of no tenant in particular (all such jobs share one turn).
    pub tenant: Option<String>,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            priority: Priority::Transactional,
            tenant: None,
        }
    }
}

impl Flow {
    fn lane(priority: Priority) -> &'static str {
        match priority {
            Priority::Transactional => "0",
            Priority::Bulk => "1",
        }
    }

    /// As the scripts keep it: `lane|tenant`.
    fn encode(&self) -> String {
        format!(
            "{}|{}",
            Self::lane(self.priority),
            self.tenant.as_deref().unwrap_or_default()
        )
    }
}

/// A job payload the queue carries. Its [`Flow`] says which lane and whose turn it is.
pub trait QueuedJob: Serialize {
    fn flow(&self) -> Flow {
        Flow::default()
    }
}

impl QueuedJob for serde_json::Value {}

/// A job to push: its id (pushing an id that is already waiting or running does nothing),
/// its payload, when it is due, and its flow.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub payload: String,
    pub due_ms: i64,
    pub flow: Flow,
}

impl NewJob {
    pub fn new<J: QueuedJob>(
        id: impl Into<String>,
        job: &J,
        due_ms: i64,
    ) -> Result<Self, QueueError> {
        Ok(Self {
            id: id.into(),
            payload: serde_json::to_string(job)?,
            due_ms,
            flow: job.flow(),
        })
    }
}

/// A sender's pace for one job: `cost` segments of `rate` segments per second, taken from
/// `sender`'s slots, in the job's lane; `tenant` gets the rate as its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Pace {
    pub sender: String,
    pub priority: Priority,
    pub cost: u32,
    pub rate: f64,
    pub tenant: String,
}

/// Counts for `GET /v1/admin/queues`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueueStats {
    pub name: String,
    /// Due now and waiting for a worker (or for their sender's pace).
    pub pending: u64,
    /// Of `pending`, parked until their SMS sender's pace lets them go.
    pub paced: u64,
    /// Due later.
    pub scheduled: u64,
    /// Leased by a worker.
    pub running: u64,
    pub dead: u64,
    pub completed_last_minute: u64,
    pub failed_last_minute: u64,
}

/// One failed attempt, as kept with a job.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct AttemptError {
    /// Milliseconds since the epoch.
    pub at: i64,
    pub attempt: u32,
    pub error: String,
}

/// A job in the dead set.
#[derive(Debug, Clone, Serialize)]
pub struct DeadJob {
    pub id: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub errors: Vec<AttemptError>,
    /// Milliseconds since the epoch.
    pub dead_at: i64,
}

/// A page of dead jobs, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct DeadPage {
    pub jobs: Vec<DeadJob>,
    pub next_offset: Option<usize>,
}

/// Which dead jobs to list.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Queue {
    pub fn new(
        client: redis::Client,
        conn: ConnectionManager,
        prefix: &str,
        name: &str,
        max_attempts: u32,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                keys: Keys::new(prefix, name),
                scripts: Scripts::new(),
                client,
                conn,
                max_attempts,
                policy,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }

    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// Pushes one job; returns whether it was added (false: that id is already waiting or
    /// running).
    pub async fn push<J: QueuedJob>(
        &self,
        id: &str,
        job: &J,
        due_ms: i64,
    ) -> Result<bool, QueueError> {
        let added = self.push_many(&[NewJob::new(id, job, due_ms)?]).await?;
        Ok(added == 1)
    }

    /// Pushes many jobs in one round trip; returns how many were added.
    pub async fn push_many(&self, jobs: &[NewJob]) -> Result<usize, QueueError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut total = 0;
        for chunk in jobs.chunks(CHUNK) {
            let now = now_ms();
            let mut inv = self.invoke(&self.inner.scripts.push, now);
            inv.arg(now);
            for job in chunk {
                inv.arg(&job.id)
                    .arg(&job.payload)
                    .arg(job.due_ms)
                    .arg(job.flow.encode());
            }
            let added: usize = inv.invoke_async(&mut self.conn()).await?;
            total += added;
        }
        Ok(total)
    }

    /// Removes a job that has not started yet (a canceled message). Returns whether it was
    /// waiting.
    pub async fn remove_waiting(&self, id: &str) -> Result<bool, QueueError> {
        let removed: i64 = self
            .invoke(&self.inner.scripts.remove_waiting, now_ms())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(removed == 1)
    }

    /// A script invocation with every key of this queue.
    pub(crate) fn invoke<'a>(&self, script: &'a Script, now: i64) -> redis::ScriptInvocation<'a> {
        let k = &self.inner.keys;
        let mut inv = script.prepare_invoke();
        for key in k.fixed() {
            inv.key(key);
        }
        inv.key(k.done_bucket(now))
            .key(k.failed_bucket(now))
            .key(&k.vt_bulk);
        inv
    }

    /// Takes a slot of `pace`'s sender for a job about to be sent. `false`: the sender has no
    /// slot free now, or jobs of the same or a higher lane wait for it; park the job
    /// ([`JobError::Park`]).
    pub async fn take_slot(&self, pace: &Pace) -> Result<bool, QueueError> {
        Ok(self.take_slots(pace, pace.cost).await? > 0)
    }

    /// Like [`Queue::take_slot`], taking up to `want` segments in all while they fall within
    /// the sender's burst; returns the segments taken (0, or at least `pace.cost`).
    pub async fn take_slots(&self, pace: &Pace, want: u32) -> Result<u32, QueueError> {
        let now = now_ms();
        let taken: u32 = self
            .invoke(&self.inner.scripts.take_slot, now)
            .arg(now)
            .arg(&pace.sender)
            .arg(Flow::lane(pace.priority))
            .arg(pace.cost)
            .arg(pace.rate)
            .arg(&pace.tenant)
            .arg(want.max(pace.cost))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(taken)
    }

    /// When each job is expected to be taken by a worker (ms since the epoch), given its
    /// sender's pace and what waits before it; `None` for a job the queue does not hold.
    pub async fn expected(&self, ids: &[&str]) -> Result<Vec<Option<i64>>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut inv = self.invoke(&self.inner.scripts.expected, now);
        inv.arg(now);
        for id in ids {
            inv.arg(*id);
        }
        let at: Vec<i64> = inv.invoke_async(&mut self.conn()).await?;
        Ok(at.into_iter().map(|t| (t >= 0).then_some(t)).collect())
    }

    /// Jobs completed and failed in each of the last `minutes` whole minutes, oldest first (the
    /// dashboard's chart).
    pub async fn history(&self, minutes: usize) -> Result<Vec<MinuteCounts>, QueueError> {
        let k = &self.inner.keys;
        let per_minute = (60 / BUCKET_SECS) as usize;
        let minutes = minutes.min((BUCKET_TTL_SECS / 60) as usize - 1);
        // The first bucket of the minute `minutes - 1` before the current one.
        let now_bucket = now_ms() / 1000 / BUCKET_SECS;
        let first_minute =
            (now_bucket / per_minute as i64 - minutes as i64 + 1) * per_minute as i64;
        let buckets: Vec<i64> = (0..(minutes * per_minute) as i64)
            .map(|i| (first_minute + i) * BUCKET_SECS * 1000)
            .collect();
        let mut pipe = redis::pipe();
        pipe.mget(
            buckets
                .iter()
                .map(|t| k.done_bucket(*t))
                .collect::<Vec<_>>(),
        )
        .mget(
            buckets
                .iter()
                .map(|t| k.failed_bucket(*t))
                .collect::<Vec<_>>(),
        );
        let (done, failed): (Vec<Option<u64>>, Vec<Option<u64>>) =
            pipe.query_async(&mut self.conn()).await?;
        Ok((0..minutes)
            .map(|m| {
                let range = m * per_minute..(m + 1) * per_minute;
                MinuteCounts {
                    start_ms: buckets[range.start],
                    completed: done[range.clone()].iter().flatten().sum(),
                    failed: failed[range].iter().flatten().sum(),
                }
            })
            .collect())
    }

    /// The counts ops look at.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let k = &self.inner.keys;
        let now = now_ms();
        let buckets: Vec<i64> = (0..(60 / BUCKET_SECS))
            .map(|i| now - i * BUCKET_SECS * 1000)
            .collect();
        let mut pipe = redis::pipe();
        pipe.zcard(&k.ready_tx)
            .zcard(&k.ready_bulk)
            .hlen(&k.parked)
            .llen(&k.legacy_ready)
            .zcount(&k.scheduled, "-inf", now)
            .zcount(&k.scheduled, format!("({now}"), "+inf")
            .zcard(&k.inflight)
            .zcard(&k.dead)
            .mget(
                buckets
                    .iter()
                    .map(|t| k.done_bucket(*t))
                    .collect::<Vec<_>>(),
            )
            .mget(
                buckets
                    .iter()
                    .map(|t| k.failed_bucket(*t))
                    .collect::<Vec<_>>(),
            );
        #[allow(clippy::type_complexity)]
        let (tx, bulk, parked, legacy, due, later, running, dead, done, failed): (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            Vec<Option<u64>>,
            Vec<Option<u64>>,
        ) = pipe.query_async(&mut self.conn()).await?;
        Ok(QueueStats {
            name: self.inner.name.clone(),
            pending: tx + bulk + parked + legacy + due,
            paced: parked,
            scheduled: later,
            running,
            dead,
            completed_last_minute: done.into_iter().flatten().sum(),
            failed_last_minute: failed.into_iter().flatten().sum(),
        })
    }

    /// Dead jobs, newest first, `limit` from `offset`.
    pub async fn list_dead(
        &self,
        filter: &DeadFilter,
        offset: usize,
        limit: usize,
    ) -> Result<DeadPage, QueueError> {
        let k = &self.inner.keys;
        let max = filter.until_ms.map_or("+inf".to_owned(), |t| t.to_string());
        let min = filter.since_ms.map_or("-inf".to_owned(), |t| t.to_string());
        let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&k.dead)
            .arg(&max)
            .arg(&min)
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(offset)
            .arg(limit + 1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await?;
        let more = entries.len() > limit;
        let mut jobs = Vec::with_capacity(limit);
        for (id, score) in entries.into_iter().take(limit) {
            if let Some(job) = self.dead_details(id, score as i64).await? {
                jobs.push(job);
            }
        }
        Ok(DeadPage {
            jobs,
            next_offset: more.then_some(offset + limit),
        })
    }

    /// One dead job, if `id` is dead.
    pub async fn get_dead(&self, id: &str) -> Result<Option<DeadJob>, QueueError> {
        let score: Option<f64> = self.conn().zscore(&self.inner.keys.dead, id).await?;
        match score {
            Some(score) => self.dead_details(id.to_owned(), score as i64).await,
            None => Ok(None),
        }
    }

    async fn dead_details(&self, id: String, dead_at: i64) -> Result<Option<DeadJob>, QueueError> {
        let k = &self.inner.keys;
        let (payload, attempts, errors): (Option<String>, Option<u32>, Option<String>) =
            redis::pipe()
                .hget(&k.data, &id)
                .hget(&k.attempts, &id)
                .hget(&k.errors, &id)
                .query_async(&mut self.conn())
                .await?;
        let Some(payload) = payload else {
            return Ok(None);
        };
        let payload = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
        let errors = errors
            .and_then(|raw| serde_json::from_str::<Vec<AttemptError>>(&raw).ok())
            .unwrap_or_default();
        Ok(Some(DeadJob {
            id,
            payload,
            attempts: attempts.unwrap_or(0),
            errors,
            dead_at,
        }))
    }

    /// Replays a dead job with fresh attempts. Returns whether it was dead.
    pub async fn replay_dead(&self, id: &str) -> Result<bool, QueueError> {
        let n: i64 = self
            .invoke(&self.inner.scripts.replay, now_ms())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(n == 1)
    }

    /// Deletes a dead job. Returns whether it was dead.
    pub async fn delete_dead(&self, id: &str) -> Result<bool, QueueError> {
        let n: i64 = self
            .invoke(&self.inner.scripts.delete_dead, now_ms())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(n == 1)
    }

    /// Whether Redis answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The Redis server's current run: `INFO server`'s `run_id`, which changes with every start
    /// (a restart, or a failover to another server).
    pub async fn server_run(&self) -> Result<String, QueueError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn())
            .await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|r| r.trim().to_owned())
            .unwrap_or_default())
    }

    /// Whether this queue's jobs must be checked against Postgres: Redis has restarted, failed
    /// over or lost its data since the last check ([`Queue::mark_reconciled`] with `run`, a
    /// [`Queue::server_run`]), or no check was ever made. Lost data takes the marker with it.
    pub async fn needs_reconcile(&self, run: &str) -> Result<bool, QueueError> {
        let seen: Option<String> = self.conn().get(&self.inner.keys.reconciled).await?;
        Ok(seen.as_deref() != Some(run))
    }

    /// Records that every job Postgres expects is in this queue, as of Redis run `run`.
    pub async fn mark_reconciled(&self, run: &str) -> Result<(), QueueError> {
        let () = self.conn().set(&self.inner.keys.reconciled, run).await?;
        Ok(())
    }

    /// Decodes a payload pushed with [`NewJob::new`].
    pub fn decode<J: DeserializeOwned>(payload: &str) -> Result<J, serde_json::Error> {
        serde_json::from_str(payload)
    }
}

/// The `deliveries` queue as configured. Its own maximum is a backstop above
/// `HERALD_MAX_ATTEMPTS`: the delivery handler counts provider calls itself and settles the
/// message before the queue would give up, but a job that dies before reaching its handler
/// (a worker killed mid-job, again and again) must still end dead.
pub fn deliveries(config: &crate::Config, client: redis::Client, conn: ConnectionManager) -> Queue {
    Queue::new(
        client,
        conn,
        &config.queue_prefix,
        DELIVERIES,
        config.max_attempts + 2,
        RetryPolicy::new(config.retry_base, config.retry_max),
    )
}

/// The queue of AI reply jobs, one per inbound text that wants an answer.
pub const AI_REPLIES: &str = "ai-replies";

/// The `ai-replies` queue as configured. A reply job makes at most two model calls per
/// endpoint; a few attempts cover a worker dying mid-call.
pub fn ai_replies(config: &crate::Config, client: redis::Client, conn: ConnectionManager) -> Queue {
    Queue::new(
        client,
        conn,
        &config.queue_prefix,
        AI_REPLIES,
        5,
        RetryPolicy::new(config.retry_base, config.retry_max),
    )
}

/// The queue of event deliveries, one job per event and endpoint.
pub const EVENTS: &str = "events";

/// The `events` queue as configured. The handler schedules an event's retries itself (the
/// contract's schedule, up to ten hours apart), so they never count against the queue's
/// maximum; that covers only a job that dies before its handler answers, again and again.
pub fn events(config: &crate::Config, client: redis::Client, conn: ConnectionManager) -> Queue {
    Queue::new(
        client,
        conn,
        &config.queue_prefix,
        EVENTS,
        10,
        RetryPolicy::new(config.retry_base, config.retry_max),
    )
}
