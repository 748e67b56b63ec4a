//! Benchmark: what storing bars costs on each backend, in the three shapes
//! of issue 14, written as the worker writes them (pages of up to 10,000
//! bars, each page one `upsert_bar_sets` call, a long series cut across
//! pages):
//!
//! - `day`: one day of daily bars for 8,000 symbols (2026-11-20);
//! - `month`: a month of 1-minute bars for 100 symbols (October 2026);
//! - `year`: a year of daily bars for 2,000 symbols (2025-11-21..2026-11-20).
//!
//! For each it reports, on SQLite (a fresh file) and on DynamoDB (the local
//! AWS-API server): write requests and write units per 1,000 bars (units
//! from each item's size as AWS bills them: 1 per KB or part, index writes
//! excluded), stored bytes per bar (SQLite: the file after a checkpoint;
//! DynamoDB: the sum of the stored items' sizes, by a scan), and the time to
//! read one series' whole range back (median of 5). Every series is read
//! back and compared with the simulator's truth (on DynamoDB the first 200).
//!
//! `bench-layout [--scenario day|month|year|all] [--dynamo-symbols N]`:
//! `--dynamo-symbols` writes only the first N symbols of a scenario to
//! DynamoDB (moto is slow; the figures are per bar, so a sample serves).
//! `--read-1min-year` also stores and reads one symbol's year of 1-minute bars.

use alpaca_sim::bars::Frame;
use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use signal9_alpaca::{Bar, Timeframe};
use signal9_e2e::{active_symbols, aws_endpoint, flag, sim_truth, verify_stored};
use signal9_shared::store::{DynamoStore, SeriesKey, SqliteStore, Store};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Bars in one page of the API, the worker's unit of writing.
const PAGE: usize = 10_000;

struct Scenario {
    name: &'static str,
    symbols: usize,
    frame: Frame,
    timeframe: Timeframe,
    start: &'static str,
    end: &'static str,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "day",
        symbols: 8_000,
        frame: Frame::Day,
        timeframe: Timeframe::DAY,
        start: "2026-11-20T00:00:00Z",
        end: "2026-11-20T23:59:59Z",
    },
    Scenario {
        name: "month",
        symbols: 100,
        frame: Frame::Min(1),
        timeframe: Timeframe::MINUTE,
        start: "2026-10-01T00:00:00Z",
        end: "2026-10-31T23:59:59Z",
    },
    Scenario {
        name: "year",
        symbols: 2_000,
        frame: Frame::Day,
        timeframe: Timeframe::DAY,
        start: "2025-11-21T00:00:00Z",
        end: "2026-11-20T23:59:59Z",
    },
];

fn t(s: &str) -> Result<DateTime<Utc>> {
    s.parse().context("time")
}

/// The sets cut into pages of up to [`PAGE`] bars, in order, as the API
/// pages a multi-symbol request.
fn pages(sets: &[(SeriesKey, Vec<Bar>)]) -> Vec<Vec<(SeriesKey, Vec<Bar>)>> {
    let mut out = Vec::new();
    let mut page: Vec<(SeriesKey, Vec<Bar>)> = Vec::new();
    let mut room = PAGE;
    for (key, bars) in sets {
        let mut rest: &[Bar] = bars;
        while !rest.is_empty() {
            let take = rest.len().min(room);
            page.push((key.clone(), rest[..take].to_vec()));
            rest = &rest[take..];
            room -= take;
            if room == 0 {
                out.push(std::mem::take(&mut page));
                room = PAGE;
            }
        }
    }
    if !page.is_empty() {
        out.push(page);
    }
    out
}

async fn write(store: &dyn Store, sets: &[(SeriesKey, Vec<Bar>)]) -> Result<(f64, u64)> {
    let started = Instant::now();
    let mut calls = 0;
    for page in pages(sets) {
        store.upsert_bar_sets(&page).await?;
        calls += 1;
    }
    Ok((started.elapsed().as_secs_f64(), calls))
}

async fn verify(store: &dyn Store, sets: &[(SeriesKey, Vec<Bar>)], start: &str, end: &str) -> Result<()> {
    verify_stored(store, sets, t(start)?, t(end)?).await
}

/// Median seconds of 5 reads of a series' range.
async fn read_time(store: &dyn Store, key: &SeriesKey, start: &str, end: &str, expected: usize) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let bars = store.bars(key, t(start)?, t(end)?).await?;
        times.push(started.elapsed().as_secs_f64());
        ensure!(bars.len() == expected, "{key}: read {} of {expected}", bars.len());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[2])
}

