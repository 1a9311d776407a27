//! The queue engine's Lua scripts. Each step of a job's life is one script, so it is atomic
//! on the Redis server: no other client sees a job half-moved between sets.
//!
//! Keys of one queue share the hash tag `{prefix:queue}`, so every script touches one slot and
//! the engine also runs on Redis Cluster. Every script gets the same keys in the same order
//! (see [`super::Keys::all`]) and names them through `K`. Times are milliseconds since the
//! Unix epoch, passed in by the caller.
//!
//! Per queue:
//! - `data`      HASH  id -> payload (JSON); present while the job is alive or dead
//! - `attempts`  HASH  id -> attempts started in the current run
//! - `errors`    HASH  id -> JSON array of `{at, attempt, error}`, the last 25 failures
//! - `scheduled` ZSET  id by due time
//! - `ready:0`, `ready:1`  ZSET  due ids of the transactional and the bulk lane, by fair tag
//! - `flow`      HASH  id -> `lane|tenant` (absent: lane 0, the shared flow)
//! - `vt:0`, `vt:1`  HASH  per lane: `clock` -> the start tag last taken; tenant (`~`: no
//!   tenant) -> the finish tag of that flow's last job in the lane (deleted with the lane's
//!   clock when the lane empties)
//! - `weights`   HASH  tenant -> its weight (its sender's pace), default 1
//! - `inflight`  ZSET  id by lease expiry
//! - `lease`     HASH  id -> token of the worker process holding the lease
//! - `dead`      ZSET  id by time of death
//! - `pace`      HASH  sender -> the time its next slot opens; `sender|rate`; `sender|in:lane`
//!   and `sender|out:lane`, segments ever parked and released in each lane
//! - `pacers`    ZSET  senders with parked jobs, by when they may release the next one
//! - `parked`    HASH  id -> `sender|lane|cost|position`, and the LISTs `parked:lane:sender`
//! - `granted`   HASH  id -> 1: the job has its sender's slot
//! - `again`     HASH  id -> `[due, flow, payload]`: a push that met the job running, for
//!   the run it asks for once this one ends
//! - `since`     ZSET  id in a ready lane by when it entered the lane (ms): the age of the
//!   oldest due job, for the metrics
//! - `done:<t>` / `failed:<t>`  counters per 5-second bucket, expiring after an hour
//! - `notify`    pub/sub channel: "something is due, or due earlier than you thought"
//! - `ready`     LIST  due ids as an older version kept them; drained into the lanes
//!
//! Fairness (start-time fair queueing): a job entering a lane starts at `max(clock, its
//! flow's last finish)` and finishes `1/weight` later; workers take the lowest start tags,
//! transactional lane first. A tenant with a backlog of 100,000 holds tags far ahead of the
//! clock; another tenant's first job starts at the clock, so it waits behind at most one job
//! of each busy tenant, not behind their backlogs, and busy tenants share the workers in
//! proportion to their weights.
//!
//! Pacing: a job over its sender's pace is parked in the sender's list for its lane; the
//! fetch releases parked jobs one slot at a time (`cost` segments every `cost / rate`
//! seconds, transactional first) into the ready lanes, marked granted.

/// The keys every script receives, by name, and a number as Redis keeps it.
const KEYS_PART: &str = r#"
local K = {
  data = KEYS[1], attempts = KEYS[2], errors = KEYS[3], scheduled = KEYS[4], legacy = KEYS[5],
  inflight = KEYS[6], lease = KEYS[7], dead = KEYS[8], notify = KEYS[9],
  tx = KEYS[10], bulk = KEYS[11], flow = KEYS[12], vt0 = KEYS[13], weights = KEYS[14],
  pace = KEYS[15], pacers = KEYS[16], parked = KEYS[17], granted = KEYS[18],
  done = KEYS[19], failed = KEYS[20], vt1 = KEYS[21], again = KEYS[22], since = KEYS[23],
}

local function num(s) return string.format('%.17g', s) end
"#;

/// A failed attempt's error kept with its job, and the failure counters.
const ERRORS_PART: &str = r#"
local function push_error(id, now, attempt, text)
  local raw = redis.call('HGET', K.errors, id)
  local list = {}
  if raw then list = cjson.decode(raw) end
  table.insert(list, {at = now, attempt = attempt, error = text})
  while #list > 25 do table.remove(list, 1) end
  redis.call('HSET', K.errors, id, cjson.encode(list))
end

