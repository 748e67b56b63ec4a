//! Benchmark: how much of the budget 4 workers use when there is a deep
//! backlog, judged by the simulator (the API's side): accepted calls per
//! window as a share of N, the most in any sliding window, and 429s.
//!
//! `bench-budget --limit 20 --window 2 --margin-ms 20 --windows 30 [--sim-limit 1000] [--workers 4] [--reserve 0.2]`

use anyhow::{ensure, Result};
use std::time::Duration;

use signal9_e2e::{active_symbols, eventually, fetch_day, flag, Stack};

#[tokio::main]
async fn main() -> Result<()> {
    let limit = flag("--limit", 20.0) as u64;
    let window = flag("--window", 2.0);
    let margin_ms = flag("--margin-ms", 20.0) as u64;
    let windows = flag("--windows", 30.0) as usize;
    let workers = flag("--workers", 4.0) as usize;
    // SIGNAL9_INTERACTIVE_RESERVE: 0 by default; 0.2 was the default before
    // priority moved to the moment of contention.
    let reserve = flag("--reserve", 0.0);
    // The API's own limit; by default the same as the budget, so its
    // Remaining/Reset feedback takes part.
    let sim_limit = flag("--sim-limit", limit as f64) as u64;
    let jobs = limit as usize * (windows + 4);
    let mut stack = Stack::start(&[
        "--limit",
        &sim_limit.to_string(),
        "--window",
        &window.to_string(),
        "--assets",
        "40000",
    ])?;
    for (name, value) in [
        ("SIGNAL9_DATA_LIMIT", limit.to_string()),
        ("SIGNAL9_DATA_WINDOW_SECS", window.to_string()),
        ("SIGNAL9_BUDGET_MARGIN_MS", margin_ms.to_string()),
        ("SIGNAL9_BUDGET_WAIT_SECS", "600".to_string()),
        ("SIGNAL9_INTERACTIVE_RESERVE", reserve.to_string()),
        ("RUST_LOG", std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into())),
    ] {
        stack.extra_env.push((name.into(), value));
    }
    let symbols = active_symbols(42, 40_000, jobs);
    ensure!(symbols.len() == jobs, "not enough symbols");
    let file = stack.symbols_file(&symbols);
    let out = stack.producer(&fetch_day(&file, "2026-11-20", None)).await?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for _ in 0..workers {
        stack.start_worker(&["--concurrency", "4", "--coalesce-max", "1", "--coalesce-wait-ms", "0"])?;
    }
    let needed = windows + 2;
    let limit_secs = Duration::from_secs_f64(window * (needed as f64 + 10.0));
    eventually(limit_secs, || async {
        stack
            .sim_stats()
            .await
            .map(|s| s["apis"]["data"]["per_window"].as_array().map_or(0, Vec::len) > needed)
            .unwrap_or(false)
    })
    .await;
    let stats = stack.sim_stats().await?;
    let data = &stats["apis"]["data"];
    let per_window: Vec<u64> = data["per_window"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    // The first and last windows are partial: the backlog was starting and the run was ending.
    let full = &per_window[1..per_window.len().saturating_sub(1)];
    let mean = full.iter().sum::<u64>() as f64 / full.len() as f64;
    println!(
        "limit {limit} per {window} s  (API limit {sim_limit})  margin {margin_ms} ms  reserve {reserve}  workers {workers}  full windows {}  mean {:.1} calls ({:.1} % of N, {:.1} % of the most the margin allows)  min {}  max {}  windows over N {}  most in any sliding window {}  429s {}",
        full.len(),
        mean,
        100.0 * mean / limit as f64,
        100.0 * mean / (limit as f64 * window / (window + margin_ms as f64 / 1000.0)),
        full.iter().min().unwrap_or(&0),
        full.iter().max().unwrap_or(&0),
        full.iter().filter(|c| **c > limit).count(),
        data["max_in_window"],
        data["rate_limited"]
    );
    if std::env::var("BENCH_LOG").is_ok() {
        eprintln!("{}", stack.worker_logs());
    }
    stack.cleanup().await;
    Ok(())
}
