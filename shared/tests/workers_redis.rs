//! Worker heartbeats in the real Redis, under a namespace of their own.

use signal9_shared::limiter::redis_pool;
use signal9_shared::workers::{self, Heartbeat};
use std::collections::BTreeMap;

fn beat(id: &str, host: &str) -> Heartbeat {
    Heartbeat {
        id: id.into(),
        host: host.into(),
        pid: 7,
        version: "0.1.0".into(),
        concurrency: 4,
        started_at: chrono::Utc::now(),
        beat_at: chrono::Utc::now(),
        broker_connected: true,
        breakers: BTreeMap::from([("data".to_string(), "closed".to_string())]),
        metrics_addr: Some("127.0.0.1:9464".into()),
        jobs_done: 3,
    }
}

#[tokio::test]
async fn heartbeats_are_listed_by_host_then_id_and_forgotten() {
    let pool = redis_pool("redis://127.0.0.1:6379").expect("pool");
    workers::ping(&pool).await.expect("Redis answers");
    let ns = signal9_shared::testing::namespace();
    assert!(workers::live(&pool, &ns).await.expect("live").is_empty());
    workers::beat(&pool, &ns, &beat("b", "host-2")).await.expect("beat");
    workers::beat(&pool, &ns, &beat("a", "host-2")).await.expect("beat");
    workers::beat(&pool, &ns, &beat("z", "host-1")).await.expect("beat");
    let live = workers::live(&pool, &ns).await.expect("live");
    let order: Vec<&str> = live.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(order, ["z", "a", "b"]);
    let z = &live[0];
    assert_eq!(
        (z.host.as_str(), z.pid, z.concurrency, z.jobs_done),
        ("host-1", 7, 4, 3)
    );
    assert_eq!(z.breakers.get("data").map(String::as_str), Some("closed"));
    assert_eq!(z.metrics_addr.as_deref(), Some("127.0.0.1:9464"));
    workers::forget(&pool, &ns, "a").await.expect("forget");
    assert_eq!(workers::live(&pool, &ns).await.expect("live").len(), 2);
    for id in ["b", "z"] {
        workers::forget(&pool, &ns, id).await.expect("forget");
    }
    assert!(!workers::host_name().is_empty());
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    let pool = redis_pool("redis://127.0.0.1:9").expect("pool");
    assert!(workers::ping(&pool).await.is_err());
    assert!(workers::live(&pool, "x").await.is_err());
}
