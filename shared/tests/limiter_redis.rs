//! The budget against the real Redis: shared between instances (processes),
//! waits instead of failing, pauses on the API's feedback, fails closed;
//! priority at the moment of contention (interactive claims, backfills
//! behind bulk), the pace past half the window, an optional reserve.
#![allow(clippy::unwrap_used)]

use signal9_shared::limiter::{redis_pool, Acquire, Budget, BudgetSize, Refusal, Share};
use std::time::{Duration, Instant};

use signal9_shared::testing::saturation;

const REDIS: &str = "redis://127.0.0.1:6379";

use signal9_shared::testing::namespace;

fn size(limit: u32, window_ms: u64) -> BudgetSize {
    BudgetSize {
        limit,
        window: Duration::from_millis(window_ms),
        margin: Duration::ZERO,
    }
}

#[tokio::test]
async fn two_instances_share_one_window_and_the_next_caller_is_told_to_wait() {
    let ns = namespace();
    let a = Budget::new(redis_pool(REDIS).unwrap(), &ns, "data", size(10, 2_000));
    let b = Budget::new(redis_pool(REDIS).unwrap(), &ns, "data", size(10, 2_000));
    let mut granted = 0;
    for i in 0..10 {
        let budget = if i % 2 == 0 { &a } else { &b };
        if let Acquire::Granted { in_window, .. } = budget.try_acquire().await.unwrap() {
            granted += 1;
            assert_eq!(in_window, granted);
        }
    }
    assert_eq!(granted, 10);
    match b.try_acquire().await.unwrap() {
        Acquire::Wait { wait, paused, .. } => {
            assert!(!paused);
            assert!(
                wait > Duration::from_millis(1_000) && wait <= Duration::from_millis(2_000),
                "{wait:?}"
            );
        }
        other => panic!("the 11th call in the window was {other:?}"),
    }
    // Another budget name is another window.
    let trading = Budget::new(redis_pool(REDIS).unwrap(), &ns, "trading", size(10, 2_000));
    assert!(matches!(trading.try_acquire().await.unwrap(), Acquire::Granted { .. }));
    assert_eq!(a.usage().await.unwrap().in_window, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acquirers_never_get_more_than_n_tokens_in_a_window() {
    let ns = namespace();
    let limit = 15;
    let window = Duration::from_millis(1_000);
    let started = Instant::now();
    let run_for = Duration::from_millis(3_200);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let budget = Budget::new(
                redis_pool(REDIS).unwrap(),
                &ns,
                "data",
                BudgetSize {
                    limit,
                    window,
                    margin: Duration::ZERO,
                },
            );
            tokio::spawn(async move {
                let mut grants = Vec::new();
                while started.elapsed() < run_for {
                    match budget.try_acquire().await.unwrap() {
                        Acquire::Granted { .. } => grants.push(started.elapsed()),
                        Acquire::Wait { wait, .. } => tokio::time::sleep(wait.min(Duration::from_millis(50))).await,
                    }
                }
                grants
            })
        })
        .collect();
    let mut grants: Vec<Duration> = Vec::new();
    for task in tasks {
        grants.extend(task.await.unwrap());
    }
    grants.sort();
    // Judged on this process's clock, which sees each grant a round trip
    // late: 150 ms of slack keeps a slow machine from failing a correct
    // limiter while a limiter that ignored the window would still fail.
    let slack = Duration::from_millis(150);
    for (i, t) in grants.iter().enumerate() {
        let in_window = grants[i..].iter().take_while(|u| **u < *t + window - slack).count();
        assert!(
            in_window <= limit as usize,
            "{in_window} grants within one window starting at {t:?}"
        );
    }
    // And the budget was used: about limit per window over the run.
    let windows = run_for.as_secs_f64() / window.as_secs_f64();
    assert!(
        grants.len() as f64 >= limit as f64 * (windows - 1.0),
        "{} grants",
        grants.len()
    );
}

