//! The official Python SDK (alpaca-py) against the simulator: every call
//! signal9 relies on must parse in the SDK, or the simulator is not
//! faithful. `scripts/test` installs alpaca-py (`ensure_alpaca_py`).
#![allow(clippy::unwrap_used)]

use alpaca_sim::{spawn, SimConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;

const START: &str = "2026-11-09T00:00:00+00:00";
const END: &str = "2026-11-21T00:00:00+00:00";

fn python() -> String {
    std::env::var("SIGNAL9_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/signal9-venv/bin/python")
    })
}

fn config(hostile_assets: bool) -> SimConfig {
    SimConfig {
        assets: 3_000,
        now: Some("2026-11-24T00:00:00Z".parse().unwrap()),
        limit: 0,
        hostile_assets,
        ..SimConfig::default()
    }
}

/// Runs the SDK script against `base`: its exit status, stdout and stderr.
fn run_sdk(base: &str) -> (bool, String, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/sdk_against_sim.py");
    let out = Command::new(python())
        .args([script, base, "sim-key", "sim-secret", START, END])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (scripts/test installs alpaca-py): {e}", python()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Minute bars per symbol as the simulator serves them, page by page.
async fn bars_by_symbol(base: &str, symbols: &str) -> (BTreeMap<String, usize>, usize) {
    let (mut counts, mut pages, mut token) = (BTreeMap::new(), 0, None::<String>);
    loop {
        let mut query = vec![
            ("symbols", symbols.to_owned()),
            ("timeframe", "1Min".to_owned()),
            ("start", START.to_owned()),
            ("end", END.to_owned()),
            ("limit", "10000".to_owned()),
        ];
        query.extend(token.take().map(|t| ("page_token", t)));
        let page: Value = reqwest::Client::new()
            .get(format!("{base}/v2/stocks/bars"))
            .query(&query)
            .header("APCA-API-KEY-ID", "sim-key")
            .header("APCA-API-SECRET-KEY", "sim-secret")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for (symbol, bars) in page["bars"].as_object().into_iter().flatten() {
            *counts.entry(symbol.clone()).or_default() += bars.as_array().map_or(0, Vec::len);
        }
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return (counts, pages),
        }
    }
}

#[tokio::test]
async fn alpaca_py_parses_every_answer_of_the_simulator_across_pages() {
    let sim = spawn(config(false), 0).await.unwrap();
    let base = sim.base_url();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || run_sdk(&base)
    })
    .await
    .unwrap();
    assert!(ok, "alpaca-py failed against the simulator:\n{stderr}");
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["aapl_symbol"], "AAPL");
    assert_eq!(seen["account_status"], "ACTIVE");
    assert!(seen["equities"].as_u64().unwrap() > 2_500, "{seen}");
    assert!(seen["crypto_assets"].as_u64().unwrap() > 0, "{seen}");
    assert!(seen["crypto_bars"].as_u64().unwrap() >= 11, "{seen}");
    let (truth, pages) = bars_by_symbol(&base, "AAPL,MSFT,BRK.B").await;
    assert!(pages >= 3, "the SDK must follow next_page_token: {pages} pages");
    for (symbol, count) in truth {
        assert_eq!(
            seen["stock_bars"][&symbol].as_u64(),
            Some(count as u64),
            "{symbol}: {seen}"
        );
    }
}

#[tokio::test]
async fn the_hostile_listing_is_opt_in_and_alpaca_py_rejects_it() {
    let sim = spawn(config(true), 0).await.unwrap();
    let base = sim.base_url();
    let (ok, _, stderr) = tokio::task::spawn_blocking(move || run_sdk(&base)).await.unwrap();
    assert!(!ok, "alpaca-py accepted assets without easy_to_borrow");
    assert!(stderr.contains("easy_to_borrow"), "{stderr}");
}
