//! The global API budget: a sliding window in Redis that every process, on
//! every machine, takes a token from before every Alpaca call.
//!
//! One Lua script per acquire does the whole decision atomically on the
//! server, with the server's clock (`TIME`), never a worker's: it drops
//! tokens older than the window, and grants one if fewer than N remain, or
//! says how long until the oldest one leaves. A full window means wait,
//! never fail. The window is stretched by a small safety margin, so that
//! network jitter between taking a token and the request reaching the API
//! cannot push the API's own count over N.
//!
//! A 429, or `X-RateLimit-Remaining: 0`, pauses the whole budget until the
//! reset time the API gave: the pause is a key every acquire reads.
//!
//! Callers take from one of three [`Share`]s, and priority is decided at the
//! moment of contention, not by keeping tokens idle: an interactive caller
//! refused for a full window claims the next free token (an entry in a
//! sorted set of waiters that lapses a moment after its retry), and while
//! any claim stands no bulk or backfill caller is granted one. With no
//! interactive demand, bulk work may fill the whole window. Backfills take
//! only what the daily pipeline leaves: while a bulk caller is waiting for
//! a token (a short-lived flag it sets in Redis), no backfill caller gets
//! one. An optional static reserve ([`Budget::set_reserve`], default none)
//! still keeps a share of each window for interactive callers only.
//!
//! That the next free token is never far off, bulk and backfill callers
//! are paced once the window is half full: one token per window ÷ N (a due
//! time in Redis, which every grant moves on by one interval). Below half,
//! they take tokens as fast as they come, so a small job is not slowed; at
//! saturation the window's tokens are spread evenly, and an interactive
//! caller's claim is served within about one interval.
//!
//! The same script can first ask the API's circuit breaker (its hash shares
//! the budget's hash tag): one round trip admits a call or says why not
//! ([`Budget::acquire`]).

use crate::keys::RedisKeys;
use crate::redis_conn::RedisPool;
use deadpool_redis::redis::Script;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::redis_conn::REDIS_TIMEOUT;

const ACQUIRE: &str = r"
-- KEYS[1] window (sorted set: member -> grant time in ms), KEYS[2] pause-until (ms),
-- KEYS[3] bulk-waiting flag, KEYS[4] history (hash: Unix minute -> tokens granted in it),
-- KEYS[5] interactive waiters (sorted set: waiter -> ms its claim lapses),
-- KEYS[6] the API's circuit breaker (hash; see breaker.rs), KEYS[7] pace (ms: when the
-- next paced token is due)
-- ARGV[1] ceiling (tokens this share may fill the window to), ARGV[2] window + margin in ms,
-- ARGV[3] member, ARGV[4] share: full | shared | leftover, ARGV[5] waiter (the same
-- for every try of one call), ARGV[6] breaker probe lease in ms (0: no breaker),
-- ARGV[7] how long past its wait a refused interactive caller's claim lasts (ms)
-- Returns {1, now, count, probe} for a token, {0, wait_ms, count, why} otherwise;
-- why: 0 full, 1 paused, 2 breaker open, 3 an interactive caller waits, 4 a bulk
-- caller waits, 5 paced; plus 8 when this waiter holds the breaker's probe lease
-- (probe 1).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local probe = 0
local lease = tonumber(ARGV[6])
if lease > 0 then
  local breaker = breaker_admit(KEYS[6], ARGV[5], lease, now)
  if breaker[1] == 0 then
    return {0, breaker[2], -1, 2}
  end
  if breaker[1] == 2 then
    probe = 1
  end
end
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return {0, paused - now, -1, 1 + 8 * probe}
end
local span = tonumber(ARGV[2])
local share = ARGV[4]
local ceiling = tonumber(ARGV[1])
local interval = span / ceiling
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
local count = redis.call('ZCARD', KEYS[1])
local function until_free()
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then
    return math.max(1, tonumber(oldest[2]) + span - now)
  end
  return span
