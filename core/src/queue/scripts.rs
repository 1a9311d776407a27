//! The queue engine's Lua scripts. Each step of a job's life is one script, so it is atomic
//! on the Redis server: no other client sees a job half-moved between sets.
//!
//! Keys of one queue share the hash tag `{prefix:queue}`, so every script touches one slot and
//! the engine also runs on Redis Cluster. Times are milliseconds since the Unix epoch, passed
//! in by the caller.
//!
//! Per queue:
//! - `data`      HASH  id -> payload (JSON); present while the job is alive or dead
//! - `attempts`  HASH  id -> attempts started in the current run
//! - `errors`    HASH  id -> JSON array of `{at, attempt, error}`, the last 25 failures
//! - `scheduled` ZSET  id by due time
//! - `ready`     LIST  due ids, oldest at the right (RPOP end)
//! - `inflight`  ZSET  id by lease expiry
//! - `lease`     HASH  id -> token of the worker process holding the lease
//! - `dead`      ZSET  id by time of death
//! - `done:<t>` / `failed:<t>`  counters per 5-second bucket, expiring after an hour
//! - `notify`    pub/sub channel: "something is due, or due earlier than you thought"

/// Shared Lua helpers, prepended to the scripts that need them.
const HELPERS: &str = r#"
local function push_error(errors_key, id, now, attempt, text)
  local raw = redis.call('HGET', errors_key, id)
  local list = {}
  if raw then list = cjson.decode(raw) end
  table.insert(list, {at = now, attempt = attempt, error = text})
  while #list > 25 do table.remove(list, 1) end
  redis.call('HSET', errors_key, id, cjson.encode(list))
end

local function bump(key, by, ttl)
  redis.call('INCRBY', key, by)
  redis.call('EXPIRE', key, ttl)
end

-- Wake sleeping workers when `due` is earlier than every other scheduled job.
local function schedule(scheduled_key, notify, id, due)
  local first = redis.call('ZRANGE', scheduled_key, 0, 0, 'WITHSCORES')
  redis.call('ZADD', scheduled_key, due, id)
  if first[2] == nil or due < tonumber(first[2]) then
    redis.call('PUBLISH', notify, 'w')
  end
end
"#;

/// Push jobs. A job whose id is alive already is left alone (a duplicate push is a no-op);
/// one that is dead is revived with fresh attempts.
///
/// KEYS: data, attempts, errors, scheduled, ready, dead, notify
/// ARGV: now, then (id, payload, due) triples
/// Returns the number of jobs added or revived.
pub const PUSH: &str = r#"
local now = tonumber(ARGV[1])
local added = 0
local ready_now = false
for i = 2, #ARGV, 3 do
  local id, payload, due = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local fresh = redis.call('HSETNX', KEYS[1], id, payload) == 1
  if not fresh and redis.call('ZREM', KEYS[6], id) == 1 then
    redis.call('HSET', KEYS[1], id, payload)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    fresh = true
  end
  if fresh then
    added = added + 1
    if due <= now then
      redis.call('LPUSH', KEYS[5], id)
      ready_now = true
    else
      schedule(KEYS[4], KEYS[7], id, due)
    end
  end
end
if ready_now then redis.call('PUBLISH', KEYS[7], 'w') end
return added
"#;

/// Lease up to `n` due jobs to a worker.
///
/// First reclaims leases that expired (their worker died): the attempt it started stays
/// counted, so a job that keeps killing its worker ends dead instead of looping. Then promotes
/// due scheduled jobs in bounded chunks (any burst drains, a chunk at a time), then pops.
///
/// KEYS: data, attempts, errors, scheduled, ready, inflight, lease, dead, failed bucket
/// ARGV: now, n, lease_ms, token, max_attempts, chunk, bucket_ttl
/// Returns {hint, id1, payload1, attempt1, ...}; `hint` is, when nothing was leased, the time
/// something next becomes due or a lease expires (-1: nothing at all), else 0.
pub const FETCH: &str = r#"
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local lease_until = now + tonumber(ARGV[3])
local token = ARGV[4]
local max_attempts = tonumber(ARGV[5])
local chunk = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])

local expired = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, chunk)
local reclaimed_dead = 0
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[6], id)
  redis.call('HDEL', KEYS[7], id)
  local attempt = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  push_error(KEYS[3], id, now, attempt, 'lease expired: the worker running attempt ' .. attempt .. ' stopped or lost Redis')
  if attempt >= max_attempts then
    redis.call('ZADD', KEYS[8], now, id)
    reclaimed_dead = reclaimed_dead + 1
  else
    redis.call('RPUSH', KEYS[5], id)
  end
end
if reclaimed_dead > 0 then bump(KEYS[9], reclaimed_dead, ttl) end

if redis.call('LLEN', KEYS[5]) < chunk then
  local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, chunk)
  if #due > 0 then
    redis.call('ZREM', KEYS[4], unpack(due))
    redis.call('LPUSH', KEYS[5], unpack(due))
  end
