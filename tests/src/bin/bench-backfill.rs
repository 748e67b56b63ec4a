//! Benchmark: a backfill planned by `signal9-producer backfill` and run by
//! real workers against the simulator, judged by the simulator's count of
//! data calls against the fewest the stored bars could have cost
//! (ceil(bars / 10,000)), and the worker's peak RSS (VmHWM).
//!
//! `bench-backfill --symbols 2000 --timeframe 1Day --start 2025-11-24 --end 2026-11-23`
//! `bench-backfill --symbols 100 --timeframe 1Min --start 2026-10-24 --end 2026-11-23`
//! `bench-backfill --symbols 50 --timeframe 1Min --start 2025-11-24 --end 2026-11-23`

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use std::time::Instant;

use alpaca_sim::bars::Frame;
use signal9_e2e::{active_symbols, flag, sim_bar_count, text, Stack};

fn day(text: &str, end: bool) -> Result<DateTime<Utc>> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").context("dates are YYYY-MM-DD")?;
    let time = if end {
        date.and_hms_opt(23, 59, 59)
    } else {
        date.and_hms_opt(0, 0, 0)
    };
    Ok(time.context("a valid date")?.and_utc())
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let count = flag("--symbols", 2000usize);
    let timeframe = flag("--timeframe", "1Day".to_string());
    let start = flag("--start", "2025-11-24".to_string());
    let end = flag("--end", "2026-11-23".to_string());
    let workers = flag("--workers", 1usize);
    let frame = match timeframe.as_str() {
        "1Day" => Frame::Day,
        "1Min" => Frame::Min(1),
        "1Hour" => Frame::Hour(1),
        other => anyhow::bail!("timeframe {other}: 1Day, 1Hour or 1Min"),
    };
    let mut stack = Stack::start(&["--limit", "0", "--assets", "12000"])?;
    for (name, value) in [
        ("SIGNAL9_DATA_LIMIT", "100000"),
        ("SIGNAL9_BUDGET_WAIT_SECS", "600"),
        ("RUST_LOG", "warn"),
    ] {
        stack.extra_env.push((name.into(), value.into()));
    }
    let symbols = active_symbols(42, 12_000, count);
    ensure!(symbols.len() == count, "only {} symbols", symbols.len());
    let file = stack.symbols_file(&symbols);
    for _ in 0..workers {
        stack.start_worker(&[])?;
    }
    let started = Instant::now();
    let out = stack
        .producer(&[
            "backfill",
            "--symbols-file",
            &file,
            "--timeframe",
            &timeframe,
            "--start",
            &start,
            "--end",
            &end,
            "--feed",
            "iex",
            "--wait",
            "--wait-timeout-secs",
            "3600",
        ])
        .await?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    let rss: Vec<String> = (0..workers)
        .map(|i| peak_rss_mb(stack.worker(i).id()).map_or("?".into(), |mb| format!("{mb:.0} MB")))
        .collect();
    let calls = stack.sim_stats().await?["apis"]["data"]["accepted"]
        .as_u64()
        .unwrap_or(0);
    let (from, to) = (day(&start, false)?, day(&end, true)?);
    let bars = sim_bar_count(&symbols, frame, from, to);
    let minimum = (bars as u64).div_ceil(10_000);
    print!("{}", text(&out));
    println!(
        "bench-backfill: {count} symbols × {timeframe} {start}..{end}: {bars} bars, {calls} data calls, minimum {minimum} ({:.1} % over), {secs:.1} s, worker peak RSS {}",
        100.0 * (calls as f64 / minimum.max(1) as f64 - 1.0),
        rss.join(", ")
    );
    stack.cleanup().await;
    Ok(())
}
