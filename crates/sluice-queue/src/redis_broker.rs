//! The Redis broker: sorted sets and one hash per task, moved by Lua scripts.
//!
//! Keys of queue `q` in namespace `ns` (all in one cluster slot, by the `{q}` tag):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `ns:queue:{q}:ready` | zset | ready ids, score `(9 - priority)·10¹³ + ready-at ms` |
//! | `ns:queue:{q}:delayed` | zset | delayed ids (delays, retry backoff), score = not-before ms |
//! | `ns:queue:{q}:leased` | zset | leased ids, score = lease deadline ms |
//! | `ns:queue:{q}:dead` | zset | dead letters, score = death ms |
//! | `ns:queue:{q}:t:<id>` | hash | the envelope (`env`, JSON) and its mutable fields |
//! | `ns:queue:{q}:idem:<key>` | string | the first task's id, for the key's window |
//! | `ns:queue:paused` | set | the paused queues' names |
//! | `ns:workers:{workers}:live` | zset | announced node ids, score = announcement expiry ms |
//! | `ns:workers:{workers}:info` | hash | node id → `seen-ms|{"node","queues","started_at"}` |
//!
//! Why sorted sets and not Streams: priorities and delays need ordering by score,
//! and a lease deadline per task is a score too; every transition is one script
//! that moves an id between sets atomically, on Redis's own clock (`TIME`), so a
//! delayed task is never visible to the lease machinery before its time (the
//! multi-delivery Celery's Redis transport shows for ETA tasks cannot happen here).
//! The lease script promotes due delayed tasks and reclaims expired leases before it
//! pops, so no separate mover process is needed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use redis::Script;
use sluice_core::{Redis, RedisOptions, Unavailable};

use crate::broker::{
    Broker, CancelOutcome, LeaseRequest, LiveWorker, QueueError, RunningTask, WorkerBeat,
};
use crate::task::{
    Completion, Enqueued, Envelope, FailOutcome, Lease, LeaseRef, NewTask, QueueStats, TaskId,
    TaskState, TaskStatus,
};

const SCORE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function score(pr, at) return (9 - tonumber(pr)) * 1e13 + at end
";

