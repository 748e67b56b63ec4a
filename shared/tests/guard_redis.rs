//! The gate every Alpaca call passes, in-process against the real Redis:
//! tokens, the API's 429 and Remaining-0 feedback, the breaker, and
//! refusal past the wait deadline.
#![allow(clippy::unwrap_used)]

use signal9_shared::alpaca::{AlpacaError, Api, CallOutcome, Gate, RateLimit};
use signal9_shared::breaker::{BreakerPolicy, BreakerState};
use signal9_shared::error::Classify;
use signal9_shared::guard::ApiGuard;
use signal9_shared::limiter::{redis_pool, BudgetSize};
use std::time::{Duration, Instant};

fn guard(limit: u32, window: Duration, wait: Duration) -> ApiGuard {
    let ns = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let size = BudgetSize {
        limit,
        window,
        margin: Duration::ZERO,
    };
    let breaker = BreakerPolicy {
        failures: 3,
        backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(4),
    };
    ApiGuard::new(
        redis_pool("redis://127.0.0.1:6379").unwrap(),
        &ns,
        size,
        size,
        breaker,
        wait,
    )
}

fn outcome(status: Option<u16>, rate: RateLimit) -> CallOutcome {
    CallOutcome {
        endpoint: "GET /v2/stocks/bars",
        status,
        rate,
        elapsed: Duration::from_millis(3),
    }
}

/// Polls until the budget reports a pause; returns when it was asked and
/// the pause left then.
async fn pause_seen(gate: &ApiGuard, api: Api) -> (Instant, Duration) {
    for _ in 0..100 {
        let asked = Instant::now();
        let paused = gate.usage(api).await.unwrap().paused_for;
        if !paused.is_zero() {
            return (asked, paused);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pause recorded within a second");
}

#[tokio::test]
async fn tokens_are_granted_up_to_the_limit_then_the_call_is_refused_past_the_deadline() {
    let gate = guard(3, Duration::from_secs(30), Duration::from_millis(300));
    for _ in 0..3 {
        gate.admit(Api::Data, signal9_shared::job::Priority::Interactive)
            .await
            .unwrap();
    }
    assert_eq!(gate.usage(Api::Data).await.unwrap().in_window, 3);
    assert_eq!(
        gate.usage(Api::Trading).await.unwrap().in_window,
        0,
        "each API has its own budget"
    );
    let refused = gate
        .admit(Api::Data, signal9_shared::job::Priority::Interactive)
        .await
        .unwrap_err();
    assert!(matches!(refused, AlpacaError::NotAdmitted(_)), "{refused:?}");
    assert!(refused.defers(), "a refusal delays the job without an attempt");
    assert!(refused.to_string().contains("data budget full"), "{refused}");
}

#[tokio::test]
async fn a_429_pauses_the_budget_for_at_least_a_second() {
    let gate = guard(100, Duration::from_secs(1), Duration::from_secs(5));
    gate.admit(Api::Data, signal9_shared::job::Priority::Interactive)
        .await
        .unwrap();
    gate.observe(Api::Data, &outcome(Some(429), RateLimit::default()));
    // The pause is recorded by a spawned task.
    let (asked, paused) = pause_seen(&gate, Api::Data).await;
    assert!(paused > Duration::ZERO, "paused");
    // The pause ends no earlier than `asked + paused`; the next grant
    // cannot come before it (a slow machine only makes it later).
    gate.admit(Api::Data, signal9_shared::job::Priority::Interactive)
        .await
        .unwrap();
    assert!(
        Instant::now() + Duration::from_millis(50) >= asked + paused,
        "the next call waited for the pause"
    );
}

#[tokio::test]
async fn remaining_zero_pauses_until_the_apis_reset() {
    let gate = guard(100, Duration::from_secs(60), Duration::from_secs(5));
    let reset = chrono::Utc::now() + chrono::Duration::seconds(2);
    let rate = RateLimit {
        limit: Some(200),
        remaining: Some(0),
        reset: Some(reset),
    };
    gate.observe(Api::Trading, &outcome(Some(200), rate));
    let (_, paused) = pause_seen(&gate, Api::Trading).await;
    assert!(
        paused > Duration::ZERO && paused <= Duration::from_secs(2),
        "until the reset: {paused:?}"
    );
}

#[tokio::test]
async fn consecutive_failures_open_the_breaker_of_that_api_and_4xx_answers_do_not() {
    let gate = guard(100, Duration::from_secs(60), Duration::from_millis(600));
    for _ in 0..3 {
        gate.observe(Api::Data, &outcome(Some(503), RateLimit::default()));
    }
    assert_eq!(gate.breaker(Api::Data).state(), BreakerState::Open);
    assert_eq!(gate.breaker(Api::Data).times_opened(), 1);
    assert_eq!(
        gate.breaker(Api::Trading).state(),
        BreakerState::Closed,
        "breakers are per API"
    );
    let refused = gate
        .admit(Api::Data, signal9_shared::job::Priority::Interactive)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("circuit breaker is open"), "{refused}");
    // 4xx answers are the caller's fault, not the API's.
    for _ in 0..5 {
        gate.observe(Api::Trading, &outcome(Some(404), RateLimit::default()));
    }
    assert_eq!(gate.breaker(Api::Trading).state(), BreakerState::Closed);
    // No answer at all counts as a failure.
    for _ in 0..3 {
        gate.observe(Api::Trading, &outcome(None, RateLimit::default()));
    }
    assert_eq!(gate.breaker(Api::Trading).state(), BreakerState::Open);
}

#[tokio::test]
async fn an_unreachable_redis_means_no_call() {
    let size = BudgetSize {
        limit: 10,
        window: Duration::from_secs(1),
        margin: Duration::ZERO,
    };
    let breaker = BreakerPolicy {
        failures: 3,
        backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(4),
    };
    let gate = ApiGuard::new(
        redis_pool("redis://127.0.0.1:9").unwrap(),
        "t",
        size,
        size,
        breaker,
        Duration::from_millis(400),
    );
    let refused = gate
        .admit(Api::Data, signal9_shared::job::Priority::Interactive)
        .await
        .unwrap_err();
    assert!(matches!(refused, AlpacaError::NotAdmitted(_)), "{refused:?}");
}