#[tokio::test]
async fn a_pause_stops_every_instance_until_the_reset_time() {
    let ns = namespace();
    let a = Budget::new(redis_pool(REDIS).unwrap(), &ns, "trading", size(100, 60_000));
    let b = Budget::new(redis_pool(REDIS).unwrap(), &ns, "trading", size(100, 60_000));
    let until = chrono::Utc::now().timestamp_millis() + 1_200;
    assert!(a.pause_until(until).await.unwrap() > Duration::from_millis(900));
    assert!(
        a.pause_until(until - 1_000).await.unwrap().is_zero(),
        "a pause is never shortened"
    );
    match b.try_acquire().await.unwrap() {
        Acquire::Wait { paused, wait, .. } => {
            assert!(paused);
            assert!(wait <= Duration::from_millis(1_300), "{wait:?}");
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert!(matches!(b.try_acquire().await.unwrap(), Acquire::Granted { .. }));
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_token() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let budget = Budget::new(
        redis_pool(&format!("redis://{closed}")).unwrap(),
        &namespace(),
        "data",
        size(10, 1_000),
    );
    let started = Instant::now();
    let error = budget.try_acquire().await.unwrap_err();
    assert!(error.to_string().contains("API budget unavailable"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_optional_reserve_is_kept_for_interactive_callers() {
    let ns = namespace();
    let budget = Budget::new(redis_pool(REDIS).unwrap(), &ns, "data", size(10, 60_000));
    budget.set_reserve(0.2);
    assert_eq!(budget.reserve(), 2);
    // Bulk and backfill take up to half the non-reserved part at once...
    for share in [
        Share::Leftover,
        Share::Shared,
        Share::Leftover,
        Share::Shared,
        Share::Shared,
    ] {
        assert!(matches!(
            budget.try_acquire_as(share).await.unwrap(),
            Acquire::Granted { .. }
        ));
    }
    // ...then keep to the pace: one token per 60 s / 8 here.
    match budget.try_acquire_as(Share::Shared).await.unwrap() {
        Acquire::Wait { why, wait, .. } => {
            assert_eq!(why, Refusal::Paced);
            assert!(wait <= Duration::from_millis(60_000 / 8), "{wait:?}");
            assert!(wait >= Duration::from_millis(60_000 / 8 / 2), "{wait:?}");
        }
        other => panic!("bulk was not paced past half the window: {other:?}"),
    }
    // Interactive callers are not paced: they fill the window to 10.
    for _ in 0..5 {
        assert!(matches!(
            budget.try_acquire_as(Share::Full).await.unwrap(),
            Acquire::Granted { .. }
        ));
    }
    assert_eq!(budget.usage().await.unwrap().in_window, 10);
}

#[tokio::test]
async fn a_refused_interactive_caller_claims_the_next_token_and_bulk_stands_back_until_it_has_it() {
    let ns = namespace();
    let small = Budget::new(redis_pool(REDIS).unwrap(), &ns, "data", size(4, 60_000));
    // The same budget seen by an instance configured larger: it would have room.
    let roomy = Budget::new(redis_pool(REDIS).unwrap(), &ns, "data", size(100, 60_000));
    for _ in 0..4 {
        assert!(matches!(small.try_acquire().await.unwrap(), Acquire::Granted { .. }));
    }
    match small.acquire(Share::Full, "reader-1", None).await.unwrap() {
        Acquire::Wait { why, .. } => assert_eq!(why, Refusal::Full),
        other => panic!("{other:?}"),
    }
    // While reader-1's claim stands, neither bulk nor backfill gets a token.
    for share in [Share::Shared, Share::Leftover] {
        match roomy.acquire(share, "worker", None).await.unwrap() {
            Acquire::Wait { why, .. } => assert_eq!(why, Refusal::InteractiveWaiting, "{share:?}"),
            other => panic!("{share:?} took a token an interactive caller waits for: {other:?}"),
        }
    }
    // Its grant ends the claim; bulk goes on.
    assert!(matches!(
        roomy.acquire(Share::Full, "reader-1", None).await.unwrap(),
        Acquire::Granted { .. }
    ));
    assert!(matches!(
        roomy.acquire(Share::Shared, "worker", None).await.unwrap(),
        Acquire::Granted { .. }
    ));
}

#[tokio::test]
async fn backfills_stand_back_while_a_bulk_caller_waits() {
    let ns = namespace();
    let budget = Budget::new(redis_pool(REDIS).unwrap(), &ns, "data", size(2, 60_000));
    for _ in 0..2 {
        assert!(matches!(budget.try_acquire().await.unwrap(), Acquire::Granted { .. }));
    }
    assert!(matches!(
        budget.try_acquire_as(Share::Shared).await.unwrap(),
        Acquire::Wait { why: Refusal::Full, .. }
    ));
    // Until the bulk caller's next try, a backfill caller is told to wait
    // even where the window has room, and a bulk caller is not.
    let roomy = Budget::new(budget.pool().clone(), &ns, "data", size(100, 60_000));
    match roomy.try_acquire_as(Share::Leftover).await.unwrap() {
        Acquire::Wait { why, wait, paused, .. } => {
            assert_eq!(why, Refusal::BulkWaiting);
            assert!(!paused);
            assert!(wait > Duration::from_millis(0), "{wait:?}");
        }
        other => panic!("a backfill took a token while bulk waited: {other:?}"),
    }
    assert!(matches!(
        roomy.try_acquire_as(Share::Shared).await.unwrap(),
        Acquire::Granted { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_saturating_bulk_load_interactive_calls_wait_about_one_token_interval_and_bulk_uses_the_window() {
    // 10 tokens per 2 s: one every 200 ms.
    let seen = saturation::saturate(REDIS, 10, Duration::from_secs(2), Duration::from_secs(9), 6, 12).await;
    // Most are served at once or within one interval (200 ms); an
    // interactive token taken between two paced ones leaves a gap of up to
    // about two intervals where they expire (BENCHMARKS.md has the
    // distribution). Three intervals leave room for a busy machine; without
    // the claim, six bulk callers race each interactive one to every freed
    // token, and without the pace the window's tokens free in one burst a
    // window apart.
    seen.check(10, Duration::from_millis(600), 0.95).unwrap();
}

#[tokio::test]
async fn every_granted_token_is_counted_in_its_minute_and_refusals_are_not() {
    let ns = namespace();
    let a = Budget::new(redis_pool(REDIS).unwrap(), &ns, "data", size(5, 60_000));
    let b = Budget::new(redis_pool(REDIS).unwrap(), &ns, "data", size(5, 60_000));
    assert!(a.history(60).await.unwrap().is_empty(), "nothing granted yet");
    let mut granted = 0;
    for budget in [&a, &b, &a, &b, &a, &b, &a] {
        if matches!(budget.try_acquire().await.unwrap(), Acquire::Granted { .. }) {
            granted += 1;
        }
    }
    assert_eq!(granted, 5, "the window holds five");
    let history = b.history(60).await.unwrap();
    let counted: u64 = history.iter().map(|(_, n)| n).sum();
    assert_eq!(counted, 5, "both instances' grants, and no refusal: {history:?}");
    let now = chrono::Utc::now().timestamp().div_euclid(60);
    assert!(history.iter().all(|(minute, _)| now - minute <= 1), "{history:?}");
    let other = Budget::new(redis_pool(REDIS).unwrap(), &ns, "trading", size(5, 60_000));
    assert!(other.history(60).await.unwrap().is_empty(), "per budget");
}
