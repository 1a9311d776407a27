//! Token buckets in Redis, shared by every process: per tenant and channel for sends
//! (`HERALD_TENANT_SEND_RATE`), per API key for requests (`HERALD_API_RATE`). Each bucket
//! holds up to twice its rate (the burst) and refills continuously.

use std::time::Duration;

use redis::{Script, aio::ConnectionManager};

use crate::queue::now_ms;

/// KEYS: bucket; ARGV: now_ms, rate per second, burst.
/// Returns 0 when a token was taken, else the milliseconds until one is available.
const TAKE: &str = r#"
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, at = burst, now end
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', math.max(now, at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"#;

#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    prefix: String,
    script: std::sync::Arc<Script>,
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
            script: std::sync::Arc::new(Script::new(TAKE)),
        }
    }

    /// Takes a token from `bucket` (refilled at `rate` per second, burst twice that); `None`
    /// when granted, else how long until a token is free.
    pub async fn take(
        &self,
        bucket: &str,
        rate: u32,
    ) -> Result<Option<Duration>, redis::RedisError> {
        let key = format!("{{{}:rate:{bucket}}}", self.prefix);
        let wait: u64 = self
            .script
            .key(key)
            .arg(now_ms())
            .arg(rate)
            .arg(u64::from(rate) * 2)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }
}
