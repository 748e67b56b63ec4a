//! Corporate actions end to end: adjusted bars are stored, a split takes
//! effect in the simulator, the daily job (the scheduler, after its sync
//! run) drops the adjusted series and announces it, and the next request
//! returns the newly adjusted prices. Raw bars stay as they were.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use std::time::Duration;

use signal9_alpaca::{Adjustment, Feed, Symbol, Timeframe};
use signal9_e2e::{text, Stack};
use signal9_shared::calendar::{ny_date, ny_day_range, previous_trading_day};
use signal9_shared::store::SeriesKey;

fn key(symbol: &str, adjustment: &str) -> SeriesKey {
    SeriesKey {
        symbol: Symbol::parse(symbol).unwrap(),
        timeframe: Timeframe::DAY,
        adjustment: adjustment.parse::<Adjustment>().unwrap(),
        feed: Some(Feed::Iex),
    }
}

async fn split_invalidates_adjusted_bars(dynamodb: bool) {
    let now = chrono::Utc::now();
    // The simulator runs on the wall clock here: the scheduler reads the
    // actions of the days up to today, and the split must be in effect.
    let now_flag = now.to_rfc3339();
    let mut stack = Stack::start(&["--limit", "0", "--assets", "300", "--now", &now_flag]).unwrap();
    let store = stack.store(dynamodb).await.unwrap();
    store.init().await.unwrap();
    stack.start_worker(&[]).unwrap();
    let symbol = signal9_e2e::active_symbols(42, 300, 1)[0].clone();

    // Twenty settled trading days, well before the split.
    let mut last = ny_date(now) - chrono::Duration::days(10);
    while !signal9_shared::calendar::is_trading_day(last) {
        last = previous_trading_day(last);
    }
    let mut first = last;
    for _ in 0..19 {
        first = previous_trading_day(first);
    }
    let (start, end) = (ny_day_range(first).0, ny_day_range(last).1);
    let (start_s, end_s) = (start.to_rfc3339(), end.to_rfc3339());
    let fetch = |adjustment: &'static str| {
        let (symbol, start_s, end_s, stack) = (&symbol, &start_s, &end_s, &stack);
        async move {
            let out = stack
                .producer(&[
                    "fetch-bars",
                    "--symbols",
                    symbol,
                    "--timeframe",
                    "1Day",
                    "--start",
                    start_s,
                    "--end",
                    end_s,
                    "--adjustment",
                    adjustment,
                    "--feed",
                    "iex",
                    "--wait",
                    "--wait-timeout-secs",
                    "60",
                ])
                .await
                .unwrap();
            assert!(out.status.success(), "fetch-bars {adjustment}: {}", text(&out));
        }
    };
    fetch("split").await;
    fetch("raw").await;
    let (split, raw) = (key(&symbol, "split"), key(&symbol, "raw"));
    assert!(store.covers(&split, start, end).await.unwrap());
    let before = store.bars(&split, start, end).await.unwrap();
    let raw_before = store.bars(&raw, start, end).await.unwrap();
    assert_eq!(before.len(), 20);
    assert_eq!(
        before, raw_before,
        "no action of this stock in between: split-adjusted equals raw"
    );

    // The events the change announces.
    let (_connection, mut tap) = signal9_e2e::event_tap(&stack, None).await.unwrap();

    // A 4:1 split with ex-date the previous trading day takes effect.
    let ex_date = previous_trading_day(ny_date(now));
    let added = reqwest::Client::new()
        .post(format!("{}/_sim/actions", stack.sim.base_url()))
        .json(&serde_json::json!({"forward_splits": [
            {"symbol": symbol, "new_rate": 4, "old_rate": 1, "ex_date": ex_date.to_string()}]}))
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success());

    // The daily job: the scheduler fires the sync, and after it completes
    // reads the week's actions and drops the adjusted series.
    let mut scheduler = stack
        .producer_spawn(&[
            "schedule",
            "--cron",
            "0 4 * * *",
            "--run-id-format",
            "actions",
            "--lease-secs",
            "2",
            "--backfill-timeframes",
            "",
        ])
        .unwrap();
    let dropped = signal9_e2e::eventually(Duration::from_secs(90), || async {
        !store.covers(&split, start, end).await.unwrap_or(true)
    })
    .await;
    // Give the check its moment to finish printing, then stop the scheduler.
    tokio::time::sleep(Duration::from_secs(1)).await;
    scheduler.start_kill().unwrap();
    let out = scheduler.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        dropped,
        "the split-adjusted series is still covered\n{said}\n{}",
        stack.worker_logs()
    );
    let line = format!("  {symbol} forward_split 4:1 ex {ex_date}: dropped {split}");
    assert!(said.contains(&line), "{line:?} missing from\n{said}");
    assert_eq!(
        store.count_bars(&split, start, end).await.unwrap(),
        0,
        "the stale bars are gone"
    );
    assert!(store.covers(&raw, start, end).await.unwrap(), "raw coverage stays");
    assert_eq!(store.bars(&raw, start, end).await.unwrap(), raw_before, "raw bars stay");

    // One bars.invalidated event, for that series and that action.
    let event = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(delivery)) = tap.next().await {
            let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
            if event["type"] == "bars.invalidated" && event["data"]["symbol"] == symbol.as_str() {
                return Some(event);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("a bars.invalidated event");
    assert_eq!(event["data"]["series"], split.to_string());
    assert_eq!(event["data"]["action"]["type"], "forward_split");
    assert_eq!(event["data"]["action"]["ex_date"], ex_date.to_string());

    // The next request fetches again and stores the newly adjusted prices:
    // a quarter of the old ones, four times the volume.
    fetch("split").await;
    let after = store.bars(&split, start, end).await.unwrap();
    assert_eq!(after.len(), before.len());
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.time, new.time);
        assert!((new.close - old.close / 4.0).abs() <= 0.011, "{old:?} -> {new:?}");
        assert!((new.volume - old.volume * 4.0).abs() <= 2.0, "{old:?} -> {new:?}");
    }
    assert!(store.covers(&split, start, end).await.unwrap());

    // Checking the same window again changes nothing: the action is remembered.
    let again = stack.producer(&["corporate-actions", "--json"]).await.unwrap();
    assert!(again.status.success(), "{}", text(&again));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(report["already_applied"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["applied"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["symbol"] != symbol.as_str()));
    assert_eq!(store.count_bars(&split, start, end).await.unwrap(), 20);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_drops_the_stored_adjusted_bars_and_the_next_request_gets_the_new_prices() {
    split_invalidates_adjusted_bars(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_a_split_drops_the_stored_adjusted_bars_and_the_next_request_gets_the_new_prices() {
    split_invalidates_adjusted_bars(true).await;
}