end
local refused = nil
local why = 0
if share ~= 'full' then
  -- Priority at the moment of contention: while an interactive caller waits
  -- for a token, the next free ones are its.
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) > 0 then
    local wait = 25
    if count >= ceiling then
      wait = until_free()
    end
    return {0, wait, count, 3 + 8 * probe}
  end
  if share == 'leftover' then
    local waiting = redis.call('PTTL', KEYS[3])
    if waiting > 0 then
      return {0, waiting, count, 4 + 8 * probe}
    end
  end
  -- Past half the window, bulk and backfill calls keep to one token per
  -- window / ceiling, so that the window's tokens stay spread out and the
  -- next one to free is never far off for an interactive caller.
  local due = tonumber(redis.call('GET', KEYS[7]) or '0')
  if count < ceiling and count * 2 >= ceiling and due > now then
    refused = math.max(1, math.ceil(due - now))
    why = 5
  end
end
if count < ceiling and not refused then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], span)
  if share == 'full' then
    redis.call('ZREM', KEYS[5], ARGV[5])
  end
  -- The pace: one interval past the last due time, which may lag now by a
  -- quarter interval at most: a caller's lateness (its jitter, a round
  -- trip) is made up for, but tokens never bunch more than that, so no
  -- gap between them grows past 1.25 intervals.
  -- Below half the window nothing is paced and the pace does not move.
  if count * 2 >= ceiling then
    local due = tonumber(redis.call('GET', KEYS[7]) or '0')
    due = math.max(due, now - interval / 4) + interval
    redis.call('SET', KEYS[7], string.format('%.3f', due), 'PX', math.ceil(span))
  end
  local minute = math.floor(now / 60000)
  if redis.call('HINCRBY', KEYS[4], minute, 1) == 1 then
    -- A new minute: forget those over two hours old (a field a minute).
    for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
      if tonumber(field) < minute - 120 then
        redis.call('HDEL', KEYS[4], field)
      end
    end
    redis.call('EXPIRE', KEYS[4], 7260)
  end
  return {1, now, count + 1, probe}
end
local wait = refused or until_free()
if share == 'full' then
  -- Claim the next free token: bulk and backfill callers stand back until
  -- this caller has come back for it (or its claim lapses).
  local slack = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[5], now + wait + slack, ARGV[5])
  redis.call('PEXPIRE', KEYS[5], span + slack)
elseif share == 'shared' then
  -- Backfills stand back until this caller's next try has had its chance.
  redis.call('SET', KEYS[3], '1', 'PX', wait + 500)
end
return {0, wait, count, why + 8 * probe}
";

const PAUSE: &str = r"
-- KEYS[1] pause-until (ms); ARGV[1] until (ms, Unix). Only ever extends a pause.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wanted = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if wanted > now and wanted > current then
  redis.call('SET', KEYS[1], wanted, 'PX', wanted - now)
  return wanted - now
end
return 0
";

const USAGE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
return {redis.call('ZCARD', KEYS[1]), math.max(0, paused - now)}
";

/// The budget's store could not be asked. Calls are not made (fail closed).
#[derive(Debug, thiserror::Error)]
#[error("API budget unavailable (Redis): {0}")]
pub struct LimiterError(String);

impl From<String> for LimiterError {
    fn from(message: String) -> Self {
        LimiterError(message)
    }
}

/// Which part of a budget a caller may take from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// The whole window: interactive requests.
    Full,
    /// The window less the interactive reserve: the daily pipeline.
    Shared,
    /// As [`Share::Shared`], and only while no `Shared` caller waits: backfills.
    Leftover,
}

impl Share {
    fn as_str(self) -> &'static str {
        match self {
            Share::Full => "full",
            Share::Shared => "shared",
            Share::Leftover => "leftover",
        }
    }
}

/// The size of one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSize {
    /// Calls per window.
    pub limit: u32,
    /// Window length.
    pub window: Duration,
    /// Added to the window to absorb jitter between token and arrival.
    pub margin: Duration,
}

/// The answer to one acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// A token: the call may be made now. `in_window` counts it.
    Granted {
        /// Tokens in the window, this one included.
        in_window: u32,
        /// When it was granted, on Redis's clock (Unix milliseconds).
        at_ms: i64,
        /// The breaker was half-open and this call is its probe: report its
        /// outcome with the waiter's id.
        probe: bool,
    },
    /// No token; try again after this long (the window is full, or paused).
    Wait {
        /// How long until a token can be free.
        wait: Duration,
        /// True when the budget is paused by the API's feedback.
        paused: bool,
        /// Why no token was granted.
        why: Refusal,
        /// This waiter holds the breaker's probe lease (give it back if the
        /// call is abandoned).
        probe: bool,
    },
}

