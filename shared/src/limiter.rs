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
//! Callers take from one of three [`Share`]s. Interactive requests may use
//! the whole window; everything else stops short of the interactive reserve,
//! so a request another service waits for finds a token even while bulk
//! work saturates the budget. Backfills take only what the daily pipeline
//! leaves: while a bulk caller is waiting for a token (a short-lived flag
//! it sets in Redis), no backfill caller gets one.

use crate::keys::RedisKeys;
use crate::redis_conn::RedisPool;
use deadpool_redis::redis::Script;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::redis_conn::REDIS_TIMEOUT;

const ACQUIRE: &str = r"
-- KEYS[1] window (sorted set: member -> grant time in ms), KEYS[2] pause-until (ms),
-- KEYS[3] bulk-waiting flag, KEYS[4] history (hash: Unix minute -> tokens granted in it)
-- ARGV[1] ceiling (tokens this share may fill the window to), ARGV[2] window + margin in ms,
-- ARGV[3] member, ARGV[4] share: full | shared | leftover
-- Returns {1, now, count} for a token, {0, wait_ms, count} (count -1 when paused) otherwise.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return {0, paused - now, -1}
end
local span = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
local count = redis.call('ZCARD', KEYS[1])
if ARGV[4] == 'leftover' then
  local waiting = redis.call('PTTL', KEYS[3])
  if waiting > 0 then
    return {0, waiting, count}
  end
end
if count < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], span)
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
  return {1, now, count + 1}
end
local wait = span
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then
  wait = math.max(1, tonumber(oldest[2]) + span - now)
end
if ARGV[4] == 'shared' then
  -- Backfills stand back until this caller's next try has had its chance.
  redis.call('SET', KEYS[3], '1', 'PX', wait + 500)
end
return {0, wait, count}
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
    },
    /// No token; try again after this long (the window is full, or paused).
    Wait {
        /// How long until a token can be free.
        wait: Duration,
        /// True when the budget is paused by the API's feedback.
        paused: bool,
    },
}

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

    /// One atomic acquire from one share of the window.
    pub async fn try_acquire_as(&self, share: Share) -> Result<Acquire, LimiterError> {
        static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| Script::new(ACQUIRE));
        let member = format!(
            "{}:{}",
            self.member_prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let (granted, wait_or_time, count): (i64, i64, i64) = self
            .run(
                script,
                &[&self.window_key, &self.pause_key, &self.waiting_key, &self.history_key],
                &[
                    self.ceiling(share).to_string(),
                    self.span_ms().to_string(),
                    member,
                    share.as_str().to_owned(),
                ],
            )
            .await?;
        if granted == 1 {
            return Ok(Acquire::Granted {
                in_window: u32::try_from(count).unwrap_or(u32::MAX),
                at_ms: wait_or_time,
            });
        }
        let wait = Duration::from_millis(u64::try_from(wait_or_time.max(1)).unwrap_or(1));
        Ok(Acquire::Wait {
            wait,
            paused: count < 0,
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
