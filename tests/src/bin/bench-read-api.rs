//! Benchmark: `signal9-api` answering covered requests from SQLite.
//!
//! `bench-read-api --symbols 200 --clients 100 --secs 20 --rate 500` stores a year
//! (2025) of daily bars for that many symbols with their coverage, starts
//! `signal9-api` twice (the range cache off, then on), and for each:
//! 1. one client, one request at a time (`--sequential` requests): the
//!    latency of one symbol-year, p50/p99/max;
//! 2. `--clients` clients at once, each with its own connection, each
//!    asking for a random symbol-year in a loop for `--secs` seconds:
//!    requests, errors, throughput, p50/p99/max (closed loop: each client
//!    asks again as soon as it has its answer, so the two cores saturate
//!    and latency is queueing);
//! 3. the same clients paced to `--rate` requests a second in all (open
//!    loop): the latency at a load the machine carries.
//!
//! Every answer is checked: HTTP 200, `X-Signal9-Source: store`, and the
//! year's bar count; a difference is an error. The simulator sees no call.

use alpaca_sim::bars::Frame;
use anyhow::{ensure, Context, Result};
use rand::Rng;
use signal9_alpaca::Timeframe;
use signal9_e2e::{active_symbols, flag, sim_truth, Stack};
use signal9_shared::store::BarStore;
use signal9_shared::store::{SqliteStore, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

const START: &str = "2025-01-01T00:00:00Z";
const END: &str = "2025-12-31T23:59:59Z";
const TOKEN: &str = "bench-read-token";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&ms, 50.0),
        percentile(&ms, 90.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN)
    )
}

async fn one(client: &reqwest::Client, base: &str, symbol: &str, expected: usize) -> Result<f64> {
    let started = Instant::now();
    let response = client
        .get(format!("{base}/v2/stocks/{symbol}/bars"))
        .query(&[
            ("timeframe", "1Day"),
            ("start", START),
            ("end", END),
            ("feed", "iex"),
            ("limit", "10000"),
        ])
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await?;
    let status = response.status();
    let source = response
        .headers()
        .get("x-signal9-source")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.text().await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(status == 200, "HTTP {status}: {body}");
    ensure!(source == "store", "source {source:?}");
    // Counted, not parsed, so the clients spend little of the two cores.
    let bars = body.matches("{\"t\":").count();
    ensure!(bars == expected, "{symbol}: {bars} bars, expected {expected}");
    Ok(ms)
}

/// `clients` clients for `secs` seconds, each asking for a random
/// symbol-year, at most `rate` requests a second in all (`None`: no pause).
async fn load(
    base: &str,
    symbols: &Arc<Vec<(String, usize)>>,
    clients: usize,
    secs: u64,
    rate: Option<f64>,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (symbols, base) = (symbols.clone(), base.to_owned());
            tokio::spawn(async move {
                // Each client its own connection pool: 100 clients, 100 connections.
                let client = reqwest::Client::new();
                let mut pace = rate.map(|r| {
                    let mut tick = tokio::time::interval(Duration::from_secs_f64(clients as f64 / r));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick
                });
                if let Some(r) = rate {
                    // Spread the clients' first requests over one interval.
                    tokio::time::sleep(Duration::from_secs_f64(i as f64 / r)).await;
                }
                let (mut ms, mut errors) = (Vec::new(), Vec::new());
                while Instant::now() < deadline {
                    if let Some(tick) = pace.as_mut() {
                        tick.tick().await;
                    }
                    let (symbol, expected) = &symbols[rand::rng().random_range(0..symbols.len())];
                    match one(&client, &base, symbol, *expected).await {
                        Ok(t) => ms.push(t),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (ms, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), Vec::new());
    for task in tasks {
        let (ms, e) = task.await?;
        all.extend(ms);
        errors.extend(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut line = format!(
        "{} requests, {} errors, {:.0} requests/s: {}",
        all.len(),
        errors.len(),
        all.len() as f64 / elapsed,
        summary(all)
    );
    for e in errors.iter().take(5) {
        line.push_str(&format!("\n  error: {e}"));
    }
    Ok(line)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    stack: &Stack,
    symbols: &[(String, usize)],
    cache: usize,
    clients: usize,
    secs: u64,
    sequential: usize,
    rate: f64,
) -> Result<()> {
    let cache_entries = cache.to_string();
    let api = stack.start_api(
        &[("read", TOKEN)],
        &[("SIGNAL9_API_CACHE_ENTRIES", &cache_entries), ("RUST_LOG", "warn")],
    )?;
    let base = api.base_url();
    let client = reqwest::Client::new();
    // Warm: every symbol once (and the cache, when on).
    for (symbol, expected) in symbols {
        one(&client, &base, symbol, *expected).await?;
    }
    let mut ms = Vec::with_capacity(sequential);
    for i in 0..sequential {
        let (symbol, expected) = &symbols[i % symbols.len()];
        ms.push(one(&client, &base, symbol, *expected).await?);
    }
    println!(
        "cache entries {cache}: one client, {sequential} requests: {}",
        summary(ms)
    );

    let symbols = Arc::new(symbols.to_vec());
    println!(
        "cache entries {cache}: {clients} clients for {secs} s, closed loop: {}",
        load(&base, &symbols, clients, secs, None).await?
    );
    println!(
        "cache entries {cache}: {clients} clients for {secs} s, paced to {rate} requests/s in all: {}",
        load(&base, &symbols, clients, secs, Some(rate)).await?
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = flag("--symbols", 200);
    let clients: usize = flag("--clients", 100);
    let secs: u64 = flag("--secs", 20);
    let sequential: usize = flag("--sequential", 2000);
    let rate: f64 = flag("--rate", 500.0);
    let mut stack = Stack::start(&["--limit", "0"])?;
    let names = active_symbols(42, 12_000, n);
    let sets = sim_truth(&names, Frame::Day, Timeframe::DAY, START, END)?;
    {
        let store = SqliteStore::open(stack.sqlite_path())?;
        store.init().await?;
        let keys: Vec<_> = sets.iter().map(|(k, _)| k.clone()).collect();
        store.upsert_bar_sets(&sets).await?;
        store
            .add_coverage_many(&keys, START.parse().context("start")?, END.parse().context("end")?)
            .await?;
    }
    let symbols: Vec<(String, usize)> = sets
        .iter()
        .map(|(k, bars)| (k.symbol.to_string(), bars.len()))
        .collect();
    println!(
        "{} symbols, a year of daily bars each ({} bars per symbol-year), SQLite {}",
        symbols.len(),
        symbols.first().map_or(0, |s| s.1),
        stack.sqlite_path().display()
    );
    for cache in [0, 256] {
        measure(&stack, &symbols, cache, clients, secs, sequential, rate).await?;
    }
    let calls = stack.data_calls().await?;
    println!("calls to the simulator: {calls}");
    ensure!(calls == 0, "a covered range must cost no call");
    stack.cleanup().await;
    Ok(())
}