/// Why an acquire was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every token of the window (or of this share of it) is taken.
    Full,
    /// The API's rate-limit feedback paused the budget.
    Paused,
    /// The API's circuit breaker is open (or another call is its probe).
    BreakerOpen,
    /// An interactive caller has claimed the next free token.
    InteractiveWaiting,
    /// A bulk caller is waiting; backfills stand back.
    BulkWaiting,
    /// Past half the window, bulk and backfill calls keep to the pace of
    /// one token per window / N.
    Paced,
}

impl Refusal {
    fn from_code(code: i64) -> Self {
        match code & 7 {
            1 => Refusal::Paused,
            2 => Refusal::BreakerOpen,
            3 => Refusal::InteractiveWaiting,
            4 => Refusal::BulkWaiting,
            5 => Refusal::Paced,
            _ => Refusal::Full,
        }
    }
}

/// How long a refused interactive caller's claim on the next token outlives
/// the wait it was told (its jitter, at most 50 ms, and a round trip).
const CLAIM_SLACK: Duration = Duration::from_millis(250);

/// Where a budget stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Tokens in the current window.
    pub in_window: u32,
    /// Time left of a pause, if paused.
    pub paused_for: Duration,
}

/// One budget (trading or market data) in Redis.
#[derive(Debug)]
pub struct Budget {
    pool: RedisPool,
    window_key: String,
    pause_key: String,
    waiting_key: String,
    history_key: String,
    interactive_key: String,
    breaker_key: String,
    pace_key: String,
    size: BudgetSize,
    /// Tokens of each window only [`Share::Full`] may take.
    reserve: AtomicU32,
    member_prefix: String,
    counter: AtomicU64,
}

/// A Redis pool for `url`, one server or a cluster (see
/// [`crate::redis_conn`]); waits are bounded, so an unreachable Redis is an
/// error within seconds, not a hang.
pub fn redis_pool(url: &str) -> Result<RedisPool, LimiterError> {
    RedisPool::new(url).map_err(|e| LimiterError(e.0))
}

impl Budget {
    /// The budget `name` of `namespace`; its keys share one hash tag
    /// (see [`RedisKeys::budget_window`]).
    pub fn new(pool: RedisPool, namespace: &str, name: &str, size: BudgetSize) -> Self {
        let keys = RedisKeys::new(namespace);
        Budget {
            pool,
            window_key: keys.budget_window(name),
            pause_key: keys.budget_pause(name),
            waiting_key: keys.budget_bulk_waiting(name),
            history_key: keys.budget_history(name),
            interactive_key: keys.budget_interactive_waiting(name),
            breaker_key: keys.breaker(name),
            pace_key: keys.budget_pace(name),
            size,
            reserve: AtomicU32::new(0),
            member_prefix: uuid::Uuid::new_v4().simple().to_string(),
            counter: AtomicU64::new(0),
        }
    }

    /// Keeps `fraction` of each window (rounded up, at most all but one
    /// token) for [`Share::Full`] callers from now on.
    pub fn set_reserve(&self, fraction: f64) {
        let wanted = (f64::from(self.size.limit) * fraction.clamp(0.0, 1.0)).ceil() as u32;
        self.reserve
            .store(wanted.min(self.size.limit.saturating_sub(1)), Ordering::Relaxed);
    }

    /// Tokens of each window kept for interactive callers.
    pub fn reserve(&self) -> u32 {
        self.reserve.load(Ordering::Relaxed)
    }

    /// The Redis pool the budget lives in.
    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    /// The budget's size.
    pub fn size(&self) -> BudgetSize {
        self.size
    }

    fn span_ms(&self) -> u64 {
        u64::try_from((self.size.window + self.size.margin).as_millis()).unwrap_or(u64::MAX)
    }

