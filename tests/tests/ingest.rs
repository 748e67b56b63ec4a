//! The units of ingestion work (`shared::ingest`) against the simulator over
//! HTTP and a real SQLite file: a slice synced twice, a universe change
//! reported as exactly those changes, bars fetched in coalesced calls and
//! then answered from the store, and and the error class of a failed step.
#![allow(clippy::unwrap_used)]

use alpaca_sim::bars::{bar_times, Frame, Market, Series};
use alpaca_sim::{spawn, SimConfig};
use chrono::{DateTime, Utc};
use signal9_e2e::{active_symbols, sim_client, SIM_NOW};
use signal9_shared::alpaca::{Adjustment, AssetClass, AssetQuery, AssetStatus, Feed, Symbol, Timeframe};
use signal9_shared::error::{Classify, ErrorClass};
use signal9_shared::ingest::{fetch_bars, BarsRequest, IngestError, SymbolOutcome};
use signal9_shared::store::{SqliteStore, Store};
use signal9_shared::sync::sync_slice;
use std::time::Duration;

const ASSETS: usize = 600;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn config() -> SimConfig {
    SimConfig {
        assets: ASSETS,
        now: Some(t(SIM_NOW)),
        limit: 0,
        ..SimConfig::default()
    }
}

fn temp_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ingest.db")).unwrap();
    (dir, store)
}

fn equities() -> AssetQuery {
    AssetQuery {
        class: Some(AssetClass::UsEquity),
        ..AssetQuery::default()
    }
}

#[tokio::test]
async fn a_slice_synced_twice_is_new_then_unchanged_and_changes_are_reported() {
    let sim = spawn(config(), 0).await.unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let (_dir, store) = temp_store();
    store.init().await.unwrap();

    let first = sync_slice(&client, &store, &equities(), None).await.unwrap();
    assert!(first.listed > 0);
    assert_eq!(
        first.new + first.rejected.len(),
        first.listed,
        "every asset new or rejected"
    );
    let events = store.pending_events(100_000).await.unwrap();
    assert_eq!(
        events.len(),
        first.new,
        "one asset.listed event per new asset, in the outbox"
    );
    assert_eq!((first.updated, first.unchanged), (0, 0));

    let second = sync_slice(&client, &store, &equities(), None).await.unwrap();
    assert_eq!((second.new, second.updated), (0, 0));
    assert_eq!(second.unchanged, first.new);

    // One asset goes inactive at the API: exactly that change is reported.
    let symbol = active_symbols(42, ASSETS, 1).remove(0);
    let changed = reqwest::Client::new()
        .post(format!("{}/_sim/assets", sim.base_url()))
        .json(&serde_json::json!({"set_active": [{"symbol": symbol, "active": false}]}))
        .send()
        .await
        .unwrap();
    assert!(changed.status().is_success());
    let third = sync_slice(&client, &store, &equities(), None).await.unwrap();
    assert_eq!(third.updated, 1, "{:?}", third.status_changes);
    assert_eq!(third.status_changes.len(), 1);
    let change = &third.status_changes[0];
    assert_eq!(change.symbol, symbol);
    assert_eq!(change.status, Some((AssetStatus::Active, AssetStatus::Inactive)));
}

#[tokio::test]
async fn bars_are_fetched_in_coalesced_calls_then_answered_from_the_store() {
    let sim = spawn(config(), 0).await.unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let (_dir, store) = temp_store();
    store.init().await.unwrap();
    let symbols: Vec<Symbol> = active_symbols(42, ASSETS, 5)
        .iter()
        .map(|s| Symbol::parse(s).unwrap())
        .collect();
    let request = BarsRequest {
        symbols: symbols.clone(),
        timeframe: Timeframe::DAY,
        start: t("2026-11-16T00:00:00Z"),
        end: t("2026-11-20T23:59:59Z"),
        adjustment: Adjustment::raw(),
        feed: Some(Feed::Iex),
    };
    let now = t(SIM_NOW);

    // Two symbols a call: three calls for five symbols.
    let first = fetch_bars(&client, &store, &request, 2, now).await.unwrap();
    assert_eq!(first.calls, 3);
    for symbol in &symbols {
        let truth = bar_times(
            Series {
                seed: 42,
                symbol: symbol.as_str(),
                market: Market::Stocks,
                frame: Frame::Day,
            },
            request.start,
            request.end,
            now,
        );
        assert_eq!(
            first.outcomes.get(symbol),
            Some(&SymbolOutcome::Stored { bars: truth.len() }),
            "{symbol}"
        );
        let stored = store
            .bars(&request.series(symbol), request.start, request.end)
            .await
            .unwrap();
        assert_eq!(stored.iter().map(|b| b.time).collect::<Vec<_>>(), truth, "{symbol}");
        assert!(store
            .covers(&request.series(symbol), request.start, request.end)
            .await
            .unwrap());
    }

    // The same closed range again: no call, every symbol from the store.
    let again = fetch_bars(&client, &store, &request, 2, now).await.unwrap();
    assert_eq!(again.calls, 0);
    assert!(again
        .outcomes
        .values()
        .all(|o| matches!(o, SymbolOutcome::Cached { bars } if *bars > 0)));

    // A range that is not closed yet is fetched again and not recorded as covered.
    let open = BarsRequest {
        end: now + chrono::Duration::days(1),
        ..request.clone()
    };
    let fresh = fetch_bars(&client, &store, &open, 10, now).await.unwrap();
    assert_eq!(fresh.calls, 1);
    assert!(!store
        .covers(&open.series(&symbols[0]), open.start, open.end)
        .await
        .unwrap());
}

#[tokio::test]
async fn a_failed_step_carries_the_class_of_its_cause() {
    let sim = spawn(config(), 0).await.unwrap();
    let (_dir, store) = temp_store();
    store.init().await.unwrap();
    // A refused key is a permanent failure of the whole step.
    let refused = signal9_e2e::client_with(
        &sim.base_url(),
        Duration::from_secs(10),
        signal9_shared::alpaca::Credentials::new("wrong", "key"),
        std::sync::Arc::new(signal9_shared::alpaca::Unmetered),
    );
    let error = sync_slice(&refused, &store, &equities(), None).await.expect_err("401");
    assert!(matches!(error, IngestError::Alpaca(_)), "{error}");
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(!error.defers());

    // Nobody listening: transient.
    drop(sim);
    let gone = sim_client("http://127.0.0.1:1", Duration::from_secs(2));
    let error = sync_slice(&gone, &store, &equities(), None)
        .await
        .expect_err("no answer");
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
}
