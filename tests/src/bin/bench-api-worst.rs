//! Benchmark: `signal9-api`'s memory and a normal request's latency while
//! clients send the worst request it accepts (issue 25).
//!
//! `bench-api-worst --symbols 200 --days 5 --clients 16 --secs 60` stores
//! `--days` trading days of minute bars for `--symbols` symbols with their
//! coverage (the simulator's truth), starts the `signal9-api` beside this
//! binary with its defaults, and for `--secs` seconds runs:
//! - `--clients` clients, each sending the worst accepted request in a
//!   loop: every symbol at the cap (`SIGNAL9_API_MAX_SYMBOLS`, 200), minute
//!   bars over the whole covered range, `limit=10000`, following every
//!   `next_page_token` to the end and starting again, half of them `sort=desc`;
//! - one client asking for a normal covered request (one symbol, one day of
//!   minute bars) ten times a second, whose latency is reported (p50/p99).
//!
//! It samples the API's resident memory (`/proc/PID/status`) every 100 ms:
//! its peak (`VmHWM`) is the figure. Every answer must be HTTP 200 from the
//! store; the simulator must see no call.

use alpaca_sim::bars::Frame;
use anyhow::{ensure, Context, Result};
use signal9_alpaca::Timeframe;
use signal9_e2e::{active_symbols, flag, iex_minute_page_query, sim_truth, Stack};
use signal9_shared::store::BarStore;
use signal9_shared::store::{SqliteStore, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-worst-token";
const START: &str = "2026-11-16T00:00:00Z";

fn kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Pages through the worst request once; returns the bars read.
async fn worst(client: &reqwest::Client, base: &str, symbols: &str, end: &str, desc: bool) -> Result<u64> {
    let mut token: Option<String> = None;
    let mut bars = 0u64;
    loop {
        let sort = if desc { "desc" } else { "asc" };
        let query = iex_minute_page_query(symbols, (START, end), sort, token.clone());
        let response = client
            .get(format!("{base}/v2/stocks/bars"))
            .query(&query)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        ensure!(status == 200, "HTTP {status}: {body}");
        bars += body["bars"]
            .as_object()
            .map_or(0, |m| m.values().map(|v| v.as_array().map_or(0, Vec::len) as u64).sum());
        match body["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(bars),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = flag("--symbols", 200);
    let days: i64 = flag("--days", 5);
    let clients: usize = flag("--clients", 16);
    let secs: u64 = flag("--secs", 60);
    let mut stack = Stack::start(&["--limit", "0"])?;
    let names = active_symbols(42, 12_000, n);
    let start: chrono::DateTime<chrono::Utc> = START.parse()?;
    let end = (start + chrono::Duration::days(days) - chrono::Duration::seconds(1)).to_rfc3339();
    let sets = sim_truth(
        &names,
        Frame::Min(1),
        "1Min".parse::<Timeframe>().map_err(anyhow::Error::msg)?,
        START,
        &end,
    )?;
    let total: usize = sets.iter().map(|(_, b)| b.len()).sum();
    {
        let store = SqliteStore::open(stack.sqlite_path())?;
        store.init().await?;
        let keys: Vec<_> = sets.iter().map(|(k, _)| k.clone()).collect();
        store.upsert_bar_sets(&sets).await?;
        store
            .add_coverage_many(&keys, start, end.parse().context("end")?)
            .await?;
    }
    println!("{n} symbols, {days} days of minute bars from {START}: {total} bars stored with their coverage");
    let api = stack.start_api(&[("read", TOKEN)], &[("RUST_LOG", "warn")])?;
    let pid = api.pid();
    let base = api.base_url();
    let symbols = Arc::new(names.join(","));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let read = Arc::new(AtomicU64::new(0));
    let passes = Arc::new(AtomicU64::new(0));
    let heavy: Vec<_> = (0..clients)
        .map(|i| {
            let (base, symbols, end, read, passes) =
                (base.clone(), symbols.clone(), end.clone(), read.clone(), passes.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while Instant::now() < deadline {
                    let bars = worst(&client, &base, &symbols, &end, i % 2 == 1).await?;
                    read.fetch_add(bars, Ordering::Relaxed);
                    passes.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    let normal = {
        let (base, symbol) = (base.clone(), names[0].clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut ms = Vec::new();
            while Instant::now() < deadline {
                tick.tick().await;
                let started = Instant::now();
                let response = client
                    .get(format!("{base}/v2/stocks/{symbol}/bars"))
                    .query(&[
                        ("timeframe", "1Min"),
                        ("start", START),
                        ("end", "2026-11-16T23:59:59Z"),
                        ("feed", "iex"),
                    ])
                    .header("Authorization", format!("Bearer {TOKEN}"))
                    .send()
                    .await?;
                ensure!(response.status() == 200, "normal request: HTTP {}", response.status());
                let _ = response.bytes().await?;
                ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(ms)
        })
    };
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        peak_rss = peak_rss.max(kib(&status, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in heavy {
        task.await??;
    }
    let mut ms = normal.await??;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = kib(&status, "VmHWM:");
    ms.sort_by(f64::total_cmp);
    println!(
        "{clients} clients paging the worst accepted request for {secs} s: {} passes, {} bars read ({:.0} bars/s)",
        passes.load(Ordering::Relaxed),
        read.load(Ordering::Relaxed),
        read.load(Ordering::Relaxed) as f64 / secs as f64
    );
    println!(
        "API peak RSS: {:.1} MB (VmHWM), {:.1} MB sampled; normal covered request ({} of them): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        hwm as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN)
    );
    let calls = stack.data_calls().await?;
    println!("calls to the simulator: {calls}");
    ensure!(calls == 0, "covered ranges must cost no call");
    stack.cleanup().await;
    Ok(())
}