    async fn run<T: deadpool_redis::redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<T, LimiterError> {
        let call = async {
            let mut conn = self.pool.get().await.map_err(|e| LimiterError(e.to_string()))?;
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(arg);
            }
            invocation
                .invoke_async::<T>(&mut conn)
                .await
                .map_err(|e| LimiterError(e.to_string()))
        };
        tokio::time::timeout(REDIS_TIMEOUT * 2, call)
            .await
            .map_err(|_| LimiterError("no answer in time".into()))?
    }

    /// One atomic acquire from the whole window.
    pub async fn try_acquire(&self) -> Result<Acquire, LimiterError> {
        self.try_acquire_as(Share::Full).await
    }

    /// One atomic acquire from one share of the window, the breaker not
    /// asked. Every try of this process counts as one waiter.
    pub async fn try_acquire_as(&self, share: Share) -> Result<Acquire, LimiterError> {
        self.acquire(share, &self.member_prefix, None).await
    }

    /// One atomic acquire, in one round trip: when `probe_lease` is given,
    /// the API's circuit breaker first (open: refused; half-open: this
    /// waiter takes the probe lease for that long, or is refused while
    /// another holds it), then the budget. `waiter` names one call across
    /// its tries, so that its claim on the next token (interactive) and its
    /// probe lease stay its own.
    pub async fn acquire(
        &self,
        share: Share,
        waiter: &str,
        probe_lease: Option<Duration>,
    ) -> Result<Acquire, LimiterError> {
        static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| Script::new(&format!("{}{ACQUIRE}", crate::breaker::ADMIT_FUNCTION)));
        let member = format!(
            "{}:{}",
            self.member_prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_string();
        let (granted, wait_or_time, count, why): (i64, i64, i64, i64) = self
            .run(
                script,
                &[
                    &self.window_key,
                    &self.pause_key,
                    &self.waiting_key,
                    &self.history_key,
                    &self.interactive_key,
                    &self.breaker_key,
                    &self.pace_key,
                ],
                &[
                    self.ceiling(share).to_string(),
                    self.span_ms().to_string(),
                    member,
                    share.as_str().to_owned(),
                    waiter.to_owned(),
                    probe_lease.map_or_else(|| "0".to_owned(), |d| ms(d.max(Duration::from_millis(1)))),
                    ms(CLAIM_SLACK),
                ],
            )
            .await?;
        if granted == 1 {
            return Ok(Acquire::Granted {
                in_window: u32::try_from(count).unwrap_or(u32::MAX),
                at_ms: wait_or_time,
                probe: why == 1,
            });
        }
        let why_not = Refusal::from_code(why);
        Ok(Acquire::Wait {
            wait: Duration::from_millis(u64::try_from(wait_or_time.max(1)).unwrap_or(1)),
            paused: why_not == Refusal::Paused,
            why: why_not,
            probe: why & 8 != 0,
        })
    }

    fn ceiling(&self, share: Share) -> u32 {
        match share {
            Share::Full => self.size.limit,
            Share::Shared | Share::Leftover => self.size.limit.saturating_sub(self.reserve()).max(1),
        }
    }

    /// Pauses the budget until `until_unix_ms`; never shortens a pause.
    pub async fn pause_until(&self, until_unix_ms: i64) -> Result<Duration, LimiterError> {
        static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| Script::new(PAUSE));
        let ms: i64 = self
            .run(script, &[&self.pause_key], &[until_unix_ms.to_string()])
            .await?;
        Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    /// Tokens granted in each whole minute (Unix minute, count) of the last
    /// `minutes`, oldest first, the current minute included; minutes with
    /// none are absent. Kept for two hours (the console's chart).
    pub async fn history(&self, minutes: u32) -> Result<Vec<(i64, u64)>, LimiterError> {
        use deadpool_redis::redis::AsyncCommands;
        let call = async {
            let mut conn = self.pool.get().await.map_err(|e| LimiterError(e.to_string()))?;
            conn.hgetall::<_, std::collections::HashMap<i64, u64>>(&self.history_key)
                .await
                .map_err(|e| LimiterError(e.to_string()))
        };
        let all = tokio::time::timeout(REDIS_TIMEOUT * 2, call)
            .await
            .map_err(|_| LimiterError("no answer in time".into()))??;
        let now = chrono::Utc::now().timestamp().div_euclid(60);
        let mut recent: Vec<(i64, u64)> = all
            .into_iter()
            .filter(|(minute, _)| *minute > now - i64::from(minutes))
            .collect();
        recent.sort_unstable();
        Ok(recent)
    }

    /// Tokens in the current window and any pause left.
    pub async fn usage(&self) -> Result<Usage, LimiterError> {
        static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| Script::new(USAGE));
        let (count, paused): (i64, i64) = self
            .run(
                script,
                &[&self.window_key, &self.pause_key],
                &[self.span_ms().to_string()],
            )
            .await?;
        Ok(Usage {
            in_window: u32::try_from(count).unwrap_or(0),
            paused_for: Duration::from_millis(u64::try_from(paused).unwrap_or(0)),
        })
    }
}
