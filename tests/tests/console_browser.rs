//! The operator console in a real browser: headless Chromium from the OS
//! packages, driven through chromedriver by selenium (`scripts/test`
//! installs them: `ensure_browser`). A fetch dead-lettered by a lying API
//! is replayed from the page, once the API tells the truth again, and the
//! page shows its job completed (the worker's reply); the test checks the
//! bars are stored. The screenshot is kept in
//! `artifacts/` (or `$SIGNAL9_TEST_ARTIFACTS`).
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use signal9_alpaca::{Adjustment, Symbol, Timeframe};
use signal9_e2e::{eventually, fetch_day, queue_depth, Stack};
use signal9_shared::store::SeriesKey;

const OPERATOR: &str = "operator-browser-token-5d2e";

fn python() -> String {
    std::env::var("SIGNAL9_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/signal9-venv/bin/python")
    })
}

fn artifacts() -> PathBuf {
    let dir = std::env::var("SIGNAL9_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../artifacts")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn an_operator_logs_in_replays_a_dead_letter_from_the_page_and_its_job_completes() {
    let mut stack = Stack::start(&[]).unwrap();
    stack.start_worker(&[]).unwrap();
    let store = stack.store(false).await.unwrap();
    let symbols = stack.symbols_file(&["AAPL".to_owned()]);
    let day = "2026-11-20";

    // The API lies (bodies of the wrong shape): the job is dead-lettered.
    stack
        .set_faults(serde_json::json!({"mismatch_rate": 1.0}))
        .await
        .unwrap();
    let out = stack.producer(&fetch_day(&symbols, day, Some("60"))).await.unwrap();
    assert!(
        !out.status.success(),
        "the fetch must fail: {}",
        signal9_e2e::text(&out)
    );
    let dlq = format!("{}.dead-letter", stack.namespace);
    assert!(
        eventually(Duration::from_secs(30), || async {
            queue_depth(&dlq).await.unwrap_or(0) == 1
        })
        .await,
        "one dead letter"
    );
    stack.set_faults(serde_json::json!({})).await.unwrap();

    let api = stack.start_api(&[("operate", OPERATOR)], &[]).unwrap();
    let screenshot = artifacts().join("console-replay.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/console_browser.py");
    let out = Command::new(python())
        .args([
            script,
            &api.base_url(),
            OPERATOR,
            "AAPL",
            &screenshot.display().to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (scripts/test installs selenium): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser session failed: {stdout}\n{}\napi log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        api.logs()
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["dead_letters"], "0", "{report}");
    assert_eq!(
        report["outcome"], "succeeded: 1 bar",
        "the page showed the job's outcome: {report}"
    );

    // The replayed job completed: the day is stored and covered.
    let series = SeriesKey {
        symbol: Symbol::parse("AAPL").unwrap(),
        timeframe: Timeframe::DAY,
        adjustment: Adjustment::raw(),
        feed: None,
    };
    let (start, end) = (
        "2026-11-20T00:00:00Z".parse().unwrap(),
        "2026-11-20T23:59:59Z".parse().unwrap(),
    );
    let stored = eventually(Duration::from_secs(30), || async {
        store
            .covered_until(&series, start)
            .await
            .is_ok_and(|until| until.is_some())
    })
    .await;
    assert!(stored, "the replayed job stored the day\n{}", stack.worker_logs());
    assert_eq!(store.bars(&series, start, end).await.unwrap().len(), 1);

    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot: {} bytes",
        png.len()
    );
    stack.cleanup().await;
}
