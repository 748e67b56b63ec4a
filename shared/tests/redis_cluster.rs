//! The budget, the heartbeats and the leases on a real Redis Cluster: three
//! `redis-server --cluster-enabled yes` nodes that `bash scripts/test` (and
//! `.ci/run`) start, found through `SIGNAL9_TEST_REDIS_CLUSTER`.
#![allow(clippy::unwrap_used)]

use signal9_shared::keys::RedisKeys;
use signal9_shared::limiter::{redis_pool, Acquire, Budget, BudgetSize};
use signal9_shared::workers::{self, Heartbeat};
use std::collections::BTreeMap;
use std::time::Duration;

use signal9_shared::testing::saturation;

fn cluster() -> String {
    std::env::var("SIGNAL9_TEST_REDIS_CLUSTER")
        .unwrap_or_else(|_| "redis-cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103".into())
}

use signal9_shared::testing::namespace;

fn size(limit: u32, window_ms: u64) -> BudgetSize {
    BudgetSize {
        limit,
        window: Duration::from_millis(window_ms),
        margin: Duration::ZERO,
    }
}

/// The slot a node of the cluster computes for `key`.
async fn slot(key: &str) -> i64 {
    let pool = redis_pool(&cluster()).unwrap();
    let mut conn = pool.get().await.unwrap();
    deadpool_redis::redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_budgets_keys_land_in_one_slot_of_the_cluster() {
    let keys = RedisKeys::new(namespace());
    for api in ["data", "trading"] {
        let window = slot(&keys.budget_window(api)).await;
        assert_eq!(slot(&keys.budget_pause(api)).await, window);
        assert_eq!(slot(&keys.budget_bulk_waiting(api)).await, window);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_on_a_cluster_grants_exactly_its_limit_to_concurrent_instances() {
    // Before, the script's three keys hashed to three slots: the cluster
    // refused it (CROSSSLOT), the budget failed closed, and no call was made.
    let ns = namespace();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let ns = ns.clone();
            tokio::spawn(async move {
                let budget = Budget::new(redis_pool(&cluster()).unwrap(), &ns, "data", size(25, 60_000));
                let mut granted = 0u32;
                for _ in 0..20 {
                    if let Acquire::Granted { .. } = budget.try_acquire().await.unwrap() {
                        granted += 1;
                    }
                }
                granted
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap();
    }
    assert_eq!(granted, 25, "80 asks of a budget of 25");
    let budget = Budget::new(redis_pool(&cluster()).unwrap(), &ns, "data", size(25, 60_000));
    assert_eq!(budget.usage().await.unwrap().in_window, 25);
    // A 429's pause lands too.
    let until = chrono::Utc::now().timestamp_millis() + 5_000;
    budget.pause_until(until).await.unwrap();
    assert!(budget.usage().await.unwrap().paused_for > Duration::from_secs(3));
}

#[tokio::test]
async fn heartbeats_and_leases_work_on_a_cluster() {
    let pool = redis_pool(&cluster()).unwrap();
    let ns = namespace();
    let beat = |id: &str| Heartbeat {
        id: id.into(),
        host: "h".into(),
        pid: 1,
        version: "0".into(),
        concurrency: 1,
        started_at: chrono::Utc::now(),
        beat_at: chrono::Utc::now(),
        broker_connected: true,
        breakers: BTreeMap::new(),
        metrics_addr: None,
        jobs_done: 0,
    };
    workers::ping(&pool).await.unwrap();
    workers::beat(&pool, &ns, &beat("a")).await.unwrap();
    workers::beat(&pool, &ns, &beat("b")).await.unwrap();
    let live: Vec<String> = workers::live(&pool, &ns)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(live, ["a", "b"]);
    workers::forget(&pool, &ns, "a").await.unwrap();
    assert_eq!(workers::live(&pool, &ns).await.unwrap().len(), 1);

    let lease = RedisKeys::new(&ns).scheduler_leader();
    assert!(signal9_shared::lease::hold(&pool, &lease, "me", 5_000).await.unwrap());
    assert!(!signal9_shared::lease::hold(&pool, &lease, "other", 5_000)
        .await
        .unwrap());
    assert!(signal9_shared::lease::hold(&pool, &lease, "me", 5_000).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_interactive_calls_wait_about_one_token_interval_under_a_saturating_bulk_load() {
    let seen = saturation::saturate(&cluster(), 10, Duration::from_secs(2), Duration::from_secs(9), 6, 8).await;
    // As on one server (limiter_redis.rs says why three intervals).
    seen.check(10, Duration::from_millis(600), 0.95).unwrap();
}

#[tokio::test]
async fn the_breaker_the_pace_and_the_claims_share_the_budgets_slot() {
    let keys = RedisKeys::new(namespace());
    for api in ["data", "trading"] {
        let window = slot(&keys.budget_window(api)).await;
        assert_eq!(slot(&keys.breaker(api)).await, window);
        assert_eq!(slot(&keys.budget_pace(api)).await, window);
        assert_eq!(slot(&keys.budget_interactive_waiting(api)).await, window);
    }
}