const ENQUEUE_LUA: &str = r"
-- KEYS[1] ready, KEYS[2] delayed; ARGV[1] hash prefix, ARGV[2] idem prefix,
-- then per task: id, env, priority, delay ms, max attempts, result ttl ms, idem key, idem window ms
local now = now_ms()
local out = {}
for i = 3, #ARGV, 8 do
  local id, env, pr, delay = ARGV[i], ARGV[i+1], ARGV[i+2], tonumber(ARGV[i+3])
  local key = ARGV[i+6]
  local first = false
  if key ~= '' then
    local ik = ARGV[2] .. key
    first = redis.call('GET', ik)
    if not first then redis.call('SET', ik, id, 'PX', ARGV[i+7]) end
  end
  if first then
    out[#out+1] = first; out[#out+1] = '1'
  else
    local h = ARGV[1] .. id
    local nb = now + delay
    if delay > 0 then
      redis.call('HSET', h, 'env', env, 'pr', pr, 'mx', ARGV[i+4], 'ttl', ARGV[i+5], 'a', 0, 'nb', nb, 'st', 'delayed')
      redis.call('ZADD', KEYS[2], nb, id)
    else
      redis.call('HSET', h, 'env', env, 'pr', pr, 'mx', ARGV[i+4], 'ttl', ARGV[i+5], 'a', 0, 'nb', nb, 'st', 'ready')
      redis.call('ZADD', KEYS[1], score(pr, nb), id)
    end
    out[#out+1] = id; out[#out+1] = '0'
  end
end
return out
";

const LEASE_LUA: &str = r"
-- KEYS ready, delayed, leased, dead; ARGV hash prefix, max, visibility ms, token base
local now = now_ms()
local hp = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  local h = hp .. id
  local f = redis.call('HMGET', h, 'pr', 'nb')
  if f[1] then
    redis.call('HSET', h, 'st', 'ready')
    redis.call('ZADD', KEYS[1], score(f[1], tonumber(f[2]) or now), id)
  end
end
local exp = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(exp) do
  redis.call('ZREM', KEYS[3], id)
  local h = hp .. id
  local f = redis.call('HMGET', h, 'a', 'mx', 'pr', 'st')
  if f[4] == 'running' then
    local a, mx = tonumber(f[1]) or 0, tonumber(f[2]) or 1
    local msg = 'lease expired during attempt ' .. a .. ' of ' .. mx .. ' (the worker died, hung or lost Redis)'
    if a >= mx then
      redis.call('HSET', h, 'st', 'dead', 'err', msg, 'fin', now)
      redis.call('ZADD', KEYS[4], now, id)
    else
      redis.call('HSET', h, 'st', 'ready', 'err', msg, 'nb', now)
      redis.call('HINCRBY', h, 'rd', 1)
      redis.call('ZADD', KEYS[1], score(f[3], now), id)
    end
  end
end
local out = {tostring(now)}
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[2]))
local dl = now + tonumber(ARGV[3])
local zargs = {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local h = hp .. id
  local f = redis.call('HMGET', h, 'env', 'nb', 'err', 'a')
  if f[1] then
    local tok = ARGV[4] .. i
    local a = (tonumber(f[4]) or 0) + 1
    redis.call('HSET', h, 'st', 'running', 'lt', tok, 'a', a)
    zargs[#zargs+1] = dl; zargs[#zargs+1] = id
    out[#out+1] = tok; out[#out+1] = f[1]; out[#out+1] = tostring(a)
    out[#out+1] = f[2] or ''; out[#out+1] = f[3] or ''
  end
end
if #zargs > 0 then redis.call('ZADD', KEYS[3], unpack(zargs)) end
return out
";

const EXTEND_LUA: &str = r"
-- KEYS leased; ARGV hash prefix, visibility ms, then id, token pairs
local dl = now_ms() + tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 2 do
  local f = redis.call('HMGET', ARGV[1] .. ARGV[i], 'st', 'lt')
  if f[1] == 'running' and f[2] == ARGV[i+1] then
    redis.call('ZADD', KEYS[1], 'XX', dl, ARGV[i])
    out[#out+1] = 1
  else
    out[#out+1] = 0
  end
end
return out
";

const COMPLETE_LUA: &str = r"
-- KEYS leased, ready; ARGV hash prefix, then id, token, result ('' = none) triples
local now = now_ms()
local n = 0
local done, gone, requeued = {}, {}, {}
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  local h = ARGV[1] .. id
  local f = redis.call('HMGET', h, 'st', 'lt', 'ttl')
  if f[2] == ARGV[i+1] and (f[1] == 'running' or f[1] == 'ready') then
    done[#done+1] = id
    if f[1] == 'ready' then requeued[#requeued+1] = id end
    local ttl = tonumber(f[3]) or 0
    if ttl > 0 then
      redis.call('HSET', h, 'st', 'completed', 'res', ARGV[i+2], 'fin', now)
      redis.call('HDEL', h, 'lt')
      redis.call('PEXPIRE', h, ttl)
    else
      gone[#gone+1] = h
    end
    n = n + 1
  end
end
-- Variadic calls in slices, under Lua's argument limit.
for s = 1, #done, 1000 do redis.call('ZREM', KEYS[1], unpack(done, s, math.min(s + 999, #done))) end
for s = 1, #requeued, 1000 do redis.call('ZREM', KEYS[2], unpack(requeued, s, math.min(s + 999, #requeued))) end
for s = 1, #gone, 1000 do redis.call('DEL', unpack(gone, s, math.min(s + 999, #gone))) end
return n
";

const FAIL_LUA: &str = r"
-- KEYS leased, delayed, dead, task hash; ARGV token, error, retry ms (-1 = none), id
local now = now_ms()
local f = redis.call('HMGET', KEYS[4], 'st', 'lt', 'a', 'mx')
if f[1] ~= 'running' or f[2] ~= ARGV[1] then return {'lost', '0'} end
local id = ARGV[4]
redis.call('ZREM', KEYS[1], id)
local retry = tonumber(ARGV[3])
if retry >= 0 and tonumber(f[3]) < tonumber(f[4]) then
  local at = now + retry
  redis.call('HSET', KEYS[4], 'st', 'delayed', 'err', ARGV[2], 'nb', at)
  redis.call('ZADD', KEYS[2], at, id)
  return {'retry', tostring(at)}
end
redis.call('HSET', KEYS[4], 'st', 'dead', 'err', ARGV[2], 'fin', now)
redis.call('ZADD', KEYS[3], now, id)
return {'dead', tostring(now)}
";

const RELEASE_LUA: &str = r"
-- KEYS leased, ready, task hash; ARGV token, id
local now = now_ms()
local f = redis.call('HMGET', KEYS[3], 'st', 'lt', 'pr')
if f[1] ~= 'running' or f[2] ~= ARGV[1] then return 0 end
local id = ARGV[2]
redis.call('ZREM', KEYS[1], id)
redis.call('HINCRBY', KEYS[3], 'a', -1)
redis.call('HSET', KEYS[3], 'st', 'ready', 'nb', now)
redis.call('ZADD', KEYS[2], score(f[3], now), id)
return 1
";

const RELEASE_DELAYED_LUA: &str = r"
-- KEYS leased, delayed, task hash; ARGV token, id, delay ms, reason
local now = now_ms()
local f = redis.call('HMGET', KEYS[3], 'st', 'lt')
if f[1] ~= 'running' or f[2] ~= ARGV[1] then return 0 end
local id = ARGV[2]
local at = now + tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], id)
redis.call('HINCRBY', KEYS[3], 'a', -1)
redis.call('HSET', KEYS[3], 'st', 'delayed', 'nb', at, 'err', ARGV[4])
redis.call('ZADD', KEYS[2], at, id)
return 1
";

const RETRY_DEAD_LUA: &str = r"
-- KEYS dead, ready; ARGV hash prefix, then ids (none = the first 1000 dead)
local now = now_ms()
local ids = {}
if #ARGV > 1 then
  for i = 2, #ARGV do ids[#ids+1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', KEYS[1], 0, 999)
end
local n = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local h = ARGV[1] .. id
    local pr = redis.call('HGET', h, 'pr')
    if pr then
      redis.call('HSET', h, 'st', 'ready', 'a', 0, 'nb', now)
      redis.call('HDEL', h, 'fin', 'lt')
      redis.call('ZADD', KEYS[2], score(pr, now), id)
      n = n + 1
    end
  end
end
return n
";

const PURGE_DEAD_LUA: &str = r"
-- KEYS dead; ARGV hash prefix. Deletes up to 1000 dead tasks.
local ids = redis.call('ZRANGE', KEYS[1], 0, 999)
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
";

const DELETE_DEAD_LUA: &str = r"
-- KEYS dead; ARGV hash prefix, then ids. Deletes those of them that are dead.
local n = 0
for i = 2, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('DEL', ARGV[1] .. ARGV[i])
    n = n + 1
  end
end
return n
";

const CANCEL_LUA: &str = r"
-- KEYS ready, delayed, task hash; ARGV id. Deletes a waiting task.
local st = redis.call('HGET', KEYS[3], 'st')
if not st then return 'unknown' end
if st == 'ready' or st == 'delayed' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
  return 'cancelled'
end
return st
";

const ANNOUNCE_LUA: &str = r"
-- KEYS live (zset, score = expiry ms), info (hash node -> 'seen|json');
-- ARGV node, json, ttl ms. Drops entries that ran out.
local now = now_ms()
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
for _, n in ipairs(stale) do
  redis.call('ZREM', KEYS[1], n)
  redis.call('HDEL', KEYS[2], n)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], now .. '|' .. ARGV[2])
return now
";

const WITHDRAW_LUA: &str = r"
-- KEYS live, info; ARGV node
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
";

const WORKERS_LUA: &str = r"
-- KEYS live, info: node, expiry, 'seen|json' of each live worker
local now = now_ms()
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  local info = redis.call('HGET', KEYS[2], live[i])
  if info then
    out[#out+1] = live[i]; out[#out+1] = live[i+1]; out[#out+1] = info
  end
end
return out
";

/// Tasks per enqueue script call.
const ENQUEUE_BATCH: usize = 500;

/// Ids per delete-dead script call.
const ID_BATCH: usize = 1_000;

struct Scripts {
    enqueue: Script,
    lease: Script,
    extend: Script,
    complete: Script,
    fail: Script,
    release: Script,
    release_delayed: Script,
    retry_dead: Script,
    purge_dead: Script,
    delete_dead: Script,
    cancel: Script,
    announce: Script,
    withdraw: Script,
    workers: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{SCORE}{body}"));
        Self {
            enqueue: s(ENQUEUE_LUA),
            lease: s(LEASE_LUA),
            extend: s(EXTEND_LUA),
            complete: s(COMPLETE_LUA),
            fail: s(FAIL_LUA),
            release: s(RELEASE_LUA),
            release_delayed: s(RELEASE_DELAYED_LUA),
            retry_dead: s(RETRY_DEAD_LUA),
            purge_dead: s(PURGE_DEAD_LUA),
            delete_dead: s(DELETE_DEAD_LUA),
            cancel: s(CANCEL_LUA),
            announce: s(ANNOUNCE_LUA),
            withdraw: s(WITHDRAW_LUA),
            workers: s(WORKERS_LUA),
        }
    }
}

/// The keys of one queue.
struct Keys {
    ready: String,
    delayed: String,
    leased: String,
    dead: String,
    /// Prefix of task hashes (`…:t:`).
    task: String,
    /// Prefix of idempotency keys (`…:idem:`).
    idem: String,
}

/// A broker on one Redis server or cluster.
pub struct RedisBroker {
    redis: Arc<Redis>,
    scripts: Scripts,
    known_queues: sluice_core::SeenOnce,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("namespace", &self.redis.namespace())
            .finish()
    }
}

/// `script` on one lease of the queue with keys `k`: keys `leased`, then
/// `middle`, then the task's hash; first argument the lease's token.
fn lease_script<'a>(
    script: &'a redis::Script,
    k: &Keys,
    lease: &LeaseRef,
    middle: &[&String],
) -> redis::ScriptInvocation<'a> {
    let mut inv = script.key(&k.leased);
    for key in middle {
        inv.key(*key);
    }
    inv.key(format!("{}{}", k.task, lease.id)).arg(&lease.token);
    inv
}

/// `ZRANGE key 0 (limit - 1)`: the first `limit` members (at least one).
fn zrange_head(key: &str, limit: usize) -> redis::Cmd {
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(limit.max(1) as i64 - 1)
        .to_owned()
}

fn unavailable(e: Unavailable) -> QueueError {
    metrics::counter!(crate::metrics::BROKER_ERRORS, "broker" => "redis").increment(1);
    QueueError::Unavailable {
        broker: "redis",
        message: e.to_string(),
    }
}

fn corrupt(id: &str, message: impl Into<String>) -> QueueError {
    QueueError::Corrupt {
        broker: "redis",
        id: id.to_owned(),
        message: message.into(),
    }
}

fn token_base() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}.")
}

