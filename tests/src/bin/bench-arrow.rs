//! Benchmark: a covered symbol-decade of minute bars read through
//! `signal9-api`, as JSON pages (10,000 bars each, the API's most) and as one
//! Arrow IPC stream, each decoded by the client (JSON with serde into the
//! project's bar type; Arrow with `arrow-ipc`, column by column).
//!
//! `bench-arrow [--years 10] [--runs 3]` stores the simulator's minute bars
//! of one symbol for 2016–2025 with their coverage (directly into the
//! SQLite store), starts `signal9-api`, reads the decade both ways `--runs`
//! times, checks both gave every bar, and prints bars/s for each (the best
//! and the median run) and the ratio. The simulator sees no call.

use alpaca_sim::bars::Frame;
use anyhow::{ensure, Context, Result};
use arrow_array::{Array, Float64Array};
use signal9_alpaca::{MultiBarsPage, Timeframe};
use signal9_e2e::{flag, iex_minute_page_query, sim_truth, Stack};
use signal9_shared::store::{BarStore, SqliteStore, Store};
use std::time::Instant;

const TOKEN: &str = "bench-arrow-token";
const SYMBOL: &str = "AAPL";

async fn json_pass(client: &reqwest::Client, base: &str, start: &str, end: &str) -> Result<(usize, f64)> {
    let started = Instant::now();
    let (mut bars, mut token, mut close_sum) = (0usize, None::<String>, 0.0);
    loop {
        let query = iex_minute_page_query(SYMBOL, (start, end), "asc", token.take());
        let response = client
            .get(format!("{base}/v2/stocks/bars"))
            .query(&query)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send()
            .await?;
        ensure!(response.status() == 200, "HTTP {}", response.status());
        let page: MultiBarsPage = serde_json::from_slice(&response.bytes().await?)?;
        for series in page.bars.unwrap_or_default().values() {
            bars += series.len();
            close_sum += series.iter().map(|b| b.close).sum::<f64>();
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    ensure!(close_sum > 0.0);
    Ok((bars, started.elapsed().as_secs_f64()))
}

async fn arrow_pass(client: &reqwest::Client, base: &str, start: &str, end: &str) -> Result<(usize, f64)> {
    let started = Instant::now();
    let response = client
        .get(format!("{base}/v2/stocks/bars"))
        .query(&[
            ("symbols", SYMBOL),
            ("timeframe", "1Min"),
            ("start", start),
            ("end", end),
            ("feed", "iex"),
        ])
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Accept", "application/vnd.apache.arrow.stream")
        .send()
        .await?;
    ensure!(response.status() == 200, "HTTP {}", response.status());
    let body = response.bytes().await?;
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
    let (mut bars, mut close_sum) = (0usize, 0.0);
    for batch in reader {
        let batch = batch?;
        bars += batch.num_rows();
        let close = batch
            .column_by_name("close")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .context("close")?;
        close_sum += close.iter().flatten().sum::<f64>();
        ensure!(close.null_count() == 0);
    }
    ensure!(close_sum > 0.0);
    Ok((bars, started.elapsed().as_secs_f64()))
}

fn best_and_median(mut secs: Vec<f64>) -> (f64, f64) {
    secs.sort_by(f64::total_cmp);
    (secs[0], secs[secs.len() / 2])
}

#[tokio::main]
async fn main() -> Result<()> {
    let years: i32 = flag("--years", 10);
    let runs: usize = flag("--runs", 3);
    let start = format!("{}-01-01T00:00:00Z", 2026 - years);
    let end = "2025-12-31T23:59:59Z".to_owned();
    let mut stack = Stack::start(&["--limit", "0"])?;
    let sets = sim_truth(&[SYMBOL.to_owned()], Frame::Min(1), Timeframe::MINUTE, &start, &end)?;
    let expected = sets[0].1.len();
    {
        let store = SqliteStore::open(stack.sqlite_path())?;
        store.init().await?;
        let keys: Vec<_> = sets.iter().map(|(k, _)| k.clone()).collect();
        store.upsert_bar_sets(&sets).await?;
        store.add_coverage_many(&keys, start.parse()?, end.parse()?).await?;
    }
    drop(sets);
    println!("{SYMBOL}, {years} years of 1Min bars: {expected} bars in SQLite");
    let api = stack.start_api(&[("read", TOKEN)], &[("SIGNAL9_API_CACHE_BYTES", "0")])?;
    let client = reqwest::Client::new();
    let base = api.base_url();
    let (mut json, mut arrow) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (bars, secs) = json_pass(&client, &base, &start, &end).await?;
        ensure!(bars == expected, "JSON gave {bars} bars of {expected}");
        json.push(secs);
        let (bars, secs) = arrow_pass(&client, &base, &start, &end).await?;
        ensure!(bars == expected, "Arrow gave {bars} bars of {expected}");
        arrow.push(secs);
    }
    let (json_best, json_median) = best_and_median(json);
    let (arrow_best, arrow_median) = best_and_median(arrow);
    let rate = |secs: f64| expected as f64 / secs / 1e6;
    println!(
        "JSON pages:   {:.2} s median ({:.2} s best): {:.2} M bars/s median, {:.2} best",
        json_median,
        json_best,
        rate(json_median),
        rate(json_best)
    );
    println!(
        "Arrow stream: {:.3} s median ({:.3} s best): {:.2} M bars/s median, {:.2} best",
        arrow_median,
        arrow_best,
        rate(arrow_median),
        rate(arrow_best)
    );
    println!("Arrow / JSON, medians: {:.1}×", json_median / arrow_median);
    let calls = stack.data_calls().await?;
    ensure!(calls == 0, "a covered range must cost no call ({calls})");
    stack.cleanup().await;
    Ok(())
}
