//! One circuit breaker per API for the whole worker pool, its state in
//! Redis: after `failures` consecutive API failures (no answer, 5xx), seen
//! by any process, it opens for every process; after a jittered back-off
//! exactly one call in the pool, the probe, may pass (it holds a lease);
//! the probe's success closes it, its failure opens it again for twice the
//! back-off (up to the maximum).
//!
//! State, in one Redis hash per API (`RedisKeys::breaker`): `failures`
//! (consecutive, while closed), `open_until` (ms on Redis's clock, 0 when
//! closed), `backoff` (ms, the last one), `opens` (times it opened),
//! `probe_by` and `probe_until` (the probe's lease). Every change is one
//! Lua script on Redis's own clock, so processes on different machines
//! agree. Each process keeps a mirror of the state it last saw, for logs,
//! metrics, the heartbeat and `signal9-producer status`.
//!
//! This replaces the per-process `failsafe` state machine the breaker used
//! to be: its half-open state let every caller through, and each process
//! counted its own failures, so 20 workers cost 20 × 5 failures and 20
//! probes per back-off.

pub(crate) mod state;

pub use state::BreakerState;

use crate::telemetry::events::{BreakerCreated, BreakerOpened, BreakerStateSeen, Emit};
use deadpool_redis::redis::Script;
use rand::Rng;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::keys::RedisKeys;
use crate::redis_conn::{RedisPool, REDIS_TIMEOUT};

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive API failures that open it.
    pub failures: u32,
    /// First back-off (at least 1 s); it doubles up to `max_backoff`, each
    /// actual wait jittered between half and all of it.
    pub backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
}

/// Whether a call may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go.
    Go,
    /// Half-open and this call holds the probe lease: go, and report.
    Probe,
    /// Open (or another call is probing): ask again after this long.
    Wait(Duration),
}

/// Asks whether a call may go; takes the probe lease when the back-off
/// has ended and nobody holds it. Answers {code, wait ms}: code 1 go,
/// 2 probe, 0 wait. A Lua function, so that the budget's acquire script can
/// ask the breaker in the same round trip (see [`crate::limiter`]).
pub(crate) const ADMIT_FUNCTION: &str = r"
local function breaker_admit(key, waiter, lease, now)
  local open_until = tonumber(redis.call('HGET', key, 'open_until') or '0')
  if open_until == 0 then return {1, 0} end
  if now < open_until then return {0, open_until - now} end
  local probe_until = tonumber(redis.call('HGET', key, 'probe_until') or '0')
  local probe_by = redis.call('HGET', key, 'probe_by')
  if probe_until > now and probe_by ~= waiter then
    return {0, math.min(probe_until - now, 250)}
  end
  redis.call('HSET', key, 'probe_by', waiter, 'probe_until', now + lease)
  return {2, 0}
end
";

/// The breaker's admit alone. KEYS[1] the breaker's hash; ARGV[1] caller
/// id; ARGV[2] probe lease (ms).
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return breaker_admit(KEYS[1], ARGV[1], tonumber(ARGV[2]), now)
";

