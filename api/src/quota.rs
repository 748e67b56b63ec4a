//! The read API's price list: every bars request that needs fetching is
//! priced in Alpaca calls (the planner's estimate) before anything is
//! published, and the price is taken from two token buckets in Redis at
//! once, or from neither: the caller's token's (`SIGNAL9_API_TOKEN_CALLS`
//! per window, or its `calls=N`) and every token's together
//! (`SIGNAL9_API_CALLS`, the share of the data budget interactive reads
//! may take). Buckets refill continuously on Redis's clock, so every API
//! replica sees one quota. A request the buckets cannot pay for now is a
//! 429 with the seconds until they can.

use deadpool_redis::redis::Script;
use std::time::Duration;

use signal9_shared::keys::RedisKeys;
use signal9_shared::redis_conn::RedisPool;

/// Takes `cost` from both buckets if both hold it; else says how long
/// until they would. KEYS: the token's bucket, the total bucket. ARGV:
/// cost, token capacity, total capacity, window (ms). Returns
/// `{1, 0, 0}` when taken, `{0, wait_ms, which}` (1: the token's, 2: the
/// total) when not.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local window = tonumber(ARGV[4])
local function level(key, cap)
  local v = redis.call('HMGET', key, 'level', 'at')
  local lvl, at = tonumber(v[1]), tonumber(v[2])
  if lvl == nil or at == nil then return cap end
  local refill = (now - at) * cap / window
  if refill < 0 then refill = 0 end
  return math.min(cap, lvl + refill)
end
local caps = { tonumber(ARGV[2]), tonumber(ARGV[3]) }
local levels = { level(KEYS[1], caps[1]), level(KEYS[2], caps[2]) }
local wait, which = 0, 0
for i = 1, 2 do
  if levels[i] < cost then
    local w = math.ceil((cost - levels[i]) * window / caps[i])
    if w > wait then wait, which = w, i end
  end
end
if which > 0 then return { 0, wait, which } end
for i = 1, 2 do
  redis.call('HSET', KEYS[i], 'level', tostring(levels[i] - cost), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[i], window * 2)
end
return { 1, 0, 0 }
";

/// The quota's sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuotaSizes {
    /// A token's calls per window, unless its line sets its own.
    pub(crate) token_calls: u32,
    /// Every token's calls together per window.
    pub(crate) total_calls: u32,
    /// The window.
    pub(crate) window: Duration,
}

/// Why a priced request is not let through now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Refused {
    /// The token's bucket (or the total) is short: come back later.
    #[error("this request costs about {cost} calls and {whose} quota holds fewer now: retry in {retry_secs} s")]
    Later {
        /// The price.
        cost: u64,
        /// `the token's` or `the API's`.
        whose: &'static str,
        /// Until the bucket holds the price.
        retry_secs: u64,
    },
    /// The price is more than the bucket can ever hold.
    #[error("this request costs about {cost} calls, more than {whose} quota of {cap} calls per {window_secs} s allows at once: ask for a shorter range or fewer symbols, or use `signal9-producer backfill`")]
    TooDear {
        /// The price.
        cost: u64,
        /// `the token's` or `the API's`.
        whose: &'static str,
        /// The bucket's size.
        cap: u32,
        /// The window.
        window_secs: u64,
    },
    /// Redis did not answer: nothing is spent without the quota (fail closed).
    #[error("the quota cannot be checked now (Redis unavailable); nothing was fetched")]
    Unavailable,
}

/// The buckets, on the budget's Redis.
#[derive(Debug, Clone)]
pub(crate) struct Quota {
    pool: RedisPool,
    keys: RedisKeys,
    sizes: QuotaSizes,
}

impl Quota {
    /// The quota under `namespace` on `pool`.
    pub(crate) fn new(pool: RedisPool, namespace: &str, sizes: QuotaSizes) -> Self {
        Quota {
            pool,
            keys: RedisKeys::new(namespace),
            sizes,
        }
    }

    /// Takes `cost` calls from the token named by `hash` (with its own
    /// `calls` quota, if any) and from the total, or refuses.
    pub(crate) async fn take(&self, hash: &str, calls: Option<u32>, cost: u64) -> Result<(), Refused> {
        if cost == 0 {
            return Ok(());
        }
        let token_cap = calls.unwrap_or(self.sizes.token_calls).max(1);
        let total_cap = self.sizes.total_calls.max(1);
        let window_secs = self.sizes.window.as_secs().max(1);
        for (cap, whose) in [(token_cap, "the token's"), (total_cap, "the API's")] {
            if cost > u64::from(cap) {
                return Err(Refused::TooDear {
                    cost,
                    whose,
                    cap,
                    window_secs,
                });
            }
        }
        static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| Script::new(TAKE));
        let window_ms = u64::try_from(self.sizes.window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.pool.get().await.map_err(|_| Refused::Unavailable)?;
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            script
                .key(self.keys.api_quota_token(hash))
                .key(self.keys.api_quota_total())
                .arg(cost)
                .arg(token_cap)
                .arg(total_cap)
                .arg(window_ms)
                .invoke_async::<(i64, i64, i64)>(&mut conn),
        )
        .await;
        match answer {
            Ok(Ok((1, _, _))) => Ok(()),
            Ok(Ok((_, wait_ms, which))) => Err(Refused::Later {
                cost,
                whose: if which == 1 { "the token's" } else { "the API's" },
                retry_secs: u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1),
            }),
            Ok(Err(error)) => {
                tracing::warn!(%error, "The API quota script failed");
                Err(Refused::Unavailable)
            }
            Err(_) => Err(Refused::Unavailable),
        }
    }
}