impl RedisBroker {
    /// A broker on an existing handle (shares its connection, breaker and
    /// namespace).
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            scripts: Scripts::new(),
            known_queues: sluice_core::SeenOnce::new(),
        }
    }

    /// Connects to one Redis server at `url`, keys under `namespace`.
    ///
    /// # Errors
    ///
    /// [`QueueError::Invalid`] for a URL redis-rs does not accept (the message
    /// never holds the password).
    pub fn connect(url: &str, namespace: &str) -> Result<Self, QueueError> {
        let opts = RedisOptions {
            urls: vec![url.to_owned()],
            namespace: namespace.to_owned(),
            timeout: Duration::from_secs(2),
            ..RedisOptions::default()
        };
        let redis = Redis::connect(&opts).map_err(|e| QueueError::Invalid(e.to_string()))?;
        Ok(Self::new(redis))
    }

    /// Runs `cmd` on the shared handle; a failure is a broker error.
    async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, QueueError> {
        self.redis.query(op, cmd).await.map_err(unavailable)
    }

    /// Runs a script on the shared handle; a failure is a broker error.
    async fn eval<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, QueueError> {
        self.redis.eval(op, inv).await.map_err(unavailable)
    }

    /// The shared Redis handle.
    pub fn redis(&self) -> &Arc<Redis> {
        &self.redis
    }

    fn keys(&self, queue: &str) -> Keys {
        let base = self.redis.key("queue", &format!("{{{queue}}}:"));
        Keys {
            ready: format!("{base}ready"),
            delayed: format!("{base}delayed"),
            leased: format!("{base}leased"),
            dead: format!("{base}dead"),
            task: format!("{base}t:"),
            idem: format!("{base}idem:"),
        }
    }

    /// The worker announcements: a zset of node ids scored by expiry and a hash
    /// of their details, in one cluster slot.
    fn worker_keys(&self) -> (String, String) {
        (
            self.redis.key("workers", "{workers}:live"),
            self.redis.key("workers", "{workers}:info"),
        )
    }

    fn names_key(&self) -> String {
        self.redis.key("queue", "names")
    }

    /// The set of paused queue names (no queue's keys collide: theirs have braces).
    fn paused_key(&self) -> String {
        self.redis.key("queue", "paused")
    }

    async fn remember_queue(&self, queue: &str) -> Result<(), QueueError> {
        if self.known_queues.seen(queue) {
            return Ok(());
        }
        let cmd = redis::cmd("SADD")
            .arg(self.names_key())
            .arg(queue)
            .to_owned();
        self.query::<i64>("queue.names", &cmd).await?;
        self.known_queues.mark(queue);
        Ok(())
    }

    async fn enqueue_batch(
        &self,
        queue: &str,
        tasks: &[NewTask],
    ) -> Result<Vec<Enqueued>, QueueError> {
        let k = self.keys(queue);
        // The envelope's created_at is this node's clock; deadlines use Redis's.
        let now = sluice_core::Clock::now_millis(&sluice_core::SystemClock);
        let mut inv = self.scripts.enqueue.key(&k.ready);
        inv.key(&k.delayed).arg(&k.task).arg(&k.idem);
        for t in tasks {
            let env = serde_json::to_string(&t.to_envelope(now))
                .map_err(|e| QueueError::Invalid(format!("payload of task {}: {e}", t.id)))?;
            inv.arg(t.id.to_string())
                .arg(env)
                .arg(t.priority)
                .arg(t.delay.as_millis() as u64)
                .arg(t.max_attempts)
                .arg(t.result_ttl.as_millis() as u64)
                .arg(t.idempotency_key.as_deref().unwrap_or(""))
                .arg(t.idempotency_window.as_millis().max(1) as u64);
        }
        let out: Vec<String> = self.eval("queue.enqueue", inv).await?;
        let mut res = Vec::with_capacity(tasks.len());
        for pair in out.chunks(2) {
            let [id, dup] = pair else {
                return Err(corrupt("-", "odd enqueue reply"));
            };
            let id: TaskId = id.parse().map_err(|e: String| corrupt(id, e))?;
            let duplicate = dup == "1";
            metrics::counter!(crate::metrics::ENQUEUED, "queue" => queue.to_owned(),
                "outcome" => if duplicate { "duplicate" } else { "new" })
            .increment(1);
            res.push(Enqueued { id, duplicate });
        }
        Ok(res)
    }
}