/// Records a call's outcome. Answers {transition, back-off ms, opens}:
/// transition 0 none, 1 opened, 2 reopened (the probe failed), 3 closed.
const RECORD: &str = r"
-- KEYS[1] the breaker's hash; ARGV[1] caller id ('' for a plain call);
-- ARGV[2] 1 success, 0 failure; ARGV[3] failures to open; ARGV[4] first
-- back-off (ms); ARGV[5] longest back-off (ms); ARGV[6] jitter in [0.5, 1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local probe_by = redis.call('HGET', KEYS[1], 'probe_by')
local is_probe = ARGV[1] ~= '' and probe_by == ARGV[1]
local opens = tonumber(redis.call('HGET', KEYS[1], 'opens') or '0')
local function open(backoff)
  local wait = math.floor(backoff * tonumber(ARGV[6]))
  opens = opens + 1
  redis.call('HSET', KEYS[1], 'open_until', now + wait, 'backoff', backoff, 'failures', 0, 'opens', opens)
  redis.call('HDEL', KEYS[1], 'probe_by', 'probe_until')
  return wait
end
if ARGV[2] == '1' then
  if open_until == 0 then
    redis.call('HSET', KEYS[1], 'failures', 0)
    return {0, 0, opens}
  end
  if is_probe then
    redis.call('HSET', KEYS[1], 'open_until', 0, 'failures', 0, 'backoff', 0)
    redis.call('HDEL', KEYS[1], 'probe_by', 'probe_until')
    return {3, 0, opens}
  end
  return {0, 0, opens}
end
if open_until == 0 then
  local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  if failures >= tonumber(ARGV[3]) then
    local wait = open(tonumber(ARGV[4]))
    return {1, wait, opens}
  end
  return {0, 0, opens}
end
if is_probe then
  local backoff = tonumber(redis.call('HGET', KEYS[1], 'backoff') or ARGV[4])
  backoff = math.min(backoff * 2, tonumber(ARGV[5]))
  local wait = open(backoff)
  return {2, wait, opens}
end
return {0, 0, opens}
";

/// Gives the probe lease back (the probe never made its call).
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'probe_by') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'probe_by', 'probe_until')
end
return 0
";

fn script(cell: &'static OnceLock<Script>, text: &'static str) -> &'static Script {
    cell.get_or_init(|| Script::new(text))
}

/// The breaker of one API, shared by every process through Redis.
#[derive(Debug, Clone)]
pub struct Breaker {
    api: &'static str,
    pool: RedisPool,
    key: String,
    policy: BreakerPolicy,
    probe_lease: Duration,
    /// The state this process last saw.
    seen: Arc<AtomicU8>,
    /// Times opened, as Redis last reported it.
    opened: Arc<AtomicU64>,
    /// The id of the probe this process holds, if any.
    probe: Arc<Mutex<Option<String>>>,
}

impl Breaker {
    /// The breaker of `api` under `namespace`. A probe holds its lease for
    /// `probe_lease` at most (a process that dies while probing stalls the
    /// others no longer than that).
    pub fn new(
        pool: RedisPool,
        namespace: &str,
        api: &'static str,
        policy: BreakerPolicy,
        probe_lease: Duration,
    ) -> Self {
        BreakerCreated { api }.emit();
        Breaker {
            api,
            pool,
            key: RedisKeys::new(namespace).breaker(api),
            policy: BreakerPolicy {
                failures: policy.failures.max(1),
                backoff: policy.backoff.max(Duration::from_secs(1)),
                max_backoff: policy.max_backoff.max(policy.backoff.max(Duration::from_secs(1))),
            },
            probe_lease,
            seen: Arc::new(AtomicU8::new(0)),
            opened: Arc::new(AtomicU64::new(0)),
            probe: Arc::new(Mutex::new(None)),
        }
    }

    async fn run(&self, script: &Script, args: &[String]) -> Result<Vec<i64>, String> {
        let call = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            let mut invocation = script.prepare_invoke();
            invocation.key(&self.key);
            for arg in args {
                invocation.arg(arg);
            }
            invocation
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(REDIS_TIMEOUT * 2, call)
            .await
            .map_err(|_| "no answer in time".to_owned())?
    }

    /// Notes that this process's call `waiter` holds the probe lease (the
    /// budget's script took it, see [`crate::limiter::Budget::acquire`]):
    /// its outcome is recorded as the probe's.
    pub(crate) fn hold_probe(&self, waiter: &str) {
        *self.probe.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(waiter.to_owned());
        self.see(BreakerState::HalfOpen);
    }

    /// How long a probe holds its lease at most.
    pub(crate) fn probe_lease(&self) -> Duration {
        self.probe_lease
    }

