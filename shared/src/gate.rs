//! The gate every Alpaca call passes: the API's circuit breaker, then a
//! token from its global budget, asked together in one Redis script (one
//! round trip a try; see [`Budget::acquire`]). Waiting here is not a failed attempt; a
//! call that cannot be admitted within the wait deadline (budget full or
//! paused, breaker open, Redis unreachable) is refused with
//! [`AlpacaError::NotAdmitted`], which sends the job back through a delay
//! queue without counting an attempt. Nothing is called without a token:
//! if Redis cannot be asked, no call is made.

use crate::telemetry::events::{ApiCalled, BudgetWaited, Emit, TokenGranted};
use async_trait::async_trait;
use chrono::Utc;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

use crate::breaker::{Breaker, BreakerPolicy, BreakerState};
use crate::job::Priority;
use crate::limiter::{Acquire, Budget, BudgetSize, LimiterError, Refusal, Share, Usage};
use signal9_alpaca::{AlpacaError, Api, CallOutcome, Gate};

/// The shortest pause after a 429, in milliseconds.
const MIN_PAUSE_MS: i64 = 1_000;

/// One API's breaker and budget.
#[derive(Debug)]
struct PerApi {
    budget: Arc<Budget>,
    breaker: Breaker,
}

/// The budget-and-breaker gate for both APIs.
#[derive(Debug)]
pub struct ApiGate {
    trading: PerApi,
    data: PerApi,
    wait_deadline: Duration,
}

impl ApiGate {
    /// Builds the gate on a Redis pool under `namespace`.
    pub fn new(
        pool: crate::redis_conn::RedisPool,
        namespace: &str,
        trading: BudgetSize,
        data: BudgetSize,
        breaker: BreakerPolicy,
        wait_deadline: Duration,
    ) -> Self {
        // A probe may wait for a token up to the deadline, then wait for
        // its answer up to the HTTP timeout (30 s by default).
        let probe_lease = wait_deadline + Duration::from_secs(60);
        let per_api = |name: &'static str, size| PerApi {
            budget: Arc::new(Budget::new(pool.clone(), namespace, name, size)),
            breaker: Breaker::new(pool.clone(), namespace, name, breaker, probe_lease),
        };
        ApiGate {
            trading: per_api("trading", trading),
            data: per_api("data", data),
            wait_deadline,
        }
    }

    fn per_api(&self, api: Api) -> &PerApi {
        match api {
            Api::Trading => &self.trading,
            Api::Data => &self.data,
        }
    }

    /// Keeps `fraction` of each API's window for interactive calls (see
    /// [`Budget::with_reserve`]).
    pub(crate) fn with_interactive_reserve(self, fraction: f64) -> Self {
        self.trading.budget.set_reserve(fraction);
        self.data.budget.set_reserve(fraction);
        self
    }

    /// The API's breaker.
    pub fn breaker(&self, api: Api) -> &Breaker {
        &self.per_api(api).breaker
    }

    /// The API's budget.
    pub fn budget(&self, api: Api) -> &Budget {
        &self.per_api(api).budget
    }

    /// Tokens in the API's current window.
    pub async fn usage(&self, api: Api) -> Result<Usage, LimiterError> {
        self.per_api(api).budget.usage().await
    }
}

fn jitter(wait: Duration) -> Duration {
    // Up to 10 % (at most 50 ms) more, so waiters do not all wake at once.
    let extra = (wait / 10).min(Duration::from_millis(50));
    wait + extra.mul_f64(rand::rng().random_range(0.0..1.0))
}

#[async_trait]
impl Gate for ApiGate {
    async fn admit(&self, api: Api, priority: Priority) -> Result<(), AlpacaError> {
        let span = tracing::info_span!("limiter wait", api = api.as_str(), priority = priority.as_str());
        let started = Instant::now();
        let share = match priority {
            Priority::Interactive => Share::Full,
            Priority::Bulk => Share::Shared,
            Priority::Backfill => Share::Leftover,
        };
        let result = self.wait_for_token(api, share).instrument(span).await;
        BudgetWaited {
            api,
            waited: started.elapsed(),
        }
        .emit();
        result
    }