local function bump(key, by, ttl)
  redis.call('INCRBY', key, by)
  redis.call('EXPIRE', key, ttl)
end
"#;

/// Scheduling a job for later.
const SCHEDULE_PART: &str = r#"
-- Wake sleeping workers when `due` is earlier than every other scheduled job.
local function schedule(id, due)
  local first = redis.call('ZRANGE', K.scheduled, 0, 0, 'WITHSCORES')
  redis.call('ZADD', K.scheduled, due, id)
  if first[2] == nil or due < tonumber(first[2]) then
    redis.call('PUBLISH', K.notify, 'w')
  end
end
"#;

/// Splitting `a|b|c` values.
const SPLIT_PART: &str = r#"
local function split(s)
  local out = {}
  for part in string.gmatch(s, '([^|]*)|?') do table.insert(out, part) end
  return out
end
"#;

/// The ready lanes and their fair order.
const LANES_PART: &str = r#"
-- A job's lane ('0' or '1') and tenant ('~': none in particular).
local function flow_of(id)
  local f = redis.call('HGET', K.flow, id)
  if not f then return '0', '~' end
  local tenant = string.sub(f, 3)
  if tenant == '' then tenant = '~' end
  return string.sub(f, 1, 1), tenant
end

local function lane_keys(lane)
  if lane == '1' then return K.bulk, K.vt1 end
  return K.tx, K.vt0
end

local function weight(tenant)
  if tenant == '~' then return 1 end
  return tonumber(redis.call('HGET', K.weights, tenant) or '1')
end

-- Jobs entering the lanes during one script call. Each flow's state is read once and written
-- once, and each lane gets one ZADD per 1,000 jobs, so a batch costs little more than its
-- jobs' own writes. Call `lanes_flush` before taking from the lanes.
local Lanes = {state = {}, adds = {['0'] = {}, ['1'] = {}}, since = {}}

local function lanes_flush_adds(lane)
  local list = Lanes.adds[lane]
  if #list > 0 then
    redis.call('ZADD', (lane_keys(lane)), unpack(list))
    Lanes.adds[lane] = {}
  end
  if #Lanes.since > 0 then
    redis.call('ZADD', K.since, 'NX', unpack(Lanes.since))
    Lanes.since = {}
  end
end

-- The server's clock in ms, read once per script call: when jobs entered the lanes.
local function lanes_now()
  if not Lanes.now then
    local t = redis.call('TIME')
    Lanes.now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return Lanes.now
end