fn sqlite_bytes(path: &std::path::Path) -> Result<u64> {
    let conn = rusqlite::Connection::open(path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(std::fs::metadata(path)?.len())
}

/// Items and bytes (as AWS sizes them) of every bar table of a store.
async fn dynamo_bytes(config: &aws_config::SdkConfig, store: &DynamoStore) -> Result<(u64, u64)> {
    let client = aws_sdk_dynamodb::Client::new(config);
    let (mut items, mut bytes) = (0u64, 0u64);
    for table in ["bars", "bar_chunks"] {
        let mut pages = client.scan().table_name(store.table(table)).into_paginator().send();
        while let Some(page) = pages.next().await {
            let Ok(page) = page else {
                break; // a table this layout does not have
            };
            for item in page.items() {
                items += 1;
                bytes += signal9_shared::store::dynamo::item_size(item) as u64;
            }
        }
    }
    Ok((items, bytes))
}

async fn run(scenario: &Scenario, dynamo_symbols: usize, config: &aws_config::SdkConfig) -> Result<()> {
    let symbols = active_symbols(42, 13_000, scenario.symbols);
    ensure!(
        symbols.len() == scenario.symbols,
        "only {} active symbols",
        symbols.len()
    );
    let sets = sim_truth(
        &symbols,
        scenario.frame,
        scenario.timeframe,
        scenario.start,
        scenario.end,
    )?;
    let bars: usize = sets.iter().map(|(_, b)| b.len()).sum();
    let first = &sets[0];
    println!(
        "== {}: {} symbols, {} {} bars, {} pages of up to {PAGE}",
        scenario.name,
        scenario.symbols,
        bars,
        scenario.timeframe,
        pages(&sets).len()
    );

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let sqlite = SqliteStore::open(&path)?;
    sqlite.init().await?;
    let empty = sqlite_bytes(&path)?;
    let (secs, calls) = write(&sqlite, &sets).await?;
    verify(&sqlite, &sets, scenario.start, scenario.end).await?;
    let stored = sqlite_bytes(&path)? - empty;
    let read = read_time(&sqlite, &first.0, scenario.start, scenario.end, first.1.len()).await?;
    println!(
        "sqlite    {:>8.2} write transactions per 1,000 bars | {:>6.1} stored bytes per bar | write {secs:.2} s | read one series ({} bars) {:.2} ms",
        calls as f64 * 1000.0 / bars as f64,
        stored as f64 / bars as f64,
        first.1.len(),
        read * 1000.0
    );

    let sample = &sets[..dynamo_symbols.min(sets.len())];
    let sample_bars: usize = sample.iter().map(|(_, b)| b.len()).sum();
    let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dynamo = DynamoStore::from_config(config, prefix);
    dynamo.init().await?;
    let (secs, _) = write(&dynamo, sample).await?;
    // Every series on SQLite; on moto (slow to query), the first 200.
    verify(&dynamo, &sample[..sample.len().min(200)], scenario.start, scenario.end).await?;
    let c = dynamo.counters();
    let requests = c.batch_writes.load(Ordering::Relaxed) + c.item_writes.load(Ordering::Relaxed);
    let units = c.write_units.load(Ordering::Relaxed);
    let largest = c.largest_item.load(Ordering::Relaxed);
    let (items, bytes) = dynamo_bytes(config, &dynamo).await?;
    let read = read_time(&dynamo, &first.0, scenario.start, scenario.end, first.1.len()).await?;
    let per_k = |x: u64| x as f64 * 1000.0 / sample_bars as f64;
    println!(
        "dynamodb  {:>8.2} write requests, {:>8.2} write units per 1,000 bars | {:>6.1} stored bytes per bar ({items} items, largest written {largest} B) | {} symbols, {sample_bars} bars | write {secs:.2} s | read one series ({} bars) {:.2} ms",
        per_k(requests),
        per_k(units),
        bytes as f64 / sample_bars as f64,
        sample.len(),
        first.1.len(),
        read * 1000.0
    );
    dynamo.drop_tables().await?;
    Ok(())
}

/// One symbol's year of 1-minute bars, written and read back whole.
async fn one_minute_year(config: &aws_config::SdkConfig) -> Result<()> {
    let (start, end) = ("2025-11-21T00:00:00Z", "2026-11-20T23:59:59Z");
    let symbols = active_symbols(42, 13_000, 1);
    let sets = sim_truth(&symbols, Frame::Min(1), Timeframe::MINUTE, start, end)?;
    let n = sets[0].1.len();
    println!("== a series-year of 1Min bars: {} ({n} bars)", sets[0].0);
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(dir.path().join("bench.db"))?;
    sqlite.init().await?;
    write(&sqlite, &sets).await?;
    let read = read_time(&sqlite, &sets[0].0, start, end, n).await?;
    println!("sqlite    read the year: {:.1} ms", read * 1000.0);
    let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dynamo = DynamoStore::from_config(config, prefix);
    dynamo.init().await?;
    write(&dynamo, &sets).await?;
    let reads_before = dynamo.counters().reads.load(Ordering::Relaxed);
    let read = read_time(&dynamo, &sets[0].0, start, end, n).await?;
    let reads = (dynamo.counters().reads.load(Ordering::Relaxed) - reads_before) / 5;
    println!(
        "dynamodb  read the year: {:.1} ms, {reads} read requests",
        read * 1000.0
    );
    dynamo.drop_tables().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let which = std::env::args()
        .skip_while(|a| a != "--scenario")
        .nth(1)
        .unwrap_or_else(|| "all".into());
    let dynamo_symbols = flag("--dynamo-symbols", usize::MAX);
    let config = signal9_shared::aws::AwsTarget::local(aws_endpoint()).load().await;
    for scenario in SCENARIOS.iter().filter(|s| which == "all" || which == s.name) {
        run(scenario, dynamo_symbols, &config).await?;
    }
    if std::env::args().any(|a| a == "--read-1min-year") {
        one_minute_year(&config).await?;
    }
    Ok(())
}
