//! Benchmark: the bytes and the time of one chunk's encoding, by codec, on
//! the simulator's bars: a day of 1-minute bars of a stock (one chunk), a
//! day of 1-minute crypto bars (1,440, the largest chunk), and a month of
//! daily bars. Compared: the bars as the API's JSON (what a naive layout
//! would store), the columnar body alone, and the body under zstd at
//! levels 1, 3, 9 and 19. Each figure is the median of 21 runs.
//!
//! `bench-chunk-codec`

use alpaca_sim::bars::{bar_json, bar_times, Frame, Market, Series};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use signal9_alpaca::Bar;
use signal9_e2e::{active_symbols, SIM_NOW};
use signal9_shared::store::chunk::{decode, encode_with, Codec};
use std::time::Instant;

fn bars(symbol: &str, market: Market, frame: Frame, start: &str, end: &str) -> Result<Vec<Bar>> {
    let series = Series {
        seed: 42,
        symbol,
        market,
        frame,
    };
    let t = |s: &str| s.parse::<DateTime<Utc>>().context("time");
    bar_times(series, t(start)?, t(end)?, t(SIM_NOW)?)
        .into_iter()
        .map(|time| serde_json::from_value(bar_json(series, time)).context("bar"))
        .collect()
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() -> Result<()> {
    let stock = active_symbols(42, 13_000, 1).remove(0);
    let cases = [
        (
            format!("a day of 1Min bars, {stock}"),
            bars(
                &stock,
                Market::Stocks,
                Frame::Min(1),
                "2026-11-20T00:00:00Z",
                "2026-11-20T23:59:59Z",
            )?,
        ),
        (
            "a day of 1Min bars, BTC/USD".to_owned(),
            bars(
                "BTC/USD",
                Market::Crypto,
                Frame::Min(1),
                "2026-11-20T00:00:00Z",
                "2026-11-20T23:59:59Z",
            )?,
        ),
        (
            format!("a month of 1Day bars, {stock}"),
            bars(
                &stock,
                Market::Stocks,
                Frame::Day,
                "2026-10-01T00:00:00Z",
                "2026-10-31T23:59:59Z",
            )?,
        ),
    ];
    println!("| chunk | bars | encoding | bytes | bytes per bar | encode µs | decode µs |");
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
    for (name, bars) in &cases {
        let json = serde_json::to_vec(bars)?;
        println!(
            "| {name} | {} | the API's JSON | {} | {:.1} | | |",
            bars.len(),
            json.len(),
            json.len() as f64 / bars.len() as f64
        );
        for (label, codec) in [
            ("columnar, no compression", Codec::None),
            ("columnar + zstd 1", Codec::Zstd(1)),
            ("columnar + zstd 3 (chosen)", Codec::Zstd(3)),
            ("columnar + zstd 9", Codec::Zstd(9)),
            ("columnar + zstd 19", Codec::Zstd(19)),
        ] {
            let mut encode_us = Vec::new();
            let mut decode_us = Vec::new();
            let mut size = 0;
            for _ in 0..21 {
                let started = Instant::now();
                let data = encode_with(bars, codec);
                encode_us.push(started.elapsed().as_secs_f64() * 1e6);
                let started = Instant::now();
                let back = decode(&data).map_err(anyhow::Error::msg)?;
                decode_us.push(started.elapsed().as_secs_f64() * 1e6);
                anyhow::ensure!(back == *bars, "{name}: {label} does not round-trip");
                size = data.len();
            }
            println!(
                "| {name} | {} | {label} | {size} | {:.1} | {:.0} | {:.0} |",
                bars.len(),
                size as f64 / bars.len() as f64,
                median(encode_us),
                median(decode_us)
            );
        }
    }
    Ok(())
}
