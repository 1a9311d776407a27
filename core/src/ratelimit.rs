//! Token buckets in Redis, shared by every process: per tenant and channel for sends
//! (`HERALD_TENANT_SEND_RATE`), per API key for requests (`HERALD_API_RATE`), per client
//! address for failed authentication (`HERALD_AUTH_FAILURE_RATE`). Each bucket holds up to
//! twice its rate (the burst) and refills continuously. Also the back-off of the `/ops` login
//! after repeated failures.
//!
//! A busy process takes tokens from Redis a few at a time (a twentieth of the rate, at most
//! 50) and spends them locally for up to 100 ms, so a high rate costs a handful of Redis
//! calls per second instead of one per send; tokens a process took are never given to
//! another, so the shared limit holds. Per bucket, one caller at a time goes to Redis and the
//! others wait for its tokens instead of each taking a chunk of its own: a burst of concurrent
//! requests spends one token each, never a chunk each, so a fresh key gets its whole burst
//! under any concurrency.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use redis::Script;

use crate::queue::Redis;

use crate::queue::now_ms;

/// KEYS: bucket; ARGV: now_ms, rate per second, burst, tokens wanted.
/// Returns {granted, wait_ms}: `granted` tokens taken (at least one unless the bucket is
/// empty), else the milliseconds until one is available.
const TAKE: &str = r#"
local now, rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, at = burst, now end
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local granted = math.min(want, math.floor(tokens))
local wait = 0
if granted >= 1 then tokens = tokens - granted else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', math.max(now, at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {granted, wait}
"#;

/// KEYS: failures counter, lock; ARGV: free failures, longest lock (ms), how long failures
/// are remembered (ms). Counts one failure and, past the free ones, locks for 1 s doubling
/// per further failure. Returns the lock's length in ms (0: not locked).
const LOGIN_FAILED: &str = r#"
local fails = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
local free = tonumber(ARGV[1])
if fails <= free then return 0 end
local ms = math.min(1000 * 2 ^ math.min(fails - free - 1, 30), tonumber(ARGV[2]))
redis.call('SET', KEYS[2], '1', 'PX', math.floor(ms))
return math.floor(ms)
"#;

/// How long locally held tokens stay spendable.
const HOLD: Duration = Duration::from_millis(100);
/// Past this many buckets held in memory, expired ones are dropped (buckets are keyed by
/// things a stranger chooses, such as a client address).
const MAX_LOCAL_BUCKETS: usize = 10_000;
/// Failed logins from one address before the login backs off.
const FREE_LOGIN_FAILURES: u32 = 5;
/// The longest a login stays locked.
const MAX_LOGIN_LOCK: Duration = Duration::from_secs(15 * 60);
/// How long failed logins are remembered.
const LOGIN_MEMORY: Duration = Duration::from_secs(60 * 60);

/// A bucket's locally held tokens. Its async mutex is what makes one caller at a time go to
/// Redis for it.
#[derive(Debug, Default)]
struct Held {
    tokens: u32,
    until: Option<Instant>,
}

type Local = Arc<tokio::sync::Mutex<Held>>;

#[derive(Clone)]
pub struct RateLimiter {
    conn: Redis,
    prefix: String,
    script: Arc<Script>,
    login_failed: Arc<Script>,
    held: Arc<Mutex<HashMap<String, Local>>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RateLimiter {
    pub fn new(conn: Redis, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            script: Arc::new(Script::new(TAKE)),
            login_failed: Arc::new(Script::new(LOGIN_FAILED)),
            held: Arc::default(),
        }
    }

    fn local(&self, bucket: &str) -> Local {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(local) = held.get(bucket) {
            return local.clone();
        }
        if held.len() >= MAX_LOCAL_BUCKETS {
            // Drop what nobody is using and holds nothing worth keeping.
            let now = Instant::now();
            held.retain(|_, l| {
                Arc::strong_count(l) > 1
                    || l.try_lock()
                        .map(|h| h.tokens > 0 && h.until.is_some_and(|u| now < u))
                        .unwrap_or(true)
            });
            if held.len() >= MAX_LOCAL_BUCKETS {
                // Still full of live buckets: give up their few held tokens rather than grow.
                held.retain(|_, l| Arc::strong_count(l) > 1);
            }
        }
        let local = Local::default();
        held.insert(bucket.to_owned(), local.clone());
        local
    }

    /// Takes a token from `bucket` (refilled at `rate` per second, burst twice that); `None`
    /// when granted, else how long until a token is free.
    pub async fn take(
        &self,
        bucket: &str,
        rate: u32,
    ) -> Result<Option<Duration>, redis::RedisError> {
        let local = self.local(bucket);
        let mut held = local.lock().await;
        if held.tokens > 0 && held.until.is_some_and(|u| Instant::now() < u) {
            held.tokens -= 1;
            return Ok(None);
        }
        let want = (rate / 20).clamp(1, 50);
        let (granted, wait) = self.take_from_redis(bucket, rate, want).await?;
        if granted == 0 {
            *held = Held::default();
            return Ok(Some(Duration::from_millis(wait.max(1))));
        }
        *held = Held {
            tokens: granted - 1,
            until: Some(Instant::now() + HOLD),
        };
        Ok(None)
    }

    async fn take_from_redis(
        &self,
        bucket: &str,
        rate: u32,
        want: u32,
    ) -> Result<(u32, u64), redis::RedisError> {
        let key = format!("{{{}:rate:{bucket}}}", self.prefix);
        self.script
            .key(key)
            .arg(now_ms())
            .arg(rate)
            .arg(u64::from(rate) * 2)
            .arg(want)
            .invoke_async(&mut self.conn.clone())
            .await
    }

    fn login_keys(&self, who: &str) -> (String, String) {
        (
            format!("{{{}:login:{who}}}:failures", self.prefix),
            format!("{{{}:login:{who}}}:lock", self.prefix),
        )
    }

    /// How long logins from `who` are still locked after repeated failures (`None`: not).
    pub async fn login_locked(&self, who: &str) -> Result<Option<Duration>, redis::RedisError> {
        let (_, lock) = self.login_keys(who);
        let ms: i64 = redis::cmd("PTTL")
            .arg(lock)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    /// Counts a failed login from `who`; returns how long its logins are now locked. The
    /// first few failures are free; then each locks for twice as long, up to 15 minutes.
    pub async fn login_failed(&self, who: &str) -> Result<Option<Duration>, redis::RedisError> {
        let (failures, lock) = self.login_keys(who);
        let ms: i64 = self
            .login_failed
            .key(failures)
            .key(lock)
            .arg(FREE_LOGIN_FAILURES)
            .arg(MAX_LOGIN_LOCK.as_millis() as u64)
            .arg(LOGIN_MEMORY.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    /// A successful login from `who` forgets its failures.
    pub async fn login_succeeded(&self, who: &str) -> Result<(), redis::RedisError> {
        let (failures, lock) = self.login_keys(who);
        redis::cmd("DEL")
            .arg(failures)
            .arg(lock)
            .query_async::<()>(&mut self.conn.clone())
            .await
    }
}
