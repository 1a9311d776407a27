//! Herald's queue engine: durable jobs in Redis with millisecond due times, leases that a
//! heartbeat extends, persisted retries and a dead set, driven by apalis workers through
//! [`backend::QueueBackend`].
//!
//! [`Queue`] is the client side (push, stats, dead-job administration); the worker side lives
//! in [`backend`]. Both speak to Redis only through the scripts in [`scripts`].

pub mod backend;
pub(crate) mod conn;
pub mod job;
pub mod policy;
mod scripts;

use std::{fmt, sync::Arc, time::Duration};

use futures_util::future::try_join_all;
use redis::{AsyncCommands, Script};
use serde::{Serialize, de::DeserializeOwned};

use crate::domain::Priority;

pub use backend::{QueueBackend, WorkerHandle, WorkerOptions};
pub use conn::Redis;
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

/// Connects (lazily) to the Redis server or cluster `url` names; see [`Redis`].
pub fn connect(url: &str) -> Result<Redis, QueueError> {
    Redis::connect(url)
}

/// The keys of one partition of a queue, all under one hash tag (see [`scripts`]): the first
/// partition's is `{prefix:name}`, as before queues had partitions, the others'
/// `{prefix:name:i}`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `{prefix:name}` or `{prefix:name:i}`.
    pub tag: String,
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
    /// id -> a push that met its job running: the run it asks for, started by the ack.
    again: String,
    /// id -> when it entered a ready lane (ms), for the age of the oldest due job.
    since: String,
    /// The Redis server run (`INFO server` run_id) whose data the queue was last reconciled
    /// with Postgres against.
    reconciled: String,
    done: String,
    failed: String,
}

impl Keys {
    fn new(prefix: &str, name: &str, partition: usize) -> Self {
        let tag = match partition {
            0 => format!("{{{prefix}:{name}}}"),
            i => format!("{{{prefix}:{name}:{i}}}"),
        };
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
            again: format!("{tag}:again"),
            since: format!("{tag}:since"),
            reconciled: format!("{tag}:reconciled"),
            done: format!("{tag}:done"),
            failed: format!("{tag}:failed"),
            tag,
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
    oldest_due: Script,
    server_run: Script,
    mark_reconciled: Script,
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
            oldest_due: script(scripts::OLDEST_DUE),
            server_run: Script::new(SERVER_RUN),
            mark_reconciled: Script::new(MARK_RECONCILED),
        }
    }
}

pub(crate) struct Inner {
    prefix: String,
    pub name: String,
    /// One set of keys per partition, each under its own hash tag: every partition this
    /// process fetches, counts and lists (see [`Queue::adopted`]).
    pub parts: Vec<Keys>,
    /// The partitions this process pushes into: `HERALD_QUEUE_PARTITIONS`.
    pub route: usize,
    pub scripts: Scripts,
    pub redis: Redis,
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
            .field("partitions", &self.inner.parts.len())
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

    /// What picks the job's partition, when not its id: a paced job goes with its sender, so
    /// that one partition keeps the sender's pace and the jobs waiting for it.
    fn route(&self) -> Option<&str> {
        None
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
    /// See [`QueuedJob::route`].
    pub route: Option<String>,
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
            route: job.route().map(str::to_owned),
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
#[derive(Debug, Clone, Serialize, PartialEq)]
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
    /// How long the oldest due job has waited to be fetched, in seconds (0 when none waits;
    /// jobs parked for their sender's pace are not counted).
    pub oldest_due_seconds: f64,
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

/// `SERVER RUN` of the partition whose marker is KEYS[1]: the run of the server holding it and
/// the run it was last reconciled against (false: never).
const SERVER_RUN: &str = r#"
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
return {run, redis.call('GET', KEYS[1])}
"#;

/// Marks the partition of KEYS[1] reconciled as of run ARGV[1], unless its server is no longer
/// that run (a failover since the check): the next check then finds it again.
const MARK_RECONCILED: &str = r#"
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
if run ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], run)
return 1
"#;

/// KEYS[1]: the queue's record of the most partitions any process has used; ARGV[1]: this
/// process's. Records them if more, and returns the most.
const PARTITIONS_USED: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local mine = tonumber(ARGV[1])
if mine > used then
  redis.call('SET', KEYS[1], mine)
  used = mine