    pub(crate) fn see(&self, state: BreakerState) {
        let before = BreakerState::from_code(self.seen.swap(state.code(), Ordering::Relaxed));
        if before == state {
            return;
        }
        BreakerStateSeen { api: self.api, state }.emit();
    }

    /// Whether a call may go now. An unreachable Redis is an error (the
    /// budget, on the same Redis, fails closed anyway).
    pub async fn admit(&self) -> Result<Admission, String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let lease = u64::try_from(self.probe_lease.as_millis()).unwrap_or(u64::MAX);
        let answer = self
            .run(
                ADMIT_SCRIPT.get_or_init(|| Script::new(&format!("{ADMIT_FUNCTION}{ADMIT}"))),
                &[id.clone(), lease.to_string()],
            )
            .await?;
        match answer.first().copied() {
            Some(1) => {
                self.see(BreakerState::Closed);
                Ok(Admission::Go)
            }
            Some(2) => {
                *self.probe.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id);
                self.see(BreakerState::HalfOpen);
                Ok(Admission::Probe)
            }
            _ => {
                self.see(BreakerState::Open);
                let wait = answer.get(1).copied().unwrap_or(250).max(1);
                Ok(Admission::Wait(Duration::from_millis(
                    u64::try_from(wait).unwrap_or(250),
                )))
            }
        }
    }

    /// Gives back a probe lease this process took but did not use.
    pub async fn release_probe(&self) {
        let id = self
            .probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(id) = id {
            if let Err(error) = self.run(script(&RELEASE_SCRIPT, RELEASE), &[id]).await {
                tracing::warn!(api = self.api, %error, "Could not give back the breaker's probe lease; it expires by itself");
            }
        }
    }

    /// Records a call's outcome: `failed` for an API failure (no answer,
    /// 5xx), not for a 4xx.
    pub async fn record(&self, failed: bool) {
        let probe = self
            .probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_string();
        let jitter: f64 = rand::rng().random_range(0.5..=1.0);
        let args = [
            probe.unwrap_or_default(),
            if failed { "0" } else { "1" }.to_owned(),
            self.policy.failures.to_string(),
            ms(self.policy.backoff),
            ms(self.policy.max_backoff),
            format!("{jitter:.3}"),
        ];
        match self.run(script(&RECORD_SCRIPT, RECORD), &args).await {
            Ok(answer) => {
                let (transition, wait, opens) = (
                    answer.first().copied().unwrap_or(0),
                    answer.get(1).copied().unwrap_or(0),
                    answer.get(2).copied().unwrap_or(0),
                );
                // Outcomes are recorded concurrently and their answers can
                // arrive out of order; the count only grows.
                self.opened
                    .fetch_max(u64::try_from(opens).unwrap_or(0), Ordering::Relaxed);
                match transition {
                    1 | 2 => {
                        self.seen.store(BreakerState::Open.code(), Ordering::Relaxed);
                        BreakerOpened {
                            api: self.api,
                            back_off_ms: wait,
                            probe_failed: transition == 2,
                        }
                        .emit();
                    }
                    3 => self.see(BreakerState::Closed),
                    _ => {}
                }
            }
            Err(error) => {
                tracing::warn!(api = self.api, %error, "Could not record a call's outcome in the shared breaker")
            }
        }
    }

    /// The state this process last saw.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_code(self.seen.load(Ordering::Relaxed))
    }

    /// How many times the pool's breaker has opened (as last reported).
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

static ADMIT_SCRIPT: OnceLock<Script> = OnceLock::new();
static RECORD_SCRIPT: OnceLock<Script> = OnceLock::new();
static RELEASE_SCRIPT: OnceLock<Script> = OnceLock::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_metric_and_log_spellings() {
        assert_eq!(BreakerState::Closed.as_str(), "closed");
        assert_eq!(BreakerState::Open.as_str(), "open");
        assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
        for state in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
            assert_eq!(BreakerState::from_code(state.code()), state);
        }
    }
}
