//! Alpaca keys from AWS Secrets Manager (on the local AWS-API server):
//! a rotation picked up after the first refusal, and a missing or broken
//! secret stopping a worker at start with a clear message.
#![allow(clippy::unwrap_used)]

use signal9_e2e::{
    active_symbols, eventually, fetch_day, put_secret, queue_depth, rotate_sim_keys, secret_json, text, Stack,
};
use std::time::Duration;

/// Requests the simulator answered with 401 or 403.
async fn refusals(stack: &Stack) -> u64 {
    let stats = stack.sim_stats().await.unwrap();
    stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| matches!(r["status"].as_u64(), Some(401 | 403)))
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_picked_up_after_the_first_401_without_a_restart_or_dead_letter() {
    let mut stack = Stack::start(&["--assets", "400", "--key", "rot-key-1", "--secret", "rot-secret-1"]).unwrap();
    let name = format!("{}/alpaca", stack.namespace);
    put_secret(&name, &secret_json("rot-key-1", "rot-secret-1", true))
        .await
        .unwrap();
    stack.use_secret(&name);
    // A long TTL: only a refusal can make the worker read the secret again.
    stack
        .extra_env
        .push(("SIGNAL9_ALPACA_SECRET_TTL_SECS".into(), "3600".into()));
    stack.extra_env.push(("RUST_LOG".into(), "info".into()));
    stack.start_worker(&["--concurrency", "1"]).unwrap();

    let symbols = active_symbols(42, 400, 10);
    let file = stack.symbols_file(&symbols);
    let before = stack
        .producer(&fetch_day(&file, "2026-11-18", Some("60")))
        .await
        .unwrap();
    assert!(before.status.success(), "{}\n{}", text(&before), stack.worker_logs());
    assert_eq!(refusals(&stack).await, 0);

    // The rotation: a new key in the secret, the old one refused by the API.
    put_secret(&name, &secret_json("rot-key-2", "rot-secret-2", true))
        .await
        .unwrap();
    rotate_sim_keys(&stack.sim.base_url(), "rot-key-2", "rot-secret-2")
        .await
        .unwrap();

    let after = stack
        .producer(&fetch_day(&file, "2026-11-19", Some("60")))
        .await
        .unwrap();
    assert!(after.status.success(), "{}\n{}", text(&after), stack.worker_logs());
    assert!(
        text(&after).contains(&format!("succeeded {}, dead-lettered 0", symbols.len())),
        "{}",
        text(&after)
    );
    assert_eq!(refusals(&stack).await, 1, "one refused call, then the new key");
    assert_eq!(queue_depth(&stack.topology().dead_letter_queue()).await.unwrap(), 0);
    assert!(
        stack.worker(0).try_wait().unwrap().is_none(),
        "the same worker process, not restarted: {}",
        stack.worker_logs()
    );
    assert!(
        stack.worker_logs().contains("repeating the call with the new key"),
        "{}",
        stack.worker_logs()
    );
    stack.cleanup().await;
}

async fn worker_start_error(stack: &mut Stack) -> String {
    let index = stack.start_worker(&[]).unwrap();
    let exited = eventually(Duration::from_secs(30), || {
        let done = stack.worker(index).try_wait().unwrap();
        async move { done.is_some() }
    })
    .await;
    assert!(exited, "the worker stops at start: {}", stack.worker_logs());
    let status = stack.worker(index).wait().unwrap();
    assert!(!status.success(), "a failed start exits non-zero");
    stack.worker_logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_stops_the_worker_at_start_naming_the_secret() {
    let mut stack = Stack::start(&["--assets", "50"]).unwrap();
    let name = format!("{}/no-such-secret", stack.namespace);
    stack.use_secret(&name);
    let logs = worker_start_error(&mut stack).await;
    assert!(
        logs.contains(&format!("Secrets Manager has no secret \"{name}\"")),
        "{logs}"
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_secret_stops_the_worker_at_start_naming_the_field() {
    let mut stack = Stack::start(&["--assets", "50"]).unwrap();
    let name = format!("{}/broken", stack.namespace);
    put_secret(&name, r#"{"apiKey": "k-123456", "paper": true}"#)
        .await
        .unwrap();
    stack.use_secret(&name);
    let logs = worker_start_error(&mut stack).await;
    assert!(logs.contains("field \"secretKey\" is missing"), "{logs}");
    assert!(!logs.contains("k-123456"), "the key is not quoted: {logs}");
    stack.cleanup().await;
}
