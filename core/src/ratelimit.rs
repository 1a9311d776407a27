//! Token buckets in Redis, shared by every process: per tenant and channel for sends
//! (`HERALD_TENANT_SEND_RATE`), per API key for requests (`HERALD_API_RATE`). Each bucket
//! holds up to twice its rate (the burst) and refills continuously.
//!
//! A busy process takes tokens from Redis a few at a time (a twentieth of the rate, at most
//! 50) and spends them locally for up to 100 ms, so a high rate costs a handful of Redis
//! calls per second instead of one per send; tokens a process took are never given to
//! another, so the shared limit holds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use redis::{Script, aio::ConnectionManager};

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

/// How long locally held tokens stay spendable.
const HOLD: Duration = Duration::from_millis(100);

struct Held {
    tokens: u32,
    until: Instant,
}

#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    prefix: String,
    script: Arc<Script>,
    held: Arc<Mutex<HashMap<String, Held>>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RateLimiter {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            script: Arc::new(Script::new(TAKE)),
            held: Arc::default(),
        }
    }

    fn spend_held(&self, bucket: &str) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.get_mut(bucket) {
            Some(h) if h.tokens > 0 && Instant::now() < h.until => {
                h.tokens -= 1;
                true
            }
            Some(_) => {
                held.remove(bucket);
                false
            }
            None => false,
        }
    }

    /// Takes a token from `bucket` (refilled at `rate` per second, burst twice that); `None`
    /// when granted, else how long until a token is free.
    pub async fn take(
        &self,
        bucket: &str,
        rate: u32,
    ) -> Result<Option<Duration>, redis::RedisError> {
        if self.spend_held(bucket) {
            return Ok(None);
        }
        let want = (rate / 20).clamp(1, 50);
        let key = format!("{{{}:rate:{bucket}}}", self.prefix);
        let (granted, wait): (u32, u64) = self
            .script
            .key(key)
            .arg(now_ms())
            .arg(rate)
            .arg(u64::from(rate) * 2)
            .arg(want)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if granted == 0 {
            return Ok(Some(Duration::from_millis(wait.max(1))));
        }
        if granted > 1 {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.insert(
                bucket.to_owned(),
                Held {
                    tokens: granted - 1,
                    until: Instant::now() + HOLD,
                },
            );
        }
        Ok(None)
    }
}
