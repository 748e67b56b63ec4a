//! Benchmark: the daily pipeline (asset sync, then the previous trading
//! day's daily bars of every active symbol) in API calls and wall time,
//! beside the original design (one status call per asset, one bars call per
//! symbol), against the simulator's 12,000 assets.
//!
//! signal9's pipeline runs under the default budget (200 calls per 60 s per
//! API), so its wall time is measured. The original design's calls are
//! counted by running it with the budget off; its wall time under the
//! default budget is then computed from the count (it is bound by it).

use anyhow::{ensure, Result};
use std::time::Instant;

use signal9_e2e::Stack;
use signal9_shared::calendar::{ny_date, previous_trading_day};
use signal9_shared::store::AssetStore;

fn calls(stats: &serde_json::Value, api: &str) -> u64 {
    stats["apis"][api]["accepted"].as_u64().unwrap_or(0)
}

async fn run(stack: &Stack, args: &[&str]) -> Result<()> {
    let out = stack.producer(args).await?;
    ensure!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let day = previous_trading_day(ny_date(chrono::Utc::now())).to_string();
    let bars = [
        "--timeframe",
        "1Day",
        "--start",
        &day,
        "--end",
        &day,
        "--feed",
        "iex",
        "--wait",
        "--wait-timeout-secs",
        "3600",
    ];

    // signal9: the default budget, 4 workers.
    let mut ours = Stack::start(&["--limit", "200", "--window", "60"])?;
    for _ in 0..4 {
        ours.start_worker(&[])?;
    }
    let started = Instant::now();
    run(
        &ours,
        &["sync", "--run-id", "bench", "--wait", "--wait-timeout-secs", "600"],
    )
    .await?;
    let mut args = vec!["fetch-bars", "--all-active"];
    args.extend_from_slice(&bars);
    run(&ours, &args).await?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = ours.sim_stats().await?;
    println!(
        "signal9 daily pipeline: trading calls {}, data calls {}, total {}, wall time {seconds:.1} s at 200 calls/60 s per API, 429s {}",
        calls(&stats, "trading"),
        calls(&stats, "data"),
        calls(&stats, "trading") + calls(&stats, "data"),
        stats["apis"]["data"]["rate_limited"].as_u64().unwrap_or(0) + stats["apis"]["trading"]["rate_limited"].as_u64().unwrap_or(0)
    );
    ours.cleanup().await;

    // The original design: one status call per asset, one bars call per symbol (budget off, to count).
    let mut original = Stack::start(&["--limit", "0"])?;
    original
        .extra_env
        .push(("SIGNAL9_DATA_LIMIT".into(), "1000000000".into()));
    original
        .extra_env
        .push(("SIGNAL9_TRADING_LIMIT".into(), "1000000000".into()));
    for _ in 0..4 {
        original.start_worker(&["--coalesce-max", "1", "--coalesce-wait-ms", "0", "--concurrency", "8"])?;
    }
    run(
        &original,
        &["sync", "--run-id", "universe", "--wait", "--wait-timeout-secs", "600"],
    )
    .await?;
    let after_sync = original.sim_stats().await?;
    let store = signal9_shared::store::SqliteStore::open(original.sqlite_path())?;
    let assets = store
        .list_assets(&signal9_shared::store::AssetFilter::default())
        .await?;
    let symbols: std::collections::BTreeSet<String> = assets.iter().map(|a| a.asset.symbol.to_string()).collect();
    // One status call per asset (recycled tickers share a symbol, so per symbol here).
    let mut status = vec!["status-check", "--wait", "--wait-timeout-secs", "3600"];
    status.extend(symbols.iter().map(String::as_str));
    run(&original, &status).await?;
    // One bars call per symbol.
    let mut args = vec!["fetch-bars", "--all-active"];
    args.extend_from_slice(&bars);
    run(&original, &args).await?;
    let stats = original.sim_stats().await?;
    let trading = calls(&stats, "trading");
    let data = calls(&stats, "data");
    let status_calls = trading - calls(&after_sync, "trading");
    // Under the default budget each API is bound by its own 200 calls per minute.
    let minutes = (trading.max(data) as f64) / 200.0;
    println!(
        "original design: trading calls {trading} ({status_calls} status checks), data calls {data}, total {}, wall time at 200 calls/60 s per API ≥ {minutes:.1} min (computed from the count)",
        trading + data
    );
    original.cleanup().await;
    Ok(())
}
