//! A worker survives a RabbitMQ restart: it reconnects by itself and every
//! job published before the restart completes. Alone in its own test
//! binary, because it stops the broker that every test shares.
#![allow(clippy::unwrap_used)]

use signal9_alpaca::{Adjustment, Symbol, Timeframe};
use signal9_e2e::{active_symbols, eventually, rabbitmqctl, Stack};
use signal9_shared::store::BarStore;
use signal9_shared::store::{SeriesKey, SqliteStore};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reconnects_after_a_broker_restart_and_finishes_every_job() {
    let mut stack = Stack::start(&["--limit", "0", "--latency-ms", "200"]).unwrap();
    let symbols = active_symbols(42, 12_000, 60);
    stack
        .start_worker(&["--concurrency", "2", "--coalesce-max", "3", "--coalesce-wait-ms", "10"])
        .unwrap();
    let list = symbols.join(",");
    let out = stack
        .producer(&[
            "fetch-bars",
            "--symbols",
            &list,
            "--timeframe",
            "1Day",
            "--start",
            "2026-11-02",
            "--end",
            "2026-11-20",
        ])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(700)).await;
    rabbitmqctl("stop_app");
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl("start_app");

    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let (start, end) = (
        "2026-11-02T00:00:00Z".parse().unwrap(),
        "2026-11-20T23:59:59Z".parse().unwrap(),
    );
    let all_done = eventually(Duration::from_secs(90), || async {
        for symbol in &symbols {
            let key = SeriesKey {
                symbol: Symbol::parse(symbol).unwrap(),
                timeframe: Timeframe::DAY,
                adjustment: Adjustment::raw(),
                feed: None,
            };
            if !store.covers(&key, start, end).await.unwrap() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(all_done, "{}", stack.worker_logs());
    assert!(
        stack.worker_logs().contains("reconnecting"),
        "the worker saw the broker go"
    );
    assert!(
        stack.worker(0).try_wait().unwrap().is_none(),
        "the worker is still running"
    );
    stack.cleanup().await;
}
