//! Fail closed: while Redis (the budget) is down no API call is made, the
//! workers stop consuming (their Redis breakers open), and every job
//! completes once it is back, none dead-lettered, the budget kept from the
//! first call after (the simulator counts every 1-second window). Alone in its own test binary,
//! because it stops the Redis every test shares.
#![allow(clippy::unwrap_used)]

use signal9_e2e::{active_symbols, eventually, fetch_day, queue_depth, start_redis, Stack};
use std::process::Command;
use std::time::Duration;

async fn redis_up() -> bool {
    tokio::net::TcpStream::connect("127.0.0.1:6379").await.is_ok()
}

async fn accepted(stack: &Stack) -> u64 {
    stack.sim_stats().await.unwrap()["apis"]["data"]["accepted"]
        .as_u64()
        .unwrap()
}

const BUDGET: u64 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_is_made_while_redis_is_down_and_every_job_completes_after_within_the_budget() {
    // The simulator does not limit, only counts calls in every 1 s window;
    // the budget is 15 a second, less than the workers could make.
    let mut stack = Stack::start(&["--limit", "0", "--window", "1", "--latency-ms", "100"]).unwrap();
    stack.extra_env.push(("SIGNAL9_DATA_LIMIT".into(), BUDGET.to_string()));
    stack.extra_env.push(("SIGNAL9_DATA_WINDOW_SECS".into(), "1".into()));
    stack.extra_env.push(("SIGNAL9_BUDGET_MARGIN_MS".into(), "50".into()));
    for _ in 0..2 {
        stack
            .start_worker(&["--concurrency", "2", "--coalesce-max", "1", "--coalesce-wait-ms", "0"])
            .unwrap();
    }
    let symbols = active_symbols(42, 12_000, 150);
    let file = stack.symbols_file(&symbols);
    let producer = stack
        .producer_spawn(&fetch_day(&file, "2026-11-20", Some("120")))
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async { accepted(&stack).await >= 10 }).await,
        "{}",
        stack.worker_logs()
    );

    let status = Command::new("redis-cli").args(["shutdown", "nosave"]).status();
    assert!(status.is_ok());
    assert!(
        eventually(Duration::from_secs(10), || async { !redis_up().await }).await,
        "Redis did not stop"
    );
    // Calls that held a token before Redis went away may still land.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = accepted(&stack).await;
    // 20 s down: the workers' Redis breakers open and they stop consuming.
    let held = eventually(Duration::from_secs(20), || async {
        stack.worker_logs().contains("A failing dependency holds the worker")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = accepted(&stack).await;
    start_redis();
    assert!(
        eventually(Duration::from_secs(10), redis_up).await,
        "Redis did not restart"
    );
    assert_eq!(before, after, "no API call while the budget was unreachable");
    assert!(
        held,
        "the workers stopped consuming while Redis was down\n{}",
        stack.worker_logs()
    );
    assert!(before < 150, "the outage came mid-run");

    let out = producer.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}\n{}", stack.worker_logs());
    assert!(text.contains("succeeded 150, dead-lettered 0"), "{text}");
    assert_eq!(queue_depth(&stack.topology().dead_letter_queue()).await.unwrap(), 0);
    assert!(
        stack.worker_logs().contains("API budget unreachable; no call made"),
        "{}",
        stack.worker_logs()
    );
    // Redis came back empty (shut down without saving): the window starts
    // again, and still no second of the run saw more than the budget.
    let most = stack.sim_stats().await.unwrap()["apis"]["data"]["max_in_window"]
        .as_u64()
        .unwrap();
    assert!(most <= BUDGET, "{most} calls in one second, budget {BUDGET}");
    assert!(
        most >= BUDGET / 2,
        "the budget was the limit ({most} at most in a second)"
    );
    stack.cleanup().await;
}