end

local out = {0}
local ids = redis.call('RPOP', KEYS[5], n)
if ids then
  for _, id in ipairs(ids) do
    local payload = redis.call('HGET', KEYS[1], id)
    if payload then
      local attempt = redis.call('HINCRBY', KEYS[2], id, 1)
      redis.call('ZADD', KEYS[6], lease_until, id)
      redis.call('HSET', KEYS[7], id, token)
      table.insert(out, id)
      table.insert(out, payload)
      table.insert(out, attempt)
    end
  end
end

if #out == 1 then
  local hint = -1
  if redis.call('LLEN', KEYS[5]) > 0 then
    hint = now
  else
    local s = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    if s[2] then hint = tonumber(s[2]) end
    local l = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
    if l[2] and (hint < 0 or tonumber(l[2]) < hint) then hint = tonumber(l[2]) end
  end
  out[1] = hint
end
return out
"#;

/// Acknowledge finished jobs: they leave Redis entirely, but for a counter that expires.
/// A job whose lease this worker no longer holds (it was reclaimed) is left to its new holder.
///
/// KEYS: data, attempts, errors, inflight, lease, done bucket
/// ARGV: bucket_ttl, then (id, token) pairs
/// Returns the number acknowledged.
pub const ACK: &str = r#"
local acked = 0
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[5], id) == token then
    redis.call('ZREM', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    acked = acked + 1
  end
end
if acked > 0 then bump(KEYS[6], acked, tonumber(ARGV[1])) end
return acked
"#;

/// Settle a failed or deferred attempt: re-schedule it (`retry`), give the attempt back and
/// re-schedule it (`defer`, for an open circuit or a rate limit), or move it to the dead set
/// (`dead`). A `retry` past `max_attempts` becomes `dead`; an explicit `retry_at` does not,
/// because its handler already decided.
///
/// KEYS: attempts, errors, scheduled, inflight, lease, dead, failed bucket, notify
/// ARGV: now, id, token, kind (retry | retry_at | defer | dead), due, error, max_attempts, bucket_ttl
/// Returns 'retried', 'deferred', 'dead', or 'lost' when this worker no longer holds the lease.
pub const SETTLE: &str = r#"
local now, id, token, kind = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local due, text, max_attempts, ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
if redis.call('HGET', KEYS[5], id) ~= token then return 'lost' end
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
local attempt = tonumber(redis.call('HGET', KEYS[1], id) or '0')
if kind == 'defer' then
  redis.call('HINCRBY', KEYS[1], id, -1)
  schedule(KEYS[3], KEYS[8], id, due)
  return 'deferred'
end
push_error(KEYS[2], id, now, attempt, text)
bump(KEYS[7], 1, ttl)
if kind == 'dead' or (kind == 'retry' and attempt >= max_attempts) then
  redis.call('ZADD', KEYS[6], now, id)
  return 'dead'
end
schedule(KEYS[3], KEYS[8], id, due)
return 'retried'
"#;

/// Extend the leases this worker still holds; returns the ids it has lost.
///
/// KEYS: inflight, lease
/// ARGV: lease_until, token, ids...
pub const EXTEND: &str = r#"
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[2], id) == ARGV[2] then
    redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[1]), id)
  else
    table.insert(lost, id)
  end
end
return lost
"#;

/// Hand leases back at shutdown: the jobs go to the front of the ready list with the attempt
/// given back, and sleeping workers are woken to take them at once.
///
/// KEYS: attempts, inflight, lease, ready, notify
/// ARGV: token, ids...
pub const RELEASE: &str = r#"
local released = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[3], id) == ARGV[1] then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('HINCRBY', KEYS[1], id, -1)
    redis.call('RPUSH', KEYS[4], id)
    released = released + 1
  end
end
if released > 0 then redis.call('PUBLISH', KEYS[5], 'w') end
return released
"#;

/// Replay a dead job with fresh attempts; returns 1 if it was dead.
///
/// KEYS: attempts, errors, ready, dead, notify
/// ARGV: id
pub const REPLAY: &str = r#"
if redis.call('ZREM', KEYS[4], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('PUBLISH', KEYS[5], 'w')
return 1
"#;

/// Delete a dead job; returns 1 if it was dead.
///
/// KEYS: data, attempts, errors, dead
/// ARGV: id
pub const DELETE_DEAD: &str = r#"
if redis.call('ZREM', KEYS[4], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"#;

/// Remove a job that has not started (a canceled message); returns 1 if it was waiting.
///
/// KEYS: data, attempts, errors, scheduled, ready
/// ARGV: id
pub const REMOVE_WAITING: &str = r#"
local removed = redis.call('ZREM', KEYS[4], ARGV[1])
if removed == 0 then removed = redis.call('LREM', KEYS[5], 1, ARGV[1]) end
if removed == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"#;

/// The full source of a script, with the helpers it uses.
pub fn with_helpers(body: &str) -> String {
    format!("{HELPERS}\n{body}")
}
