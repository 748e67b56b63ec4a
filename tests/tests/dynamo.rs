//! The pipeline on the DynamoDB backend: real RabbitMQ and Redis, the
//! simulator as a process, worker processes writing to DynamoDB tables on
//! the local AWS-API server (moto), checked against the simulator's ground
//! truth.
#![allow(clippy::unwrap_used)]

use alpaca_sim::bars::{bar_json, bar_times, Frame, Market, Series};
use chrono::{DateTime, Utc};
use signal9_alpaca::{Adjustment, Feed, Symbol, Timeframe};
use signal9_e2e::{active_symbols, fetch_iex_days, queue_depth, text, Stack, SIM_NOW};
use signal9_shared::store::AssetStore;
use signal9_shared::store::BarStore;
use signal9_shared::store::RunStore;
use signal9_shared::store::SeriesKey;

const START: &str = "2026-11-16T00:00:00Z";
const END: &str = "2026-11-20T23:59:59Z";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Every bar of the stack's chunk table, counted by a full scan (the sum
/// of each chunk's `n`), and the chunks.
async fn bars_in_chunk_table(stack: &Stack) -> (usize, usize) {
    let config = signal9_shared::aws::AwsTarget::local(signal9_e2e::aws_endpoint())
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let mut pages = client
        .scan()
        .table_name(format!("{}-bar_chunks", stack.namespace))
        .into_paginator()
        .send();
    let (mut bars, mut chunks) = (0, 0);
    while let Some(page) = pages.next().await {
        for item in page.unwrap().items() {
            chunks += 1;
            bars += item["n"].as_n().unwrap().parse::<usize>().unwrap();
        }
    }
    (bars, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_bars_of_1000_symbols_on_dynamodb_stores_every_bar_once() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    let store = stack.use_dynamodb().await.unwrap();
    let init = stack.producer(&["init-store"]).await.unwrap();
    assert!(init.status.success(), "{}", text(&init));
    assert!(text(&init).contains(&format!("table {}-bar_chunks ready", stack.namespace)));

    let symbols = active_symbols(42, 12_000, 1000);
    assert_eq!(symbols.len(), 1000);
    for _ in 0..2 {
        stack.start_worker(&["--concurrency", "4"]).unwrap();
    }
    let file = stack.symbols_file(&symbols);
    let out = stack
        .producer(&fetch_iex_days(&file, START, END, Some("300")))
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    assert!(
        text(&out).contains("succeeded 1000, dead-lettered 0, no answer 0"),
        "{}",
        text(&out)
    );

    let mut expected_total = 0;
    for symbol in &symbols {
        let series = Series {
            seed: 42,
            symbol,
            market: Market::Stocks,
            frame: Frame::Day,
        };
        let times = bar_times(series, t(START), t(END), t(SIM_NOW));
        expected_total += times.len();
        let key = SeriesKey {
            symbol: Symbol::parse(symbol).unwrap(),
            timeframe: Timeframe::DAY,
            adjustment: Adjustment::raw(),
            feed: Some(Feed::Iex),
        };
        let stored = store.bars(&key, t(START), t(END)).await.unwrap();
        let stored_times: Vec<DateTime<Utc>> = stored.iter().map(|b| b.time).collect();
        assert_eq!(stored_times, times, "{symbol}: every bar of the simulator, once");
        for bar in &stored {
            let truth = bar_json(series, bar.time);
            assert_eq!(Some(bar.close), truth["c"].as_f64(), "{symbol} {}: the close", bar.time);
            assert_eq!(
                Some(bar.volume),
                truth["v"].as_f64(),
                "{symbol} {}: the volume",
                bar.time
            );
        }
    }
    assert!(
        expected_total >= 4000,
        "five trading days of 1,000 symbols: {expected_total}"
    );
    let (stored, chunks) = bars_in_chunk_table(&stack).await;
    assert_eq!(
        stored, expected_total,
        "nothing else in the chunk table: no bar twice under another key"
    );
    assert_eq!(chunks, 1000, "five days of one month: one chunk per series");
    assert_eq!(queue_depth(&stack.topology().dead_letter_queue()).await.unwrap(), 0);
    store.drop_tables().await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_run_on_dynamodb_records_assets_and_closes_the_run() {
    let mut stack = Stack::start(&["--assets", "400", "--limit", "0"]).unwrap();
    let store = stack.use_dynamodb().await.unwrap();
    stack.start_worker(&[]).unwrap();
    let out = stack
        .producer(&["sync", "--run-id", "dyn-1", "--wait", "--wait-timeout-secs", "120"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    let run = store.get_run("dyn-1").await.unwrap().expect("the run is stored");
    assert_eq!(run.status.as_str(), "completed", "{run:?}");
    assert_eq!(run.pages_done, run.pages_total);
    let latest = store.latest_run().await.unwrap().expect("a latest run");
    assert_eq!(latest.run_id, "dyn-1");
    let assets = store
        .list_assets(&signal9_shared::store::AssetFilter {
            include_delisted: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        assets.len() >= 300,
        "the universe's assets are stored: {}",
        assets.len()
    );
    store.drop_tables().await.unwrap();
    stack.cleanup().await;
}