    fn observe(&self, api: Api, outcome: &CallOutcome) {
        ApiCalled {
            api,
            endpoint: outcome.endpoint,
            status: outcome.status,
            elapsed: outcome.elapsed,
        }
        .emit();
        self.feed_back(api, outcome);
    }
}

impl ApiGate {
    async fn wait_for_token(&self, api: Api, share: Share) -> Result<(), AlpacaError> {
        let per_api = self.per_api(api);
        let deadline = Instant::now() + self.wait_deadline;
        let mut redis_backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        // One id for every try of this call: its claim on the next token
        // (interactive) and the breaker's probe lease, once taken, stay its own.
        let waiter = uuid::Uuid::new_v4().simple().to_string();
        let lease = Some(per_api.breaker.probe_lease());
        let mut probing = false;
        loop {
            // The breaker and the budget in one script: one round trip a try.
            let (wait, reason) = match per_api.budget.acquire(share, &waiter, lease).await {
                Ok(Acquire::Granted { in_window, probe, .. }) => {
                    if probe {
                        per_api.breaker.hold_probe(&waiter);
                    } else {
                        per_api.breaker.see(BreakerState::Closed);
                    }
                    TokenGranted { api, in_window }.emit();
                    return Ok(());
                }
                Ok(Acquire::Wait { wait, why, probe, .. }) => {
                    if probe && !probing {
                        per_api.breaker.hold_probe(&waiter);
                    }
                    probing = probe;
                    let why = match why {
                        Refusal::BreakerOpen => {
                            per_api.breaker.see(BreakerState::Open);
                            format!("{} API circuit breaker is open", api.as_str())
                        }
                        Refusal::Paused => format!("{} budget paused by the API's rate-limit feedback", api.as_str()),
                        Refusal::Full | Refusal::InteractiveWaiting | Refusal::BulkWaiting | Refusal::Paced => {
                            format!("{} budget full", api.as_str())
                        }
                    };
                    (jitter(wait), why)
                }
                Err(error) => {
                    // Fail closed: no token, no call. Try again shortly.
                    let wait = redis_backoff.next_delay();
                    tracing::warn!(api = api.as_str(), %error, "API budget unreachable; no call made");
                    (wait, error.to_string())
                }
            };
            if Instant::now() + wait > deadline {
                if probing {
                    per_api.breaker.release_probe().await;
                }
                return Err(AlpacaError::NotAdmitted(format!(
                    "{reason} beyond the {} s wait deadline",
                    self.wait_deadline.as_secs()
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Feeds a call's outcome to the breaker and the budget.
    fn feed_back(&self, api: Api, outcome: &CallOutcome) {
        let per_api = self.per_api(api);
        // observe() is synchronous; the shared breaker is one script call.
        let breaker = per_api.breaker.clone();
        let failed = outcome.is_api_failure();
        tokio::spawn(async move { breaker.record(failed).await });
        let window_ms = i64::try_from(per_api.budget.size().window.as_millis()).unwrap_or(60_000);
        let now = Utc::now().timestamp_millis();
        let until = match (outcome.status, outcome.rate.remaining, outcome.rate.reset) {
            // Never straight back into a 429: a reset in the past (clock skew,
            // whole-second rounding) still pauses for a moment.
            (Some(429), _, reset) => {
                Some(reset.map_or(now + window_ms, |r| r.timestamp_millis().max(now + MIN_PAUSE_MS)))
            }
            (_, Some(0), Some(reset)) => Some(reset.timestamp_millis()),
            _ => None,
        };
        if let Some(until) = until {
            let budget = Arc::clone(&per_api.budget);
            let api = api.as_str();
            // observe() is synchronous; the pause is one script call.
            tokio::spawn(async move {
                match budget.pause_until(until).await {
                    Ok(d) if !d.is_zero() => tracing::warn!(
                        api,
                        pause_ms = d.as_millis() as u64,
                        "API budget paused until the API's reset time"
                    ),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(api, %error, "Could not record the API's pause"),
                }
            });
        }
    }
}