end
return used
"#;

/// How long a process waits at start to learn the partitions in use ([`Queue::adopted`]).
const ADOPT_WITHIN: Duration = Duration::from_secs(2);

/// A stable hash (FNV-1a), so that every process puts a job in the same partition.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Partitions of one queue by default: one on a single server (whose keys are those of the
/// queue before it had partitions), sixteen on a cluster, to spread a queue over its masters.
pub fn default_partitions(redis: &Redis) -> usize {
    if redis.is_cluster() { 16 } else { 1 }
}

impl Queue {
    /// The queue `name` under `prefix`, split in `partitions` (at least one).
    pub fn new(
        redis: Redis,
        prefix: &str,
        name: &str,
        partitions: usize,
        max_attempts: u32,
        policy: RetryPolicy,
    ) -> Self {
        Self::with_parts(
            redis,
            prefix,
            name,
            partitions.max(1),
            partitions.max(1),
            max_attempts,
            policy,
        )
    }

    fn with_parts(
        redis: Redis,
        prefix: &str,
        name: &str,
        route: usize,
        fetched: usize,
        max_attempts: u32,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                prefix: prefix.to_owned(),
                name: name.to_owned(),
                parts: (0..fetched.max(route))
                    .map(|i| Keys::new(prefix, name, i))
                    .collect(),
                route,
                scripts: Scripts::new(),
                redis,
                max_attempts,
                policy,
            }),
        }
    }

    /// This queue as the deployment uses it. Records this process's partitions in Redis and
    /// learns the most any process has used: when another process (or this one before
    /// `HERALD_QUEUE_PARTITIONS` was lowered) used more, this one fetches, counts and lists
    /// those too, while pushing into its own, so no job is stranded in a partition nobody
    /// fetches. If Redis does not answer within 2 s, the queue is as configured.
    pub async fn adopted(self) -> Self {
        let key = format!("{}:partitions", self.inner.parts[0].tag);
        let script = Script::new(PARTITIONS_USED);
        let mut invocation = script.key(&key);
        invocation.arg(self.inner.route);
        let mut conn = self.conn();
        let ask = invocation.invoke_async::<usize>(&mut conn);
        // A Redis that is down must not hold a process's start up for long.
        let used = match tokio::time::timeout(ADOPT_WITHIN, ask).await {
            Ok(answer) => answer.map_err(QueueError::from),
            Err(_) => Err(QueueError::Timeout(ADOPT_WITHIN)),
        };
        match used {
            Ok(used) if used > self.partitions() => {
                tracing::warn!(
                    queue = %self.inner.name,
                    configured = self.inner.route,
                    used,
                    "HERALD_QUEUE_PARTITIONS is lower here than another process of this deployment used; fetching and counting all of them"
                );
                Self::with_parts(
                    self.inner.redis.clone(),
                    &self.inner.prefix,
                    &self.inner.name,
                    self.inner.route,
                    used,
                    self.inner.max_attempts,
                    self.inner.policy,
                )
            }
            Ok(_) => self,
            Err(e) => {
                tracing::warn!(queue = %self.inner.name, error = %e,
                    "could not read the partitions other processes used; using this process's");
                self
            }
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

    pub fn partitions(&self) -> usize {
        self.inner.parts.len()
    }

    pub(crate) fn conn(&self) -> Redis {
        self.inner.redis.clone()
    }

    /// The partition a job routed by `route` (its id, or [`QueuedJob::route`]) is pushed to.
    pub fn partition_of(&self, route: &str) -> usize {
        (fnv1a(route) % self.inner.route as u64) as usize
    }

    /// The hash tag every key of partition `part` carries: it names the cluster slot (and so
    /// the master) the partition lives on.
    pub fn hash_tag(&self, part: usize) -> &str {
        &self.inner.parts[part].tag
    }

    fn partition_of_job(&self, job: &NewJob) -> usize {
        self.partition_of(job.route.as_deref().unwrap_or(&job.id))
    }

    /// Pushes one job; returns whether it was added, revived from the dead, or (its id
    /// running now) set to run once more when the running attempt ends. False: that id is
    /// already waiting.
    pub async fn push<J: QueuedJob>(
        &self,
        id: &str,
        job: &J,
        due_ms: i64,
    ) -> Result<bool, QueueError> {
        let added = self.push_many(&[NewJob::new(id, job, due_ms)?]).await?;
        Ok(added == 1)
    }

    /// Pushes many jobs, one round trip per partition they fall in (at once); returns how
    /// many were added (as [`Queue::push`] counts).
    pub async fn push_many(&self, jobs: &[NewJob]) -> Result<usize, QueueError> {
        self.push_all(jobs, true).await
    }

    /// Makes sure each job exists: pushes it as [`Queue::push_many`] does, except that a job
    /// running now is left alone rather than run once more. For the sweeps and the reconcile,
    /// which queue again what Redis may have lost, not for a push that follows a change the
    /// running attempt may not have seen. Returns how many were added or revived.
    pub async fn ensure_many(&self, jobs: &[NewJob]) -> Result<usize, QueueError> {
        self.push_all(jobs, false).await
    }

    async fn push_all(&self, jobs: &[NewJob], again: bool) -> Result<usize, QueueError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut by_part: Vec<Vec<&NewJob>> = vec![Vec::new(); self.inner.route];
        for job in jobs {
            by_part[self.partition_of_job(job)].push(job);
        }
        let pushes = by_part
            .iter()
            .enumerate()
            .filter(|(_, jobs)| !jobs.is_empty())
            .map(|(part, jobs)| self.push_to(part, jobs, again));
        Ok(try_join_all(pushes).await?.into_iter().sum())
    }

    async fn push_to(
        &self,
        part: usize,
        jobs: &[&NewJob],
        again: bool,
    ) -> Result<usize, QueueError> {
        let mut total = 0;
        for chunk in jobs.chunks(CHUNK) {
            let now = now_ms();
            let mut inv = self.invoke(part, &self.inner.scripts.push, now);
            inv.arg(now).arg(if again { "1" } else { "0" });
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
    /// waiting. The caller knows the job by id only, so every partition is asked.
    pub async fn remove_waiting(&self, id: &str) -> Result<bool, QueueError> {
        let removed = try_join_all((0..self.partitions()).map(|part| async move {
            let n: i64 = self
                .invoke(part, &self.inner.scripts.remove_waiting, now_ms())
                .arg(id)
                .invoke_async(&mut self.conn())
                .await?;
            Ok::<_, QueueError>(n == 1)
        }))
        .await?;
        Ok(removed.contains(&true))
    }

    /// A script invocation with every key of one partition.
    pub(crate) fn invoke<'a>(
        &self,
        part: usize,
        script: &'a Script,
        now: i64,
    ) -> redis::ScriptInvocation<'a> {
        let k = &self.inner.parts[part];
        let mut inv = script.prepare_invoke();
        for key in k.fixed() {
            inv.key(key);
        }
        inv.key(k.done_bucket(now))
            .key(k.failed_bucket(now))
            .key(&k.vt_bulk)
            .key(&k.again)
            .key(&k.since);
        inv
    }

    /// Takes a slot of `pace`'s sender for a job about to be sent. `false`: the sender has no
    /// slot free now, or jobs of the same or a higher lane wait for it; park the job
    /// ([`JobError::Park`]).
    pub async fn take_slot(&self, pace: &Pace) -> Result<bool, QueueError> {
        Ok(self.take_slots(pace, pace.cost).await? > 0)
    }

    /// Like [`Queue::take_slot`], taking up to `want` segments in all while they fall within
    /// the sender's burst; returns the segments taken (0, or at least `pace.cost`). The pace
    /// lives in the sender's partition, with its jobs.
    pub async fn take_slots(&self, pace: &Pace, want: u32) -> Result<u32, QueueError> {
        let now = now_ms();
        let taken: u32 = self
            .invoke(
                self.partition_of(&pace.sender),
                &self.inner.scripts.take_slot,
                now,
            )
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
        let per_part = try_join_all((0..self.partitions()).map(|part| async move {
            let mut inv = self.invoke(part, &self.inner.scripts.expected, now);
            inv.arg(now);
            for id in ids {
                inv.arg(*id);
            }
            let at: Vec<i64> = inv.invoke_async(&mut self.conn()).await?;
            Ok::<_, QueueError>(at)
        }))
        .await?;
        Ok((0..ids.len())
            .map(|i| {
                per_part
                    .iter()
                    .filter_map(|at| at.get(i).copied())
                    .find(|t| *t >= 0)
            })
            .collect())
    }

    /// Jobs completed and failed in each of the last `minutes` whole minutes, oldest first (the
    /// dashboard's chart).
    pub async fn history(&self, minutes: usize) -> Result<Vec<MinuteCounts>, QueueError> {
        let per_minute = (60 / BUCKET_SECS) as usize;
        let minutes = minutes.min((BUCKET_TTL_SECS / 60) as usize - 1);
        // The first bucket of the minute `minutes - 1` before the current one.
        let now_bucket = now_ms() / 1000 / BUCKET_SECS;
        let first_minute =
            (now_bucket / per_minute as i64 - minutes as i64 + 1) * per_minute as i64;
        let buckets: Vec<i64> = (0..(minutes * per_minute) as i64)
            .map(|i| (first_minute + i) * BUCKET_SECS * 1000)
            .collect();
        let counts = self.bucket_counts(&buckets).await?;
        Ok((0..minutes)
            .map(|m| {
                let range = m * per_minute..(m + 1) * per_minute;
                MinuteCounts {
                    start_ms: buckets[range.start],
                    completed: counts[range.clone()].iter().map(|c| c.0).sum(),
                    failed: counts[range].iter().map(|c| c.1).sum(),
                }
            })
            .collect())
    }

    /// Completed and failed jobs in each bucket starting at `buckets` (ms), over every
    /// partition.
    async fn bucket_counts(&self, buckets: &[i64]) -> Result<Vec<(u64, u64)>, QueueError> {
        let per_part = try_join_all(self.inner.parts.iter().map(|k| async move {
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
            let counts: (Vec<Option<u64>>, Vec<Option<u64>>) =
                pipe.query_async(&mut self.conn()).await?;
            Ok::<_, QueueError>(counts)
        }))
        .await?;
        let mut sums = vec![(0, 0); buckets.len()];
        for (done, failed) in per_part {
            for (i, sum) in sums.iter_mut().enumerate() {
                sum.0 += done.get(i).copied().flatten().unwrap_or(0);
                sum.1 += failed.get(i).copied().flatten().unwrap_or(0);
            }
        }
        Ok(sums)
    }

    /// The counts ops look at.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let now = now_ms();
        let buckets: Vec<i64> = (0..(60 / BUCKET_SECS))
            .map(|i| now - i * BUCKET_SECS * 1000)
            .collect();
        let per_part = try_join_all(self.inner.parts.iter().map(|k| async move {
            let mut pipe = redis::pipe();
            pipe.zcard(&k.ready_tx)
                .zcard(&k.ready_bulk)
                .hlen(&k.parked)
                .llen(&k.legacy_ready)
                .zcount(&k.scheduled, "-inf", now)
                .zcount(&k.scheduled, format!("({now}"), "+inf")
                .zcard(&k.inflight)
                .zcard(&k.dead);
            let counts: [u64; 8] = pipe.query_async(&mut self.conn()).await?;
            Ok::<_, QueueError>(counts)
        }));
        let oldest = try_join_all((0..self.partitions()).map(|part| async move {
            let due: i64 = self
                .invoke(part, &self.inner.scripts.oldest_due, now)
                .arg(now)
                .invoke_async(&mut self.conn())
                .await?;
            Ok::<_, QueueError>(due)
        }));
        let (per_part, counts, oldest) =
            tokio::try_join!(per_part, self.bucket_counts(&buckets), oldest)?;
        let oldest_due_seconds = oldest
            .into_iter()
            .filter(|due| *due >= 0)
            .min()
            .map_or(0.0, |due| (now - due).max(0) as f64 / 1000.0);
        let sum = |i: usize| per_part.iter().map(|c| c[i]).sum::<u64>();
        let (tx, bulk, parked, legacy, due) = (sum(0), sum(1), sum(2), sum(3), sum(4));
        Ok(QueueStats {
            name: self.inner.name.clone(),
            pending: tx + bulk + parked + legacy + due,
            paced: parked,
            scheduled: sum(5),
            running: sum(6),
            dead: sum(7),
            completed_last_minute: counts.iter().map(|c| c.0).sum(),
            failed_last_minute: counts.iter().map(|c| c.1).sum(),
            oldest_due_seconds,
        })
    }

    /// Dead jobs, newest first, `limit` from `offset`: each partition's newest `offset +
    /// limit + 1`, merged.
    pub async fn list_dead(
        &self,
        filter: &DeadFilter,
        offset: usize,
        limit: usize,
    ) -> Result<DeadPage, QueueError> {
        let max = filter.until_ms.map_or("+inf".to_owned(), |t| t.to_string());
        let min = filter.since_ms.map_or("-inf".to_owned(), |t| t.to_string());
        let (max, min) = (&max, &min);
        let per_part = try_join_all(self.inner.parts.iter().enumerate().map(
            |(part, k)| async move {
                let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(&k.dead)
                    .arg(max)
                    .arg(min)
                    .arg("BYSCORE")
                    .arg("REV")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(offset + limit + 1)
                    .arg("WITHSCORES")
                    .query_async(&mut self.conn())
                    .await?;
                Ok::<_, QueueError>(entries.into_iter().map(move |(id, at)| (part, id, at)))
            },
        ))
        .await?;
        let mut entries: Vec<(usize, String, f64)> = per_part.into_iter().flatten().collect();
        // Newest first; ties by id, newest first too, as one sorted set orders them.
        entries.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| b.1.cmp(&a.1)));
        let more = entries.len() > offset + limit;
        let mut jobs = Vec::with_capacity(limit);
        for (part, id, at) in entries.into_iter().skip(offset).take(limit) {
            if let Some(job) = self.dead_details(part, id, at as i64).await? {
                jobs.push(job);
            }
        }
        Ok(DeadPage {
            jobs,
            next_offset: more.then_some(offset + limit),
        })
    }

    /// The partition holding dead job `id` and when it died.
    async fn find_dead(&self, id: &str) -> Result<Option<(usize, i64)>, QueueError> {
        let scores = try_join_all(self.inner.parts.iter().map(|k| async move {
            let score: Option<f64> = self.conn().zscore(&k.dead, id).await?;
            Ok::<_, QueueError>(score)
        }))
        .await?;
        Ok(scores
            .into_iter()
            .enumerate()
            .find_map(|(part, s)| s.map(|s| (part, s as i64))))
    }

    /// One dead job, if `id` is dead.
    pub async fn get_dead(&self, id: &str) -> Result<Option<DeadJob>, QueueError> {
        match self.find_dead(id).await? {
            Some((part, dead_at)) => self.dead_details(part, id.to_owned(), dead_at).await,
            None => Ok(None),
        }
    }

    async fn dead_details(
        &self,
        part: usize,
        id: String,
        dead_at: i64,
    ) -> Result<Option<DeadJob>, QueueError> {
        let k = &self.inner.parts[part];
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
        self.on_dead(id, &self.inner.scripts.replay).await
    }

    /// Deletes a dead job. Returns whether it was dead.
    pub async fn delete_dead(&self, id: &str) -> Result<bool, QueueError> {
        self.on_dead(id, &self.inner.scripts.delete_dead).await
    }

    async fn on_dead(&self, id: &str, script: &Script) -> Result<bool, QueueError> {
        let Some((part, _)) = self.find_dead(id).await? else {
            return Ok(false);
        };
        let n: i64 = self
            .invoke(part, script, now_ms())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(n == 1)
    }

    /// Whether Redis answers, for `/readyz`: the server, or every partition's node.
    pub async fn ping(&self) -> Result<(), QueueError> {
        try_join_all(self.inner.parts.iter().map(|k| async move {
            let _: bool = self.conn().exists(&k.reconciled).await?;
            Ok::<_, QueueError>(())
        }))
        .await?;
        Ok(())
    }

    /// Whether this queue's jobs must be checked against Postgres: the server holding one of
    /// its partitions has restarted, failed over or lost its data since the last check (its
    /// `INFO server` run_id changed: a restart, or a failover to another server), or no check
    /// was ever made. Lost data takes the marker with it. Returns each partition's current run,
    /// for [`Queue::mark_reconciled`], or `None` when nothing is to be checked.
    pub async fn needs_reconcile(&self) -> Result<Option<Vec<String>>, QueueError> {
        let script = &self.inner.scripts.server_run;
        let runs = try_join_all(self.inner.parts.iter().map(|k| async move {
            let (run, seen): (String, Option<String>) = script
                .key(&k.reconciled)
                .invoke_async(&mut self.conn())
                .await?;
            Ok::<_, QueueError>((seen.as_deref() != Some(run.as_str()), run))
        }))
        .await?;
        Ok(runs
            .iter()
            .any(|(changed, _)| *changed)
            .then(|| runs.into_iter().map(|(_, run)| run).collect()))
    }

    /// Records that every job Postgres expects is in this queue, as of the runs
    /// [`Queue::needs_reconcile`] returned. A partition whose server changed again since is
    /// left unmarked, so the next check reconciles again.
    pub async fn mark_reconciled(&self, runs: &[String]) -> Result<(), QueueError> {
        let script = &self.inner.scripts.mark_reconciled;
        try_join_all(
            self.inner
                .parts
                .iter()
                .zip(runs)
                .map(|(k, run)| async move {
                    let _: i64 = script
                        .key(&k.reconciled)
                        .arg(run)
                        .invoke_async(&mut self.conn())
                        .await?;
                    Ok::<_, QueueError>(())
                }),
        )
        .await?;
        Ok(())
    }

    /// Decodes a payload pushed with [`NewJob::new`].
    pub fn decode<J: DeserializeOwned>(payload: &str) -> Result<J, serde_json::Error> {
        serde_json::from_str(payload)
    }
}

