//! The gate every Alpaca call passes, in-process against the real Redis:
//! tokens, the API's 429 and Remaining-0 feedback, the breaker, and
//! refusal past the wait deadline.
#![allow(clippy::unwrap_used)]

use signal9_alpaca::class::Classify;
use signal9_alpaca::{AlpacaError, Api, CallOutcome, Gate, RateLimit};
use signal9_shared::breaker::{Admission, Breaker, BreakerPolicy, BreakerState};
use signal9_shared::gate::ApiGate;
use signal9_shared::limiter::{redis_pool, BudgetSize};
use std::time::{Duration, Instant};

fn guard(limit: u32, window: Duration, wait: Duration) -> ApiGate {
    let ns = signal9_shared::testing::namespace();
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
    ApiGate::new(
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
async fn pause_seen(gate: &ApiGate, api: Api) -> (Instant, Duration) {
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
    settle(&gate, Api::Data, BreakerState::Open).await;
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gate.breaker(Api::Trading).state(), BreakerState::Closed);
    for _ in 0..3 {
        gate.observe(Api::Trading, &outcome(None, RateLimit::default()));
    }
    settle(&gate, Api::Trading, BreakerState::Open).await;
}

/// Waits (up to 3 s) until this process has seen `state`: outcomes reach
/// the shared breaker in the background.
async fn settle(gate: &ApiGate, api: Api, state: BreakerState) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while gate.breaker(api).state() != state {
        assert!(Instant::now() < deadline, "the breaker never became {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn shared_breaker(ns: &str, failures: u32) -> Breaker {
    Breaker::new(
        redis_pool("redis://127.0.0.1:6379").unwrap(),
        ns,
        "data",
        BreakerPolicy {
            failures,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        },
        Duration::from_secs(30),
    )
}

#[tokio::test]
async fn failures_seen_by_several_processes_open_the_one_breaker_for_all() {
    let ns = signal9_shared::testing::namespace();
    // Three processes' breakers of one API in one namespace.
    let pool: Vec<Breaker> = (0..3).map(|_| shared_breaker(&ns, 5)).collect();
    // Five consecutive failures between them; before, each counted its own
    // (two, two and one) and none opened.
    for (i, failed) in [0, 1, 2, 0, 1].into_iter().enumerate() {
        assert_eq!(pool[failed].admit().await.unwrap(), Admission::Go, "call {i}");
        pool[failed].record(true).await;
    }
    for breaker in &pool {
        assert!(
            matches!(breaker.admit().await.unwrap(), Admission::Wait(_)),
            "open for every process"
        );
        assert_eq!(breaker.state(), BreakerState::Open);
    }
    assert_eq!(pool[1].times_opened(), 1);
}

#[tokio::test]
async fn after_the_back_off_exactly_one_call_in_the_pool_probes_and_its_answer_decides() {
    let ns = signal9_shared::testing::namespace();
    let pool: Vec<Breaker> = (0..3).map(|_| shared_breaker(&ns, 2)).collect();
    for _ in 0..2 {
        pool[0].record(true).await;
    }
    assert!(matches!(pool[2].admit().await.unwrap(), Admission::Wait(_)));
    // The first back-off is 0.5-1 s.
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let mut answers = Vec::new();
    for round in 0..4 {
        for breaker in &pool {
            answers.push((round, breaker.admit().await.unwrap()));
        }
    }
    let probes: Vec<_> = answers.iter().filter(|(_, a)| *a == Admission::Probe).collect();
    assert_eq!(probes.len(), 1, "one probe for the whole pool: {answers:?}");
    assert_eq!(answers[0].1, Admission::Probe, "the first to ask probes");
    // The probe fails: open again, for twice the back-off.
    pool[0].record(true).await;
    assert_eq!(pool[0].times_opened(), 2);
    // Well inside the shortest second back-off (1 s): still open. (It was
    // checked at 1.05 s, which a 1.0-1.05 s draw of the jitter failed.)
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        matches!(pool[1].admit().await.unwrap(), Admission::Wait(_)),
        "the second back-off is 1-2 s"
    );
    tokio::time::sleep(Duration::from_millis(1_400)).await;
    assert_eq!(pool[1].admit().await.unwrap(), Admission::Probe);
    assert!(matches!(pool[2].admit().await.unwrap(), Admission::Wait(_)));
    // A late answer of a call that is not the probe decides nothing.
    pool[2].record(false).await;
    assert!(matches!(pool[0].admit().await.unwrap(), Admission::Wait(_)));
    // The probe succeeds: closed for everyone.
    pool[1].record(false).await;
    for breaker in &pool {
        assert_eq!(breaker.admit().await.unwrap(), Admission::Go);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}

#[tokio::test]
async fn a_probe_that_never_calls_gives_its_lease_back() {
    let ns = signal9_shared::testing::namespace();
    let a = shared_breaker(&ns, 1);
    let b = shared_breaker(&ns, 1);
    a.record(true).await;
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(a.admit().await.unwrap(), Admission::Probe);
    assert!(matches!(b.admit().await.unwrap(), Admission::Wait(_)));
    a.release_probe().await;
    assert_eq!(b.admit().await.unwrap(), Admission::Probe);
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
    let gate = ApiGate::new(
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
