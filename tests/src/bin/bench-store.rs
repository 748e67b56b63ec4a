//! Benchmark: writing bars to each store backend, SQLite (a file) and
//! DynamoDB (the local AWS-API server, moto), as the worker writes them:
//! the bars of a coalesced chunk of symbols in one `upsert_bar_sets` call,
//! then each series' closed range recorded as covered.
//!
//! `bench-store --symbols 1000 --chunk 50` writes the five trading days of
//! 2026-11-16..20 for that many symbols, counts the write requests each
//! backend sent, reads every series back to check each bar is stored once,
//! and then times the same fetch-bars run through the whole pipeline
//! (simulator, RabbitMQ, `--workers` worker processes) on each backend.

use alpaca_sim::bars::Frame;
use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use signal9_alpaca::{Bar, Timeframe};
use signal9_e2e::{active_symbols, aws_endpoint, fetch_iex_days, flag, sim_truth, verify_stored, Stack};
use signal9_shared::store::{DynamoStore, SeriesKey, SqliteStore, Store};
use std::sync::atomic::Ordering;
use std::time::Instant;

const START: &str = "2026-11-16T00:00:00Z";
const END: &str = "2026-11-20T23:59:59Z";

fn t(s: &str) -> Result<DateTime<Utc>> {
    s.parse().context("time")
}

fn truth(symbols: &[String]) -> Result<Vec<(SeriesKey, Vec<Bar>)>> {
    sim_truth(symbols, Frame::Day, Timeframe::DAY, START, END)
}

/// Writes as the worker does; returns (seconds, write calls to the store
/// trait, each one SQLite transaction).
async fn write(store: &dyn Store, sets: &[(SeriesKey, Vec<Bar>)], chunk: usize) -> Result<(f64, u64)> {
    let started = Instant::now();
    let mut calls = 0;
    for part in sets.chunks(chunk) {
        store.upsert_bar_sets(part).await?;
        let keys: Vec<SeriesKey> = part.iter().map(|(key, _)| key.clone()).collect();
        store.add_coverage_many(&keys, t(START)?, t(END)?).await?;
        calls += 2;
    }
    Ok((started.elapsed().as_secs_f64(), calls))
}

async fn verify(store: &dyn Store, sets: &[(SeriesKey, Vec<Bar>)]) -> Result<()> {
    verify_stored(store, sets, t(START)?, t(END)?).await
}

async fn pipeline(symbols: &[String], workers: usize, dynamodb: bool) -> Result<f64> {
    let mut stack = Stack::start(&["--limit", "0"])?;
    let store = if dynamodb {
        Some(stack.use_dynamodb().await?)
    } else {
        None
    };
    for _ in 0..workers {
        stack.start_worker(&["--concurrency", "4"])?;
    }
    let file = stack.symbols_file(symbols);
    let started = Instant::now();
    let out = stack.producer(&fetch_iex_days(&file, START, END, Some("1200"))).await?;
    let secs = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        text.contains(&format!("succeeded {}, dead-lettered 0", symbols.len())),
        "{text}\n{}",
        stack.worker_logs()
    );
    if let Some(store) = store {
        store.drop_tables().await?;
    }
    stack.cleanup().await;
    Ok(secs)
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = flag("--symbols", 1000);
    let chunk = flag("--chunk", 50);
    let workers = flag("--workers", 2);
    let symbols = active_symbols(42, 12_000, n);
    ensure!(
        symbols.len() == n,
        "the universe has only {} active symbols",
        symbols.len()
    );
    let sets = truth(&symbols)?;
    let bars: usize = sets.iter().map(|(_, b)| b.len()).sum();
    let per_k = |x: u64| x as f64 * 1000.0 / bars as f64;
    println!("{n} symbols, {bars} daily bars, chunks of {chunk} symbols");

    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(dir.path().join("bench.db"))?;
    sqlite.init().await?;
    let (secs, calls) = write(&sqlite, &sets, chunk).await?;
    verify(&sqlite, &sets).await?;
    println!(
        "sqlite    write transactions {calls:>6} ({:.1} per 1,000 bars; half bars, half coverage)  {secs:>6.2} s  {:>8.0} bars/s",
        per_k(calls),
        bars as f64 / secs
    );

    let config = signal9_shared::aws::AwsTarget::local(aws_endpoint()).load().await;
    let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dynamo = DynamoStore::from_config(&config, prefix);
    dynamo.init().await?;
    let (secs, _) = write(&dynamo, &sets, chunk).await?;
    verify(&dynamo, &sets).await?;
    let c = dynamo.counters();
    let batches = c.batch_writes.load(Ordering::Relaxed);
    let singles = c.item_writes.load(Ordering::Relaxed);
    println!(
        "dynamodb  write requests {:>6} ({:.1} per 1,000 bars: BatchWriteItem {:.1}, single-item {:.1}; items {:.1} per 1,000 bars, unprocessed {})  {secs:>6.2} s  {:>8.0} bars/s",
        batches + singles,
        per_k(batches + singles),
        per_k(batches),
        per_k(singles),
        per_k(c.items_written.load(Ordering::Relaxed)),
        c.unprocessed.load(Ordering::Relaxed),
        bars as f64 / secs
    );
    dynamo.drop_tables().await?;

    for (name, dynamodb) in [("sqlite", false), ("dynamodb", true)] {
        let secs = pipeline(&symbols, workers, dynamodb).await?;
        println!(
            "pipeline  {name:<8} fetch-bars of {n} symbols, {workers} workers: {secs:>6.2} s  {:>8.0} bars/s",
            bars as f64 / secs
        );
    }
    Ok(())
}
