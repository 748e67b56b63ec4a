//! The Alpaca client against the simulator over HTTP: pagination, error
//! classes, rate-limit information and hostile bodies.
#![allow(clippy::unwrap_used)]

use alpaca_sim::bars::{bar_times, Frame, Market, Series};
use alpaca_sim::{spawn, Faults, SimConfig};
use chrono::{DateTime, Utc};
use signal9_alpaca::class::{Classify, ErrorClass};
use signal9_alpaca::validate;
use signal9_alpaca::BarRange;
use signal9_alpaca::{
    Adjustment, AlpacaError, AssetQuery, AssetStatus, BarsQuery, Credentials, Feed, Symbol, Timeframe, Unmetered,
};
use signal9_e2e::{client_with, sim_client, SimProcess, SIM_NOW};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

fn now() -> DateTime<Utc> {
    SIM_NOW.parse().unwrap()
}

fn config() -> SimConfig {
    SimConfig {
        assets: 1_000,
        now: Some(now()),
        limit: 0,
        ..SimConfig::default()
    }
}

fn query(symbols: &[&str], timeframe: Timeframe, start: &str, end: &str, limit: Option<u32>) -> BarsQuery {
    BarsQuery {
        symbols: symbols.iter().map(|s| Symbol::parse(s).unwrap()).collect(),
        limit,
        range: BarRange {
            timeframe,
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
            adjustment: Adjustment::raw(),
            feed: Some(Feed::Iex),
        },
    }
}

async fn put_faults(base: &str, faults: &Faults) {
    let r = reqwest::Client::new()
        .put(format!("{base}/_sim/faults"))
        .json(faults)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test]
async fn multi_symbol_bars_across_pages_arrive_exactly_once() {
    let sim = spawn(config(), 0).await.unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let symbols = ["AAPL", "BRK.B", "MSFT", "SPY"];
    let (start, end) = ("2026-11-16T00:00:00Z", "2026-11-21T00:00:00Z");
    let q = query(&symbols, "15Min".parse().unwrap(), start, end, Some(100));
    let fetch = client.fetch_bars(&q).await.unwrap();
    assert!(fetch.calls >= 3, "the query spans {} pages", fetch.calls);

    for symbol in symbols {
        let series = Series {
            seed: 42,
            symbol,
            market: Market::Stocks,
            frame: Frame::Min(15),
        };
        let expected = bar_times(series, start.parse().unwrap(), end.parse().unwrap(), now());
        let got: Vec<DateTime<Utc>> = fetch.bars[symbol].iter().map(|b| b.time).collect();
        assert_eq!(got, expected, "{symbol}: every bar once, in order");
        let unique: HashSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len());
        validate::bars(
            fetch.bars[symbol].clone(),
            q.range.start,
            q.range.end,
            validate::Duplicates::Reject,
        )
        .unwrap();
    }
    let total: usize = fetch.bars.values().map(Vec::len).sum();
    assert_eq!(
        fetch.calls as usize,
        total.div_ceil(100) + usize::from(total.is_multiple_of(100))
    );
}

#[tokio::test]
async fn single_symbol_endpoint_and_crypto_bars_paginate_too() {
    let sim = spawn(config(), 0).await.unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let q = query(
        &["AAPL"],
        Timeframe::HOUR,
        "2026-11-02T00:00:00Z",
        "2026-11-21T00:00:00Z",
        Some(50),
    );
    let fetch = client
        .fetch_symbol_bars(&Symbol::parse("AAPL").unwrap(), &q)
        .await
        .unwrap();
    let multi = client.fetch_bars(&q).await.unwrap();
    assert!(fetch.calls >= 3);
    assert_eq!(fetch.bars, multi.bars);

    let crypto = query(
        &["BTC/USD", "ETH/USD"],
        Timeframe::HOUR,
        "2026-11-20T00:00:00Z",
        "2026-11-21T23:00:00Z",
        Some(30),
    );
    let fetch = client.fetch_bars(&crypto).await.unwrap();
    assert_eq!(fetch.bars["BTC/USD"].len(), 48, "crypto trades around the clock");
    assert_eq!(fetch.bars["ETH/USD"].len(), 48);
}