-- Put a due job in its lane: at the front (a job handed back or reclaimed), else at its
-- flow's next start tag (start-time fair queueing: a flow's first job starts at the clock).
local function ready_add(id, front, lane, tenant)
  if not lane then lane, tenant = flow_of(id) end
  local key = lane .. tenant
  local st = Lanes.state[key]
  if not st then
    local _, vt = lane_keys(lane)
    local at = redis.call('HMGET', vt, 'clock', tenant)
    local clock, finish = tonumber(at[1] or '0'), tonumber(at[2] or '0')
    if finish < clock then finish = clock end
    st = {clock = clock, finish = finish, w = weight(tenant), lane = lane, tenant = tenant}
    Lanes.state[key] = st
  end
  local tag = st.clock
  if not front then
    tag = st.finish
    st.finish = st.finish + 1 / st.w
    st.dirty = true
  end
  local list = Lanes.adds[lane]
  list[#list + 1] = num(tag)
  list[#list + 1] = id
  local since = Lanes.since
  since[#since + 1] = lanes_now()
  since[#since + 1] = id
  if #list >= 2000 or #since >= 2000 then lanes_flush_adds(lane) end
end

local function lanes_flush()
  lanes_flush_adds('0')
  lanes_flush_adds('1')
  for _, st in pairs(Lanes.state) do
    if st.dirty then
      local _, vt = lane_keys(st.lane)
      redis.call('HSET', vt, st.tenant, num(st.finish))
    end
  end
  Lanes.state = {}
end

-- Take up to n due jobs, the transactional lane first, lowest tags first. A flow whose jobs
-- were all taken keeps its finish tag until the lane empties; being behind the clock, it
-- counts for nothing (its next job starts at the clock), and there is one per tenant at most.
local function ready_pop(n)
  lanes_flush()
  local out = {}
  for _, lane in ipairs({'0', '1'}) do
    if #out < n then
      local ready, vt = lane_keys(lane)
      local got = redis.call('ZPOPMIN', ready, n - #out)
      if #got > 0 then
        local ids = {}
        for i = 1, #got, 2 do
          out[#out + 1] = got[i]
          ids[#ids + 1] = got[i]
        end
        redis.call('ZREM', K.since, unpack(ids))
        if redis.call('ZCARD', ready) == 0 then
          -- An empty lane has no flow left in it: its clock starts again from zero.
          redis.call('DEL', vt)
        else
          redis.call('HSET', vt, 'clock', got[#got])
        end
      end
    end
  end
  return out
end
"#;

/// Senders' paces and their parked lists.
const PACE_PART: &str = r#"
-- A sender's pace: ms per segment, and how far ahead of now its next slot may be and still
-- be taken (a burst of a tenth of a second's worth, at least one segment).
local function pace_of(sender)
  local rate = tonumber(redis.call('HGET', K.pace, sender .. '|rate') or '1')
  local interval = 1000 / rate
  return interval, (math.max(1, math.floor(rate / 10)) - 1) * interval
end

local function parked_list(lane, sender)
  return K.parked .. ':' .. lane .. ':' .. sender
end
"#;

/// Releasing parked jobs into the lanes (needs the lanes and the paces).
const RELEASE_PART: &str = r#"
-- Release a sender's parked jobs whose slots have come, transactional first.
local function release_sender(sender, now)
  local interval, tolerance = pace_of(sender)
  local tat = tonumber(redis.call('HGET', K.pace, sender) or '0')
  local lists = {parked_list('0', sender), parked_list('1', sender)}
  while math.max(tat, now) - now <= tolerance do
    local id = redis.call('RPOP', lists[1])
    local lane = '0'
    if not id then
      id = redis.call('RPOP', lists[2])
      lane = '1'
    end
    if not id then break end
    local info = redis.call('HGET', K.parked, id)
    local cost = 1
    if info then cost = tonumber(split(info)[3]) or 1 end
    redis.call('HDEL', K.parked, id)
    redis.call('HINCRBYFLOAT', K.pace, sender .. '|out:' .. lane, cost)
    tat = math.max(tat, now) + cost * interval
    redis.call('HSET', K.granted, id, '1')
    ready_add(id, false)
  end
  redis.call('HSET', K.pace, sender, num(tat))
  local left = false
  for lane = 0, 1 do
    if redis.call('LLEN', lists[lane + 1]) > 0 then
      left = true
    else
      -- Nothing waits in this lane: what was parked has all left.
      local ins = redis.call('HGET', K.pace, sender .. '|in:' .. lane)
      if ins then redis.call('HSET', K.pace, sender .. '|out:' .. lane, ins) end
    end
  end
  if left then
    redis.call('ZADD', K.pacers, num(tat - tolerance), sender)
  else
    redis.call('ZREM', K.pacers, sender)
  end
end
"#;

/// Taking a job out of wherever it waits (needs the lanes and the paces).
const UNREADY_PART: &str = r#"
-- Remove a job from wherever it waits (a lane, the legacy list or a sender's list).
local function unready(id)
  local ready = lane_keys(flow_of(id))
  if redis.call('ZREM', ready, id) == 1 then
    redis.call('ZREM', K.since, id)
    return 1
  end
  local info = redis.call('HGET', K.parked, id)
  if info then
    local p = split(info)
    redis.call('HDEL', K.parked, id)
    return redis.call('LREM', parked_list(p[2], p[1]), 1, id)
  end
  return redis.call('LREM', K.legacy, 1, id)
end
"#;

/// Removing what a job leaves behind.
const FORGET_PART: &str = r#"
local function forget(id)
  redis.call('HDEL', K.data, id)
  redis.call('HDEL', K.attempts, id)
  redis.call('HDEL', K.errors, id)
  redis.call('HDEL', K.flow, id)
  redis.call('HDEL', K.granted, id)
  redis.call('HDEL', K.again, id)
end
"#;

/// A push that met its job running asked for one more run, starting after this one: when the
/// running attempt ends and the job would be gone (acked) or dead, it starts that run, with
/// fresh attempts, as the push would have. Returns whether there was one. (A job that is to
/// run again anyway, retried or handed back, needs no extra run: the mark is dropped.)
const AGAIN_PART: &str = r#"
local function run_again(id, now)
  local raw = redis.call('HGET', K.again, id)
  if not raw then return false end
  redis.call('HDEL', K.again, id)
  local a = cjson.decode(raw)
  local due, f, payload = tonumber(a[1]), a[2], a[3]
  redis.call('HSET', K.data, id, payload)
  redis.call('HDEL', K.attempts, id)
  redis.call('HDEL', K.errors, id)
  redis.call('HDEL', K.granted, id)
  if f ~= '0|' then redis.call('HSET', K.flow, id, f) else redis.call('HDEL', K.flow, id) end
  if due <= now then
    local tenant = string.sub(f, 3)
    if tenant == '' then tenant = '~' end
    ready_add(id, false, string.sub(f, 1, 1), tenant)
    lanes_flush()
    redis.call('PUBLISH', K.notify, 'w')
  else
    schedule(id, due)
  end
  return true
end
"#;

/// Push jobs. A job whose id is waiting already is left alone (a duplicate push is a no-op);
/// one that is dead is revived with fresh attempts; one that is running runs once more after
/// (its attempt may have read what the pusher changed before the change).
///
/// ARGV: now, again (`1`: a running job runs once more; `0`: it is left alone, for sweeps
/// that only make sure a job exists), then (id, payload, due, flow) quadruples; `flow` is
/// `lane|tenant`.
/// Returns the number of jobs added, revived or to run again.
pub const PUSH: Lua = Lua {
    parts: &[KEYS_PART, SCHEDULE_PART, LANES_PART],
    body: r#"
local now = tonumber(ARGV[1])
local again = ARGV[2] == '1'
local added = 0
local ready_now = false
for i = 3, #ARGV, 4 do
  local id, payload, due, f = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local fresh = redis.call('HSETNX', K.data, id, payload) == 1
  if not fresh and redis.call('ZREM', K.dead, id) == 1 then
    redis.call('HSET', K.data, id, payload)
    redis.call('HDEL', K.attempts, id)
    redis.call('HDEL', K.errors, id)
    fresh = true
  end
  if not fresh and again and redis.call('HEXISTS', K.lease, id) == 1 then
    -- Running now, perhaps on what the pusher has just changed: it runs once more after.
    redis.call('HSET', K.again, id, cjson.encode({due, f, payload}))
    added = added + 1
  end
  if fresh then
    added = added + 1
    if f ~= '0|' then redis.call('HSET', K.flow, id, f) end
    if due <= now then
      local tenant = string.sub(f, 3)
      if tenant == '' then tenant = '~' end
      ready_add(id, false, string.sub(f, 1, 1), tenant)
      ready_now = true
    else
      schedule(id, due)
    end
  end
end
lanes_flush()
if ready_now then redis.call('PUBLISH', K.notify, 'w') end
return added
"#,
};

/// Lease up to `n` due jobs to a worker.
///
/// First reclaims leases that expired (their worker died): the attempt it started stays
/// counted, so a job that keeps killing its worker ends dead instead of looping. Then moves
/// due scheduled jobs into their lanes and releases parked jobs whose senders' slots have
/// come, each in bounded chunks (any burst drains, a chunk at a time), then takes.
///
/// ARGV: now, n, lease_ms, token, max_attempts, chunk, bucket_ttl
/// Returns {hint, id1, payload1, attempt1, granted1, ...}; `hint` is, when nothing was
/// leased, the time something next becomes due, a sender may release or a lease expires (-1:
/// nothing at all), else 0.
pub const FETCH: Lua = Lua {
    parts: &[
        KEYS_PART,
        ERRORS_PART,
        SPLIT_PART,
        SCHEDULE_PART,
        LANES_PART,
        PACE_PART,
        RELEASE_PART,
        AGAIN_PART,
    ],
    body: r#"
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local lease_until = now + tonumber(ARGV[3])
local token = ARGV[4]
local max_attempts = tonumber(ARGV[5])
local chunk = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])

local expired = redis.call('ZRANGEBYSCORE', K.inflight, '-inf', now, 'LIMIT', 0, chunk)
local reclaimed_dead = 0
for _, id in ipairs(expired) do
  redis.call('ZREM', K.inflight, id)
  redis.call('HDEL', K.lease, id)
  local attempt = tonumber(redis.call('HGET', K.attempts, id) or '0')
  push_error(id, now, attempt, 'lease expired: the worker running attempt ' .. attempt .. ' stopped or lost Redis')
  if run_again(id, now) then
    -- Pushed while it ran: a fresh run, as after an ack.
  elseif attempt >= max_attempts then
    redis.call('ZADD', K.dead, now, id)
    reclaimed_dead = reclaimed_dead + 1
  else
    ready_add(id, true)
  end
end
if reclaimed_dead > 0 then bump(K.failed, reclaimed_dead, ttl) end

local legacy = redis.call('RPOP', K.legacy, chunk)
if legacy then
  for _, id in ipairs(legacy) do ready_add(id, false) end
end

local due = redis.call('ZRANGEBYSCORE', K.scheduled, '-inf', now, 'LIMIT', 0, chunk)
if #due > 0 then
  redis.call('ZREM', K.scheduled, unpack(due))
  for _, id in ipairs(due) do ready_add(id, false) end
end

local senders = redis.call('ZRANGEBYSCORE', K.pacers, '-inf', now, 'LIMIT', 0, chunk)
for _, sender in ipairs(senders) do release_sender(sender, now) end

local out = {0}
local any_granted = redis.call('HLEN', K.granted) > 0
for _, id in ipairs(ready_pop(n)) do
  local payload = redis.call('HGET', K.data, id)
  if payload then
    local attempt = redis.call('HINCRBY', K.attempts, id, 1)
    redis.call('ZADD', K.inflight, lease_until, id)
    redis.call('HSET', K.lease, id, token)
    out[#out + 1] = id
    out[#out + 1] = payload
    out[#out + 1] = attempt
    out[#out + 1] = any_granted and redis.call('HEXISTS', K.granted, id) or 0
  end
end

if #out == 1 then
  local hint = -1
  if redis.call('ZCARD', K.tx) + redis.call('ZCARD', K.bulk) + redis.call('LLEN', K.legacy) > 0 then
    hint = now
  else
    for _, key in ipairs({K.scheduled, K.inflight, K.pacers}) do
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if first[2] and (hint < 0 or tonumber(first[2]) < hint) then hint = math.floor(tonumber(first[2])) end
    end
  end
  out[1] = hint
end
return out
"#,
};

/// Acknowledge finished jobs: they leave Redis entirely, but for a counter that expires (a
/// job pushed while it ran starts its next run instead). A job whose lease this worker no
/// longer holds (it was reclaimed) is left to its new holder.
///
/// ARGV: bucket_ttl, now, then (id, token) pairs
/// Returns the number acknowledged.
pub const ACK: Lua = Lua {
    parts: &[
        KEYS_PART,
        ERRORS_PART,
        SCHEDULE_PART,
        LANES_PART,
        FORGET_PART,
        AGAIN_PART,
    ],
    body: r#"
local now = tonumber(ARGV[2])
local acked = 0
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', K.lease, id) == token then
    redis.call('ZREM', K.inflight, id)
    redis.call('HDEL', K.lease, id)
    if not run_again(id, now) then forget(id) end
    acked = acked + 1
  end
end
if acked > 0 then bump(K.done, acked, tonumber(ARGV[1])) end
return acked
"#,
};

/// Settle a failed or deferred attempt: re-schedule it (`retry`), give the attempt back and
/// re-schedule it (`defer`, for an open circuit or a rate limit), or move it to the dead set
/// (`dead`). A `retry` past `max_attempts` becomes `dead`; an explicit `retry_at` does not,
/// because its handler already decided. A job settled any way loses its sender's slot.
///
/// ARGV: now, id, token, kind (retry | retry_at | defer | dead), due, error, max_attempts, bucket_ttl
/// Returns 'retried', 'deferred', 'dead', or 'lost' when this worker no longer holds the lease.
pub const SETTLE: Lua = Lua {
    parts: &[
        KEYS_PART,
        ERRORS_PART,
        SCHEDULE_PART,
        LANES_PART,
        AGAIN_PART,
    ],
    body: r#"
local now, id, token, kind = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local due, text, max_attempts, ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
if redis.call('HGET', K.lease, id) ~= token then return 'lost' end
redis.call('ZREM', K.inflight, id)
redis.call('HDEL', K.lease, id)
redis.call('HDEL', K.granted, id)
local attempt = tonumber(redis.call('HGET', K.attempts, id) or '0')
if kind == 'defer' then
  redis.call('HINCRBY', K.attempts, id, -1)
  redis.call('HDEL', K.again, id)
  schedule(id, due)
  return 'deferred'
end
push_error(id, now, attempt, text)
bump(K.failed, 1, ttl)
if kind == 'dead' or (kind == 'retry' and attempt >= max_attempts) then
  if run_again(id, now) then return 'retried' end
  redis.call('ZADD', K.dead, now, id)
  return 'dead'
end
redis.call('HDEL', K.again, id)
schedule(id, due)
return 'retried'
"#,
};

/// Take slots of a sender's pace for a job about to be sent, if its slot is free now and no
/// job of the same or a higher lane waits for that sender: `cost` segments, and up to `want`
/// in all while they fall within the sender's burst (the caller spends the rest on its next
/// jobs). Records the sender's rate and, as the tenant's weight, the same rate.
///
/// ARGV: now, sender, lane, cost (segments), rate (segments per second), tenant, want
/// Returns the segments taken (0: none; else at least `cost`).
pub const TAKE_SLOT: Lua = Lua {
    parts: &[KEYS_PART, PACE_PART],
    body: r#"
local now, sender, lane, cost = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local want = tonumber(ARGV[7])
redis.call('HSET', K.pace, sender .. '|rate', ARGV[5])
redis.call('HSET', K.weights, ARGV[6], ARGV[5])
if redis.call('LLEN', parked_list('0', sender)) > 0 then return 0 end
if lane == '1' and redis.call('LLEN', parked_list('1', sender)) > 0 then return 0 end
local interval, tolerance = pace_of(sender)
local tat = tonumber(redis.call('HGET', K.pace, sender) or '0')
local base = math.max(tat, now)
if base - now > tolerance then return 0 end
local room = math.floor((now + tolerance - base) / interval) + 1
local taken = math.max(cost, math.min(want, room))
redis.call('HSET', K.pace, sender, num(base + taken * interval))
return taken
"#,
};

/// Park a leased job behind its sender's pace: it leaves the worker (the attempt given back)
/// and waits in the sender's list for its lane until the fetch releases it.
///
/// ARGV: now, id, token, sender, lane, cost, rate
/// Returns 'parked', or 'lost' when this worker no longer holds the lease.
pub const PARK: Lua = Lua {
    parts: &[KEYS_PART, PACE_PART],
    body: r#"
local now, id, token, sender, lane, cost = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if redis.call('HGET', K.lease, id) ~= token then return 'lost' end
redis.call('ZREM', K.inflight, id)
redis.call('HDEL', K.lease, id)
redis.call('HDEL', K.granted, id)
redis.call('HDEL', K.again, id)
redis.call('HINCRBY', K.attempts, id, -1)
redis.call('HSET', K.pace, sender .. '|rate', ARGV[7])
local counter = sender .. '|in:' .. lane
local position = tonumber(redis.call('HGET', K.pace, counter) or '0')
redis.call('HINCRBYFLOAT', K.pace, counter, cost)
redis.call('HSET', K.parked, id, sender .. '|' .. lane .. '|' .. cost .. '|' .. num(position))
redis.call('LPUSH', parked_list(lane, sender), id)
if not redis.call('ZSCORE', K.pacers, sender) then
  local _, tolerance = pace_of(sender)
  local tat = tonumber(redis.call('HGET', K.pace, sender) or '0')
  local at = math.max(now, tat - tolerance)
  redis.call('ZADD', K.pacers, num(at), sender)
  redis.call('PUBLISH', K.notify, 'w')
end
return 'parked'
"#,
};

/// When each job is expected to be taken by a worker: a parked job when its sender's pace
/// reaches it (the transactional jobs waiting first, for a bulk one), a scheduled one when
/// due, a due or running one now.
///
/// ARGV: now, ids...
/// Returns one time (ms) per id, or -1 for a job the queue does not hold.
pub const EXPECTED: Lua = Lua {
    parts: &[KEYS_PART, SPLIT_PART, PACE_PART],
    body: r#"
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local at = -1
  local info = redis.call('HGET', K.parked, id)
  if info then
    local p = split(info)
    local sender, lane, position = p[1], p[2], tonumber(p[4])
    local function counter(name) return tonumber(redis.call('HGET', K.pace, sender .. '|' .. name) or '0') end
    local ahead = math.max(0, position - counter('out:' .. lane))
    if lane == '1' then ahead = ahead + math.max(0, counter('in:0') - counter('out:0')) end
    local interval = pace_of(sender)
    local tat = tonumber(redis.call('HGET', K.pace, sender) or '0')
    at = math.max(tat, now) + ahead * interval
  else
    local due = redis.call('ZSCORE', K.scheduled, id)
    if due then
      at = math.max(tonumber(due), now)
    elseif redis.call('HEXISTS', K.data, id) == 1 and not redis.call('ZSCORE', K.dead, id) then
      at = now
    end
  end
  table.insert(out, math.floor(at))
end
return out
"#,
};

/// Extend the leases this worker still holds; returns the ids it has lost.
///
/// ARGV: lease_until, token, ids...
pub const EXTEND: Lua = Lua {
    parts: &[KEYS_PART],
    body: r#"
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', K.lease, id) == ARGV[2] then
    redis.call('ZADD', K.inflight, 'XX', tonumber(ARGV[1]), id)
  else
    table.insert(lost, id)
  end
end
return lost
"#,
};

/// Hand leases back at shutdown: the jobs go to the front of their lane with the attempt
/// given back (and their sender's slot kept), and sleeping workers are woken to take them.
///
/// ARGV: token, ids...
pub const RELEASE: Lua = Lua {
    parts: &[KEYS_PART, LANES_PART],
    body: r#"
local released = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', K.lease, id) == ARGV[1] then
    redis.call('ZREM', K.inflight, id)
    redis.call('HDEL', K.lease, id)
    redis.call('HINCRBY', K.attempts, id, -1)
    ready_add(id, true)
    released = released + 1
  end
end
lanes_flush()
if released > 0 then redis.call('PUBLISH', K.notify, 'w') end
return released
"#,
};

/// Replay a dead job with fresh attempts; returns 1 if it was dead.
///
/// ARGV: id
pub const REPLAY: Lua = Lua {
    parts: &[KEYS_PART, LANES_PART],
    body: r#"
if redis.call('ZREM', K.dead, ARGV[1]) == 0 then return 0 end
redis.call('HDEL', K.attempts, ARGV[1])
redis.call('HDEL', K.errors, ARGV[1])
ready_add(ARGV[1], false)
lanes_flush()
redis.call('PUBLISH', K.notify, 'w')
return 1
"#,
};

/// Delete a dead job; returns 1 if it was dead.
///
/// ARGV: id
pub const DELETE_DEAD: Lua = Lua {
    parts: &[KEYS_PART, FORGET_PART],
    body: r#"
if redis.call('ZREM', K.dead, ARGV[1]) == 0 then return 0 end
forget(ARGV[1])
return 1
"#,
};

/// Remove a job that has not started (a canceled message); returns 1 if it was waiting.
///
/// ARGV: id
pub const REMOVE_WAITING: Lua = Lua {
    parts: &[
        KEYS_PART,
        SPLIT_PART,
        LANES_PART,
        PACE_PART,
        UNREADY_PART,
        FORGET_PART,
    ],
    body: r#"
local removed = redis.call('ZREM', K.scheduled, ARGV[1])
if removed == 0 then removed = unready(ARGV[1]) end
if removed == 0 then return 0 end
forget(ARGV[1])
return 1
"#,
};

/// A script: the parts of the prelude it uses, in the order they must be defined (so Redis
/// defines no function a script does not call), and its body.
pub struct Lua {
    parts: &'static [&'static str],
    body: &'static str,
}

impl Lua {
    /// The full source.
    pub fn source(&self) -> String {
        let mut source = self.parts.join("\n");
        source.push('\n');
        source.push_str(self.body);
        source
    }
}

/// When the oldest due job became due (ms), or -1 when none waits: the first of the jobs in
/// the lanes by when they entered, or a due job not yet moved from `scheduled` (no worker has
/// fetched since it came due). An entry of `since` whose job left the lanes by a path that
/// did not remove it is dropped here.
///
/// ARGV: now
pub const OLDEST_DUE: Lua = Lua {
    parts: &[KEYS_PART, LANES_PART],
    body: r#"
local now = tonumber(ARGV[1])
local oldest = -1
for _ = 1, 100 do
  local first = redis.call('ZRANGE', K.since, 0, 0, 'WITHSCORES')
  if first[1] == nil then break end
  local ready = lane_keys(flow_of(first[1]))
  if redis.call('ZSCORE', ready, first[1]) then
    oldest = tonumber(first[2])
    break
  end
  redis.call('ZREM', K.since, first[1])
end
local due = redis.call('ZRANGEBYSCORE', K.scheduled, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if due[2] ~= nil and (oldest < 0 or tonumber(due[2]) < oldest) then
  oldest = tonumber(due[2])
end
return oldest
"#,
};
