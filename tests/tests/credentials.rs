//! `check-credentials` and the worker's `--check-credentials`: one
//! `GET /v2/account` through the shared budget, reported without a key.
#![allow(clippy::unwrap_used)]

use signal9_e2e::{eventually, text, Stack};
use signal9_shared::limiter::{redis_pool, Budget, BudgetSize};
use std::time::Duration;

/// Tokens taken from the stack's trading budget in the current window.
async fn trading_tokens(stack: &Stack) -> u32 {
    let size = BudgetSize {
        limit: 200,
        window: Duration::from_secs(60),
        margin: Duration::from_millis(250),
    };
    let pool = redis_pool("redis://127.0.0.1:6379").unwrap();
    let budget = Budget::new(pool, stack.topology().namespace(), "trading", size);
    budget.usage().await.unwrap().in_window
}

fn account_calls(stats: &serde_json::Value) -> u64 {
    stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v2/account")
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_credentials_reports_the_base_and_the_account_status_through_the_budget_and_never_a_key() {
    let mut stack = Stack::start(&[]).unwrap();
    let out = stack.producer(&["check-credentials"]).await.unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("reached {}", stack.sim.base_url())), "{said}");
    assert!(
        said.contains("status ACTIVE") && said.contains("credentials ok"),
        "{said}"
    );
    assert!(said.contains("…0042"), "the account number's tail: {said}");
    assert!(!said.contains("sim-key") && !said.contains("sim-secret"), "{said}");
    assert!(
        !said.contains("PA3SIM0042"),
        "only the tail of the account number: {said}"
    );
    assert_eq!(account_calls(&stack.sim_stats().await.unwrap()), 1);
    assert_eq!(
        trading_tokens(&stack).await,
        1,
        "the call took a token of the shared budget"
    );

    // A refused key: a clear failure that names neither value.
    stack
        .extra_env
        .push(("APCA_API_SECRET_KEY".into(), "wrong-secret-value".into()));
    let out = stack.producer(&["check-credentials"]).await.unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("did not open an account") && said.contains("401"),
        "{said}"
    );
    assert!(
        !said.contains("wrong-secret-value") && !said.contains("sim-key"),
        "{said}"
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_check_credentials_stops_at_start_on_a_refused_key_and_runs_with_a_good_one() {
    let mut stack = Stack::start(&[]).unwrap();
    stack
        .extra_env
        .push(("APCA_API_SECRET_KEY".into(), "wrong-secret-value".into()));
    let bad = stack.start_worker(&["--check-credentials"]).unwrap();
    let mut status = None;
    assert!(
        eventually(Duration::from_secs(30), || {
            status = stack.worker(bad).try_wait().unwrap();
            let done = status.is_some();
            async move { done }
        })
        .await,
        "the worker kept running with a refused key\n{}",
        stack.worker_logs()
    );
    assert!(!status.unwrap().success());
    let logs = stack.worker_logs();
    assert!(logs.contains("--check-credentials") && logs.contains("401"), "{logs}");
    assert!(!logs.contains("wrong-secret-value"), "{logs}");

    stack.extra_env.pop();
    stack.start_worker(&["--check-credentials"]).unwrap();
    let out = stack
        .producer(&["status-check", "MSFT", "--wait", "--wait-timeout-secs", "60"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    assert_eq!(account_calls(&stack.sim_stats().await.unwrap()), 2);
    stack.cleanup().await;
}