#[tokio::test]
async fn unknown_asset_is_a_permanent_error() {
    let sim = spawn(config(), 0).await.unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let err = client.get_asset("ZZZZZZ").await.unwrap_err();
    assert!(
        matches!(
            err,
            AlpacaError::Rejected {
                status: 404,
                code: Some(40410000),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    let ok = client.get_asset("BTC/USD").await.unwrap();
    let asset = validate::asset(&ok.body).unwrap();
    assert_eq!(asset.symbol.as_str(), "BTC/USD");
}

#[tokio::test]
async fn listing_decodes_and_validates_every_asset() {
    let sim = spawn(config(), 0).await.unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let listing = client
        .list_assets(&AssetQuery {
            status: Some(AssetStatus::Active),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(listing.body.len() > 500);
    for raw in &listing.body {
        let asset = validate::asset(raw).unwrap();
        assert_eq!(asset.status, AssetStatus::Active);
    }
}

#[tokio::test]
async fn gateway_503_is_transient() {
    let sim = spawn(config(), 0).await.unwrap();
    put_faults(
        &sim.base_url(),
        &Faults {
            outage_secs: Some(30.0),
            ..Faults::default()
        },
    )
    .await;
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let err = client.get_asset("AAPL").await.unwrap_err();
    assert!(matches!(err, AlpacaError::Server { status: 503, .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(err.to_string().contains("non-JSON body"), "{err}");
}

#[tokio::test]
async fn a_429_carries_the_reset_time() {
    let sim = spawn(config(), 0).await.unwrap();
    put_faults(
        &sim.base_url(),
        &Faults {
            rate_limit_secs: Some(40.0),
            ..Faults::default()
        },
    )
    .await;
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let err = client.get_asset("AAPL").await.unwrap_err();
    let AlpacaError::RateLimited { reset: Some(reset), .. } = err else {
        panic!("{err:?}")
    };
    let wait = (reset - Utc::now()).num_seconds();
    assert!((35..=41).contains(&wait), "reset in {wait} s");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn the_real_window_429_carries_the_reset_time_and_headers_reach_the_caller() {
    let sim = spawn(
        SimConfig {
            limit: 2,
            window: Duration::from_secs(20),
            ..config()
        },
        0,
    )
    .await
    .unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let first = client.get_asset("AAPL").await.unwrap();
    assert_eq!((first.rate.limit, first.rate.remaining), (Some(2), Some(1)));
    client.get_asset("AAPL").await.unwrap();
    let err = client.get_asset("AAPL").await.unwrap_err();
    assert!(
        matches!(err, AlpacaError::RateLimited { reset: Some(_), .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_body_cut_short_is_transient_and_a_complete_wrong_one_permanent() {
    let sim = spawn(config(), 0).await.unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let bars = query(
        &["AAPL"],
        Timeframe::DAY,
        "2026-11-01T00:00:00Z",
        "2026-11-20T00:00:00Z",
        None,
    );
    // Cut in half: asking again may work.
    put_faults(
        &sim.base_url(),
        &Faults {
            malformed_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let err = client.fetch_bars(&bars).await.unwrap_err();
    assert!(matches!(err, AlpacaError::CutBody { .. }), "{err:?}");
    assert!(err.to_string().contains("response body cut short"), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    let err = client.list_assets(&AssetQuery::default()).await.unwrap_err();
    assert!(matches!(err, AlpacaError::CutBody { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);

    // Complete, but not the documented schema: the API is wrong, do not retry.
    put_faults(
        &sim.base_url(),
        &Faults {
            mismatch_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let err = client.fetch_bars(&bars).await.unwrap_err();
    assert!(matches!(err, AlpacaError::BadBody { .. }), "{err:?}");
    assert!(err.to_string().contains("malformed response body"), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    let err = client.list_assets(&AssetQuery::default()).await.unwrap_err();
    assert!(matches!(err, AlpacaError::BadBody { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn bad_credentials_are_permanent_and_never_echoed() {
    let sim = spawn(config(), 0).await.unwrap();
    let creds = Credentials::new("AKWRONGKEY123", "wrong-secret-456");
    let client = client_with(&sim.base_url(), Duration::from_secs(10), creds, Arc::new(Unmetered));
    let trading = client.get_asset("AAPL").await.unwrap_err();
    assert!(
        matches!(trading, AlpacaError::Rejected { status: 401, .. }),
        "{trading:?}"
    );
    let data = client
        .fetch_bars(&query(
            &["AAPL"],
            Timeframe::DAY,
            "2026-11-01T00:00:00Z",
            "2026-11-20T00:00:00Z",
            None,
        ))
        .await;
    let data = data.unwrap_err();
    assert!(matches!(data, AlpacaError::Rejected { status: 403, .. }), "{data:?}");
    for text in [
        format!("{trading} {trading:?}"),
        format!("{data} {data:?}"),
        format!("{client:?}"),
    ] {
        assert!(
            !text.contains("AKWRONGKEY123") && !text.contains("wrong-secret-456"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_slow_api_is_a_transient_timeout_and_a_dead_one_a_transient_connect_error() {
    let sim = spawn(
        SimConfig {
            faults: Faults {
                latency_ms: 2_000,
                ..Faults::default()
            },
            ..config()
        },
        0,
    )
    .await
    .unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_millis(300));
    let err = client.get_asset("AAPL").await.unwrap_err();
    assert!(matches!(err, AlpacaError::Timeout { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);

    let closed = {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let client = sim_client(&format!("http://{closed}"), Duration::from_secs(2));
    let err = client.get_asset("AAPL").await.unwrap_err();
    assert!(matches!(err, AlpacaError::Connect { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn the_simulator_binary_announces_its_port_and_serves() {
    let sim = SimProcess::start(&["--assets", "300", "--limit", "0"]).unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let listing = client.list_assets(&AssetQuery::default()).await.unwrap();
    assert!(!listing.body.is_empty());
}
