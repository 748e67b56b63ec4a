//! The simulator's own tests, over HTTP on an ephemeral port.
#![allow(clippy::unwrap_used)]

use alpaca_sim::bars::{bar_times, Frame, Market, Series};
use alpaca_sim::{spawn, Faults, SimConfig};
use chrono::{DateTime, Utc};
use serde_json::Value;
use signal9_alpaca::validate::{self, Duplicates};
use signal9_alpaca::{Bar, MultiBarsPage};
use std::time::{Duration, Instant};

fn now() -> DateTime<Utc> {
    "2026-11-24T00:00:00Z".parse().unwrap()
}

fn config() -> SimConfig {
    SimConfig {
        assets: 2_000,
        now: Some(now()),
        limit: 0,
        ..SimConfig::default()
    }
}

fn authed(url: String) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .get(url)
        .header("APCA-API-KEY-ID", "sim-key")
        .header("APCA-API-SECRET-KEY", "sim-secret")
}

async fn stats(base: &str) -> Value {
    reqwest::get(format!("{base}/_sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_never_admits_more_than_limit_under_concurrent_clients() {
    let sim = spawn(
        SimConfig {
            limit: 20,
            window: Duration::from_secs(1),
            ..config()
        },
        0,
    )
    .await
    .unwrap();
    let base = sim.base_url();
    let deadline = Instant::now() + Duration::from_millis(3_500);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                let (mut ok, mut limited) = (0u32, 0u32);
                while Instant::now() < deadline {
                    let r = authed(format!("{base}/v2/assets/AAPL")).send().await.unwrap();
                    match r.status().as_u16() {
                        200 => ok += 1,
                        429 => {
                            assert!(r.headers().contains_key("x-ratelimit-reset"));
                            let body: Value = r.json().await.unwrap();
                            assert_eq!(body["code"], 42910000);
                            limited += 1;
                        }
                        other => panic!("unexpected status {other}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for c in clients {
        let (o, l) = c.await.unwrap();
        ok += o;
        limited += l;
    }
    let s = stats(&base).await;
    assert_eq!(s["apis"]["trading"]["max_in_window"], 20, "{s}");
    assert_eq!(s["apis"]["trading"]["accepted"], ok);
    assert_eq!(s["apis"]["trading"]["rate_limited"], limited);
    assert!(limited > 0, "8 eager clients must hit the limit");
    // 3.5 s at 20 per rolling second admits at most 20 * 4 requests.
    assert!((20..=80).contains(&ok), "{ok} accepted");
}

#[tokio::test]
async fn rate_headers_count_down_and_429_carries_the_reset() {
    let sim = spawn(
        SimConfig {
            limit: 3,
            window: Duration::from_secs(30),
            ..config()
        },
        0,
    )
    .await
    .unwrap();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = authed(format!("{}/v2/assets/AAPL", sim.base_url()))
            .send()
            .await
            .unwrap();
        remaining.push(r.headers()["x-ratelimit-remaining"].to_str().unwrap().to_owned());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = authed(format!("{}/v2/assets/AAPL", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let reset: i64 = r.headers()["X-RateLimit-Reset"].to_str().unwrap().parse().unwrap();
    let wait = reset - Utc::now().timestamp();
    assert!((25..=31).contains(&wait), "reset in {wait} s");
    // Data has its own budget.
    let r = authed(format!("{}/v2/stocks/AAPL/bars?timeframe=1Day", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn every_listed_asset_passes_the_validator() {
    let sim = spawn(config(), 0).await.unwrap();
    let mut total = 0;
    for class in ["us_equity", "crypto"] {
        let list: Vec<Value> = authed(format!("{}/v2/assets?asset_class={class}", sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!list.is_empty());
        for raw in &list {
            validate::asset(raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
        }
        total += list.len();
    }
    assert_eq!(total, 2_000);
}

#[tokio::test]
async fn asset_filters_match_the_api() {
    let sim = spawn(config(), 0).await.unwrap();
    let get = |q: &str| authed(format!("{}/v2/assets{q}", sim.base_url())).send();
    let active: Vec<Value> = get("?status=active").await.unwrap().json().await.unwrap();
    assert!(active
        .iter()
        .all(|a| a["status"] == "active" && a["class"] == "us_equity"));
    let otc: Vec<Value> = get("?exchange=OTC").await.unwrap().json().await.unwrap();
    assert!(!otc.is_empty() && otc.iter().all(|a| a["exchange"] == "OTC"));
    let opts: Vec<Value> = get("?attributes=has_options").await.unwrap().json().await.unwrap();
    assert!(opts
        .iter()
        .all(|a| a["attributes"].as_array().unwrap().iter().any(|x| x == "has_options")));
    let bad = get("?status=halted").await.unwrap();
    assert_eq!(bad.status(), 422);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], 42210000);
    let missing = authed(format!("{}/v2/assets/NOPE.X", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"code": 40410000, "message": "asset not found for NOPE.X"})
    );
}

#[tokio::test]
async fn credentials_are_checked_like_the_real_api() {
    let sim = spawn(config(), 0).await.unwrap();
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/v2/assets", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 40110000);
    let r = client
        .get(format!("{}/v2/stocks/bars?symbols=AAPL&timeframe=1Day", sim.base_url()))
        .header("APCA-API-KEY-ID", "sim-key")
        .header("APCA-API-SECRET-KEY", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a bad key on market data is 403");
    let r = client
        .get(format!("{}/v2/stocks/bars?symbols=AAPL&timeframe=1Day", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn all_pages(base: &str, query: &str) -> (Vec<(String, Bar)>, u32) {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut calls = 0;
    loop {
        let mut url = format!("{base}/v2/stocks/bars?{query}");
        if let Some(t) = &token {
            url.push_str(&format!("&page_token={t}"));
        }
        let page: MultiBarsPage = authed(url).send().await.unwrap().json().await.unwrap();
        calls += 1;
        let bars = page.bars.unwrap_or_default();
        let empty = bars.values().all(Vec::is_empty);
        for (symbol, list) in bars {
            out.extend(list.into_iter().map(|b| (symbol.clone(), b)));
        }
        match page.next_page_token {
            Some(t) if !empty => token = Some(t),
            _ => return (out, calls),
        }
    }
}

#[tokio::test]
async fn pages_count_the_limit_across_symbols_in_symbol_then_time_order() {
    let sim = spawn(config(), 0).await.unwrap();
    let query = "symbols=MSFT,AAPL,SPY&timeframe=1Day&start=2026-09-01T00:00:00Z&end=2026-11-20T23:59:59Z&limit=50";
    let (bars, calls) = all_pages(&sim.base_url(), query).await;
    let (start, end) = (
        "2026-09-01T00:00:00Z".parse().unwrap(),
        "2026-11-20T23:59:59Z".parse().unwrap(),
    );
    let per_symbol = bar_times(
        Series {
            seed: 42,
            symbol: "AAPL",
            market: Market::Stocks,
            frame: Frame::Day,
        },
        start,
        end,
        now(),
    )
    .len();
    assert_eq!(bars.len(), 3 * per_symbol);
    assert_eq!(
        calls as usize,
        (3 * per_symbol).div_ceil(50) + usize::from((3 * per_symbol).is_multiple_of(50))
    );
    let order: Vec<(String, DateTime<Utc>)> = bars.iter().map(|(s, b)| (s.clone(), b.time)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "ordered by symbol, then time");
}

#[tokio::test]
async fn bars_of_every_timeframe_satisfy_the_validator() {
    let sim = spawn(config(), 0).await.unwrap();
    let cases = [
        ("1Min", "2026-11-18T00:00:00Z", "2026-11-19T00:00:00Z"),
        ("5Min", "2026-11-16T00:00:00Z", "2026-11-20T00:00:00Z"),
        ("1Hour", "2026-10-01T00:00:00Z", "2026-11-20T00:00:00Z"),
        ("1Day", "2024-01-01T00:00:00Z", "2026-11-20T00:00:00Z"),
        ("1Week", "2020-01-01T00:00:00Z", "2026-11-20T00:00:00Z"),
        ("3Month", "2015-01-01T00:00:00Z", "2026-11-20T00:00:00Z"),
    ];
    for (tf, start, end) in cases {
        let query = format!("symbols=AAPL,BRK.B,TSLA&timeframe={tf}&start={start}&end={end}&limit=10000");
        let (bars, _) = all_pages(&sim.base_url(), &query).await;
        assert!(!bars.is_empty(), "{tf}");
        assert!(
            bars.iter().any(|(_, b)| b.volume == 0.0) || bars.len() < 200,
            "{tf}: zero-volume bars occur"
        );
        for symbol in ["AAPL", "BRK.B", "TSLA"] {
            let list: Vec<Bar> = bars.iter().filter(|(s, _)| s == symbol).map(|(_, b)| *b).collect();
            validate::bars(list, start.parse().unwrap(), end.parse().unwrap(), Duplicates::Reject)
                .unwrap_or_else(|e| panic!("{tf} {symbol}: {e}"));
        }
    }
}

#[tokio::test]
async fn faults_are_injected_from_the_control_endpoint() {
    let sim = spawn(config(), 0).await.unwrap();
    let put = |faults: Faults| {
        reqwest::Client::new()
            .put(format!("{}/_sim/faults", sim.base_url()))
            .json(&faults)
            .send()
    };
    put(Faults {
        error_rate: 1.0,
        ..Faults::default()
    })
    .await
    .unwrap();
    let r = authed(format!("{}/v2/assets/AAPL", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());

    put(Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    })
    .await
    .unwrap();
    let text = authed(format!("{}/v2/assets/AAPL", sim.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "body should be cut: {text}"
    );

    put(Faults {
        truncate_assets: Some(0.0),
        ..Faults::default()
    })
    .await
    .unwrap();
    let list: Vec<Value> = authed(format!("{}/v2/assets", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.is_empty());

    put(Faults {
        outage_secs: Some(30.0),
        ..Faults::default()
    })
    .await
    .unwrap();
    let r = authed(format!("{}/v2/stocks/bars?symbols=AAPL&timeframe=1Day", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        r.text().await.unwrap().contains("<html>"),
        "an outage is a gateway page"
    );

    put(Faults::default()).await.unwrap();
    let r = authed(format!("{}/v2/assets/AAPL", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bad = reqwest::Client::new()
        .put(format!("{}/_sim/faults", sim.base_url()))
        .body("{\"nope\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn bad_bars_parameters_get_400_with_a_message() {
    let sim = spawn(config(), 0).await.unwrap();
    for query in [
        "symbols=AAPL&timeframe=2Day",
        "symbols=AAPL&timeframe=1Day&limit=0",
        "symbols=AAPL&timeframe=1Day&limit=10001",
        "symbols=../x&timeframe=1Day",
        "symbols=AAPL&timeframe=1Day&start=2026-11-20&end=2026-11-10",
        "symbols=AAPL&timeframe=1Day&feed=nyse",
        "symbols=AAPL&timeframe=1Day&adjustment=none",
        "symbols=AAPL&timeframe=1Day&page_token=%%%",
        "timeframe=1Day",
    ] {
        let r = authed(format!("{}/v2/stocks/bars?{query}", sim.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{query}");
    }
}

/// Every action of a query, read by the client crate (which follows the pages).
async fn all_actions(base: &str, query: signal9_alpaca::ActionsQuery) -> (Vec<signal9_alpaca::CorporateAction>, u32) {
    let config = signal9_alpaca::ClientConfig {
        trading_url: base.to_owned(),
        data_url: base.to_owned(),
        timeout: Duration::from_secs(30),
    };
    let client = signal9_alpaca::AlpacaClient::new(
        &config,
        signal9_alpaca::Credentials::new("sim-key", "sim-secret"),
        std::sync::Arc::new(signal9_alpaca::Unmetered),
    )
    .unwrap();
    let fetch = client.corporate_actions(&query).await.unwrap();
    assert!(fetch.rejected.is_empty(), "{:?}", fetch.rejected);
    (fetch.actions, fetch.calls)
}

async fn daily_close(base: &str, symbol: &str, adjustment: &str, day: &str) -> (f64, u64) {
    let url = format!(
        "{base}/v2/stocks/{symbol}/bars?timeframe=1Day&start={day}T00:00:00Z&end={day}T23:59:59Z&adjustment={adjustment}"
    );
    let page: Value = authed(url).send().await.unwrap().json().await.unwrap();
    let bar = &page["bars"][0];
    (bar["c"].as_f64().unwrap(), bar["v"].as_u64().unwrap())
}

#[tokio::test]
async fn corporate_actions_page_through_the_market_and_a_split_moves_adjusted_history_only() {
    let sim = spawn(config(), 0).await.unwrap();
    let base = sim.base_url();
    let day = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
    let half_year = signal9_alpaca::ActionsQuery {
        limit: 100,
        ..signal9_alpaca::ActionsQuery::market(day("2026-01-01"), day("2026-06-30"))
    };
    let (actions, pages) = all_actions(&base, half_year).await;
    assert!(pages > 2, "a half-year of the market spans pages: {pages}");
    let mut ids: Vec<&str> = actions.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), actions.len(), "no action twice across pages");
    assert!(actions
        .iter()
        .all(|a| a.ex_date.to_string().as_str() >= "2026-01-01" && a.ex_date.to_string().as_str() <= "2026-06-30"));

    // A 4:1 split of a stock with no action of its own near the date.
    let symbol = "ZZSPLIT";
    let added: Value = reqwest::Client::new()
        .post(format!("{base}/_sim/assets"))
        .json(&serde_json::json!({"add": [{"symbol": symbol, "exchange": "NYSE"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(added["added"].as_array().unwrap().len(), 1);
    let before_raw = daily_close(&base, symbol, "raw", "2026-11-19").await;
    let after_raw = daily_close(&base, symbol, "raw", "2026-11-20").await;
    let before_split = daily_close(&base, symbol, "split", "2026-11-19").await;
    let split = |new_rate: u32| {
        reqwest::Client::new()
            .post(format!("{base}/_sim/actions"))
            .json(&serde_json::json!({"forward_splits": [
                {"symbol": symbol, "new_rate": new_rate, "old_rate": 1, "ex_date": "2026-11-20"}]}))
            .send()
    };
    assert!(split(4).await.unwrap().status().is_success());
    let one = signal9_alpaca::ActionsQuery {
        symbols: vec![signal9_alpaca::Symbol::parse(symbol).unwrap()],
        ..signal9_alpaca::ActionsQuery::market(day("2026-11-20"), day("2026-11-20"))
    };
    let (listed, _) = all_actions(&base, one).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].terms, "4:1");
    // Raw history before the ex-date stands; raw prices from it on are split.
    assert_eq!(daily_close(&base, symbol, "raw", "2026-11-19").await, before_raw);
    let split_day = daily_close(&base, symbol, "raw", "2026-11-20").await;
    assert!(
        (split_day.0 - after_raw.0 / 4.0).abs() < 0.011,
        "{split_day:?} vs {after_raw:?}"
    );
    // Split-adjusted history before the ex-date changed: a quarter of the price, four times the volume.
    let adjusted = daily_close(&base, symbol, "split", "2026-11-19").await;
    assert!(
        (adjusted.0 - before_split.0 / 4.0).abs() < 0.011,
        "{adjusted:?} vs {before_split:?}"
    );
    assert!(
        adjusted.1.abs_diff(before_split.1 * 4) <= 2,
        "{adjusted:?} vs {before_split:?}"
    );
    // Bad actions are refused.
    assert_eq!(split(0).await.unwrap().status(), 400);
}