fn parse_envelope(id: &str, env: &str) -> Result<Envelope, QueueError> {
    serde_json::from_str(env).map_err(|e| corrupt(id, format!("envelope: {e}")))
}

fn opt_str(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, task: NewTask) -> Result<Enqueued, QueueError> {
        let mut v = self.enqueue_many(vec![task]).await?;
        v.pop()
            .ok_or_else(|| corrupt("-", "enqueue returned nothing"))
    }

    async fn enqueue_many(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, QueueError> {
        for t in &tasks {
            t.validate().map_err(QueueError::Invalid)?;
        }
        let mut out = Vec::with_capacity(tasks.len());
        // Keep order: consecutive runs of one queue go together.
        let mut start = 0;
        while start < tasks.len() {
            let queue = tasks[start].queue.clone();
            self.remember_queue(&queue).await?;
            let mut end = start + 1;
            while end < tasks.len() && end - start < ENQUEUE_BATCH && tasks[end].queue == queue {
                end += 1;
            }
            out.extend(self.enqueue_batch(&queue, &tasks[start..end]).await?);
            start = end;
        }
        Ok(out)
    }

    async fn lease_request(&self, req: LeaseRequest<'_>) -> Result<Vec<Lease>, QueueError> {
        let (queue, visibility) = (req.queue, req.visibility);
        // One script call stays short (and its variadic ZADD small).
        let max = req.max.get().min(1000);
        let k = self.keys(queue);
        let mut inv = self.scripts.lease.key(&k.ready);
        inv.key(&k.delayed)
            .key(&k.leased)
            .key(&k.dead)
            .arg(&k.task)
            .arg(max)
            .arg(visibility.as_millis().max(1) as u64)
            .arg(token_base());
        let out: Vec<String> = self.eval("queue.lease", inv).await?;
        let mut it = out.into_iter();
        let now: i64 = it
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("-", "lease reply without time"))?;
        let deadline = now + visibility.as_millis().max(1) as i64;
        let rest: Vec<String> = it.collect();
        let mut leases = Vec::with_capacity(rest.len() / 5);
        for f in rest.chunks(5) {
            let [token, env, attempt, nb, err] = f else {
                return Err(corrupt("-", "short lease reply"));
            };
            let mut task = parse_envelope(token, env)?;
            task.attempt = attempt.parse().unwrap_or(1);
            task.not_before = nb.parse().unwrap_or(task.not_before);
            task.last_error = opt_str(err.clone());
            leases.push(Lease {
                task,
                token: token.clone(),
                deadline,
            });
        }
        Ok(leases)
    }

    async fn extend(
        &self,
        leases: &[LeaseRef],
        visibility: Duration,
    ) -> Result<Vec<bool>, QueueError> {
        let mut flags = vec![false; leases.len()];
        // One call per queue.
        let mut queues: Vec<&str> = leases.iter().map(|l| l.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        for q in queues {
            let k = self.keys(q);
            let mut inv = self.scripts.extend.key(&k.leased);
            inv.arg(&k.task).arg(visibility.as_millis().max(1) as u64);
            let idx: Vec<usize> = (0..leases.len())
                .filter(|&i| leases[i].queue == q)
                .collect();
            for &i in &idx {
                inv.arg(leases[i].id.to_string()).arg(&leases[i].token);
            }
            let out: Vec<i64> = self.eval("queue.extend", inv).await?;
            for (j, &i) in idx.iter().enumerate() {
                flags[i] = out.get(j).copied() == Some(1);
            }
        }
        Ok(flags)
    }

    async fn complete(&self, done: &[Completion]) -> Result<usize, QueueError> {
        let mut queues: Vec<&str> = done.iter().map(|c| c.lease.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        let mut n = 0;
        for q in queues {
            let k = self.keys(q);
            let mut inv = self.scripts.complete.key(&k.leased);
            inv.key(&k.ready).arg(&k.task);
            for c in done.iter().filter(|c| c.lease.queue == q) {
                let result = match &c.result {
                    Some(v) => serde_json::to_string(v).unwrap_or_default(),
                    None => String::new(),
                };
                inv.arg(c.lease.id.to_string())
                    .arg(&c.lease.token)
                    .arg(result);
            }
            n += self.eval::<usize>("queue.complete", inv).await?;
        }
        Ok(n)
    }

    async fn fail(
        &self,
        lease: &LeaseRef,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<FailOutcome, QueueError> {
        let k = self.keys(&lease.queue);
        let mut inv = lease_script(&self.scripts.fail, &k, lease, &[&k.delayed, &k.dead]);
        inv.arg(error)
            .arg(retry_in.map_or(-1, |d| d.as_millis() as i64))
            .arg(lease.id.to_string());
        let (what, at): (String, String) = self.eval("queue.fail", inv).await?;
        Ok(match what.as_str() {
            "retry" => FailOutcome::Retry(at.parse().unwrap_or(0)),
            "dead" => FailOutcome::Dead,
            _ => FailOutcome::LeaseLost,
        })
    }

    async fn release(&self, lease: &LeaseRef) -> Result<bool, QueueError> {
        let k = self.keys(&lease.queue);
        let mut inv = lease_script(&self.scripts.release, &k, lease, &[&k.ready]);
        inv.arg(lease.id.to_string());
        let n: i64 = self.eval("queue.release", inv).await?;
        Ok(n == 1)
    }

    async fn release_delayed(
        &self,
        lease: &LeaseRef,
        delay: Duration,
        reason: &str,
    ) -> Result<bool, QueueError> {
        let k = self.keys(&lease.queue);
        let mut inv = lease_script(&self.scripts.release_delayed, &k, lease, &[&k.delayed]);
        inv.arg(lease.id.to_string())
            .arg(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            .arg(reason);
        let n: i64 = self.eval("queue.release_delayed", inv).await?;
        Ok(n == 1)
    }

    async fn status(&self, queue: &str, id: TaskId) -> Result<Option<TaskStatus>, QueueError> {
        let k = self.keys(queue);
        let cmd = redis::cmd("HGETALL")
            .arg(format!("{}{}", k.task, id))
            .to_owned();
        let map: std::collections::HashMap<String, String> =
            self.query("queue.status", &cmd).await?;
        let Some(env) = map.get("env") else {
            return Ok(None);
        };
        let sid = id.to_string();
        let mut task = parse_envelope(&sid, env)?;
        let num = |f: &str| map.get(f).and_then(|v| v.parse::<i64>().ok());
        task.attempt = num("a").unwrap_or(0).max(0) as u32;
        task.not_before = num("nb").unwrap_or(task.not_before);
        task.last_error = map.get("err").cloned().and_then(opt_str);
        let state = map
            .get("st")
            .and_then(|s| TaskState::parse(s))
            .ok_or_else(|| corrupt(&sid, "unknown state"))?;
        let result = match map.get("res").filter(|s| !s.is_empty()) {
            Some(r) => {
                Some(serde_json::from_str(r).map_err(|e| corrupt(&sid, format!("result: {e}")))?)
            }
            None => None,
        };
        Ok(Some(TaskStatus {
            task,
            state,
            result,
            finished_at: num("fin"),
            redelivered: num("rd").unwrap_or(0).max(0) as u32,
        }))
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        let k = self.keys(queue);
        let mut p = redis::pipe();
        for key in [&k.ready, &k.delayed, &k.leased, &k.dead] {
            p.cmd("ZCARD").arg(key);
        }
        let mut c = self.redis.conn();
        let (ready, delayed, running, dead): (u64, u64, u64, u64) =
            tokio::time::timeout(Duration::from_secs(2), p.query_async(&mut c))
                .await
                .map_err(|_| QueueError::Unavailable {
                    broker: "redis",
                    message: "no answer within 2s".into(),
                })?
                .map_err(|e| QueueError::Unavailable {
                    broker: "redis",
                    message: e.to_string(),
                })?;
        Ok(QueueStats {
            ready,
            delayed,
            running,
            dead,
        })
    }

    async fn queues(&self) -> Result<Vec<String>, QueueError> {
        let cmd = redis::cmd("SMEMBERS").arg(self.names_key()).to_owned();
        let mut v: Vec<String> = self.query("queue.names", &cmd).await?;
        v.sort();
        Ok(v)
    }

    async fn dead(&self, queue: &str, limit: usize) -> Result<Vec<Envelope>, QueueError> {
        let cmd = zrange_head(&self.keys(queue).dead, limit);
        let ids: Vec<String> = self.query("queue.dead", &cmd).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let tid: TaskId = id.parse().map_err(|e: String| corrupt(&id, e))?;
            if let Some(s) = self.status(queue, tid).await? {
                out.push(s.task);
            }
        }
        Ok(out)
    }

    async fn retry_dead(&self, queue: &str, ids: Option<&[TaskId]>) -> Result<u64, QueueError> {
        let k = self.keys(queue);
        let mut total = 0;
        loop {
            let mut inv = self.scripts.retry_dead.key(&k.dead);
            inv.key(&k.ready).arg(&k.task);
            if let Some(ids) = ids {
                if ids.is_empty() {
                    return Ok(0);
                }
                for id in ids {
                    inv.arg(id.to_string());
                }
            }
            let n: u64 = self.eval("queue.retry_dead", inv).await?;
            total += n;
            if ids.is_some() || n == 0 {
                return Ok(total);
            }
        }
    }

    async fn purge_dead(&self, queue: &str) -> Result<u64, QueueError> {
        let k = self.keys(queue);
        let mut total = 0;
        loop {
            let mut inv = self.scripts.purge_dead.key(&k.dead);
            inv.arg(&k.task);
            let n: u64 = self.eval("queue.purge_dead", inv).await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    async fn delete_dead(&self, queue: &str, ids: &[TaskId]) -> Result<u64, QueueError> {
        let k = self.keys(queue);
        let mut total = 0;
        for chunk in ids.chunks(ID_BATCH) {
            let mut inv = self.scripts.delete_dead.key(&k.dead);
            inv.arg(&k.task);
            for id in chunk {
                inv.arg(id.to_string());
            }
            total += self.eval::<u64>("queue.delete_dead", inv).await?;
        }
        Ok(total)
    }

    async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        crate::task::check_queue_name(queue).map_err(QueueError::Invalid)?;
        let cmd = redis::cmd(if paused { "SADD" } else { "SREM" })
            .arg(self.paused_key())
            .arg(queue)
            .to_owned();
        self.query::<i64>("queue.pause", &cmd).await?;
        Ok(())
    }

    async fn paused_queues(&self) -> Result<Vec<String>, QueueError> {
        let cmd = redis::cmd("SMEMBERS").arg(self.paused_key()).to_owned();
        let mut v: Vec<String> = self.query("queue.paused", &cmd).await?;
        v.sort();
        Ok(v)
    }

    async fn oldest_ready(&self, queue: &str) -> Result<Option<i64>, QueueError> {
        // A ready task's score is (9 - priority) × 1e13 + its not-before time:
        // the first of each priority's band is that priority's oldest.
        const BAND: i64 = 10_000_000_000_000;
        let k = self.keys(queue);
        let mut p = redis::pipe();
        for band in 0..10i64 {
            p.cmd("ZRANGEBYSCORE")
                .arg(&k.ready)
                .arg(band * BAND)
                .arg(format!("({}", (band + 1) * BAND))
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(1);
        }
        let mut c = self.redis.conn();
        let bands: Vec<Vec<(String, f64)>> =
            tokio::time::timeout(Duration::from_secs(2), p.query_async(&mut c))
                .await
                .map_err(|_| QueueError::Unavailable {
                    broker: "redis",
                    message: "no answer within 2s".into(),
                })?
                .map_err(|e| QueueError::Unavailable {
                    broker: "redis",
                    message: e.to_string(),
                })?;
        Ok(bands
            .into_iter()
            .flatten()
            .map(|(_, score)| (score as i64).rem_euclid(BAND))
            .min())
    }

    async fn announce(&self, beat: &WorkerBeat, ttl: Duration) -> Result<(), QueueError> {
        let (live, info) = self.worker_keys();
        let json = serde_json::to_string(beat)
            .map_err(|e| QueueError::Invalid(format!("worker {}: {e}", beat.node)))?;
        let mut inv = self.scripts.announce.key(&live);
        inv.key(&info)
            .arg(&beat.node)
            .arg(json)
            .arg(ttl.as_millis().max(1) as u64);
        self.eval::<i64>("queue.announce", inv).await?;
        Ok(())
    }

    async fn withdraw(&self, node: &str) -> Result<(), QueueError> {
        let (live, info) = self.worker_keys();
        let mut inv = self.scripts.withdraw.key(&live);
        inv.key(&info).arg(node);
        self.eval::<i64>("queue.withdraw", inv).await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<LiveWorker>, QueueError> {
        let (live, info) = self.worker_keys();
        let mut inv = self.scripts.workers.key(&live);
        inv.key(&info);
        let out: Vec<String> = self.eval("queue.workers", inv).await?;
        let mut v = Vec::with_capacity(out.len() / 3);
        for f in out.chunks(3) {
            let [node, expires, info] = f else {
                return Err(corrupt("-", "short workers reply"));
            };
            let (seen, json) = info.split_once('|').unwrap_or(("0", info));
            let beat: WorkerBeat = serde_json::from_str(json)
                .map_err(|e| corrupt(node, format!("worker announcement: {e}")))?;
            v.push(LiveWorker {
                node: node.clone(),
                queues: beat.queues,
                started_at: beat.started_at,
                seen_at: seen.parse().unwrap_or(0),
                expires_at: expires.parse::<f64>().map_or(0, |f| f as i64),
            });
        }
        v.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(v)
    }

    async fn cancel(&self, queue: &str, id: TaskId) -> Result<CancelOutcome, QueueError> {
        let k = self.keys(queue);
        let mut inv = self.scripts.cancel.key(&k.ready);
        inv.key(&k.delayed)
            .key(format!("{}{}", k.task, id))
            .arg(id.to_string());
        let what: String = self.eval("queue.cancel", inv).await?;
        Ok(match what.as_str() {
            "cancelled" => CancelOutcome::Cancelled,
            "unknown" => CancelOutcome::Unknown,
            "running" => CancelOutcome::Running,
            other => match TaskState::parse(other) {
                Some(st) => CancelOutcome::Finished(st),
                None => return Err(corrupt(&id.to_string(), "unknown state")),
            },
        })
    }

    async fn running(&self, queue: &str, limit: usize) -> Result<Vec<RunningTask>, QueueError> {
        let cmd = zrange_head(&self.keys(queue).leased, limit)
            .arg("WITHSCORES")
            .to_owned();
        let pairs: Vec<(String, f64)> = self.query("queue.running", &cmd).await?;
        pairs
            .into_iter()
            .map(|(id, until)| {
                Ok(RunningTask {
                    id: id.parse().map_err(|e: String| corrupt(&id, e))?,
                    lease_until: until as i64,
                })
            })
            .collect()
    }
}