/// Herald's three queues as configured.
#[derive(Debug, Clone)]
pub struct Queues {
    pub deliveries: Queue,
    pub replies: Queue,
    pub events: Queue,
}

impl Queues {
    /// The three queues, each [`Queue::adopted`], at once.
    pub async fn adopted(config: &crate::Config, redis: &Redis) -> Self {
        let (deliveries, replies, events) = tokio::join!(
            deliveries(config, redis.clone()).adopted(),
            ai_replies(config, redis.clone()).adopted(),
            events(config, redis.clone()).adopted(),
        );
        Self {
            deliveries,
            replies,
            events,
        }
    }
}

/// `HERALD_QUEUE_PARTITIONS`, or the default for the kind of Redis.
fn partitions(config: &crate::Config, redis: &Redis) -> usize {
    config
        .queue_partitions
        .unwrap_or_else(|| default_partitions(redis))
}

/// The `deliveries` queue as configured. Its own maximum is a backstop above
/// `HERALD_MAX_ATTEMPTS`: the delivery handler counts provider calls itself and settles the
/// message before the queue would give up, but a job that dies before reaching its handler
/// (a worker killed mid-job, again and again) must still end dead.
pub fn deliveries(config: &crate::Config, redis: Redis) -> Queue {
    Queue::new(
        redis.clone(),
        &config.queue_prefix,
        DELIVERIES,
        partitions(config, &redis),
        config.max_attempts + 2,
        RetryPolicy::new(config.retry_base, config.retry_max),
    )
}

/// The queue of AI reply jobs, one per inbound text that wants an answer.
pub const AI_REPLIES: &str = "ai-replies";

/// The `ai-replies` queue as configured. A reply job makes at most two model calls per
/// endpoint; a few attempts cover a worker dying mid-call.
pub fn ai_replies(config: &crate::Config, redis: Redis) -> Queue {
    Queue::new(
        redis.clone(),
        &config.queue_prefix,
        AI_REPLIES,
        partitions(config, &redis),
        5,
        RetryPolicy::new(config.retry_base, config.retry_max),
    )
}

/// The queue of event deliveries, one job per event and endpoint.
pub const EVENTS: &str = "events";

/// The `events` queue as configured. The handler schedules an event's retries itself (the
/// contract's schedule, up to ten hours apart), so they never count against the queue's
/// maximum; that covers only a job that dies before its handler answers, again and again.
pub fn events(config: &crate::Config, redis: Redis) -> Queue {
    Queue::new(
        redis.clone(),
        &config.queue_prefix,
        EVENTS,
        partitions(config, &redis),
        10,
        RetryPolicy::new(config.retry_base, config.retry_max),
    )
}
