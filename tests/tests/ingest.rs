//! The units of ingestion work (`shared::ingest`) against the simulator over
//! HTTP and a real SQLite file: a slice synced twice, a universe change
//! reported as exactly those changes, bars fetched in coalesced calls and
//! then answered from the store, and and the error class of a failed step.
#![allow(clippy::unwrap_used)]

use alpaca_sim::bars::{bar_times, Frame, Market, Series};
use alpaca_sim::{spawn, SimConfig};
use chrono::{DateTime, Utc};
use signal9_alpaca::class::{Classify, ErrorClass};
use signal9_alpaca::BarRange;
use signal9_alpaca::{Adjustment, AssetClass, AssetQuery, AssetStatus, Feed, Symbol, Timeframe};
use signal9_e2e::{active_symbols, sim_client, SIM_NOW};
use signal9_shared::breaker::BreakerPolicy;
use signal9_shared::gate::ApiGate;
use signal9_shared::ingest::{fetch_bars, BarsRequest, IngestError, SymbolOutcome};
use signal9_shared::limiter::{redis_pool, BudgetSize};
use signal9_shared::plan::{Packing, PAGE_BARS};
use signal9_shared::store::BarStore;
use signal9_shared::store::OutboxStore;
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

fn two_a_call() -> Packing {
    Packing {
        max_symbols: 2,
        ..Packing::default()
    }
}

/// A client behind the real budget in Redis (a namespace of its own):
/// `limit` calls per ten minutes, a wait of one second.
fn metered(base: &str, limit: u32) -> signal9_alpaca::AlpacaClient {
    let size = BudgetSize {
        limit,
        window: Duration::from_secs(600),
        margin: Duration::ZERO,
    };
    let guard = ApiGate::new(
        redis_pool("redis://127.0.0.1:6379").unwrap(),
        &signal9_shared::testing::namespace(),
        size,
        size,
        BreakerPolicy {
            failures: 5,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
        },
        Duration::from_secs(1),
    );
    signal9_e2e::client_with(
        base,
        Duration::from_secs(10),
        signal9_alpaca::Credentials::new("sim-key", "sim-secret"),
        std::sync::Arc::new(guard),
    )
}

/// The simulator's bar times of one series.
fn truth(symbol: &Symbol, request: &BarsRequest, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    bar_times(
        Series {
            seed: 42,
            symbol: symbol.as_str(),
            market: if symbol.is_crypto_pair() {
                Market::Crypto
            } else {
                Market::Stocks
            },
            frame: Frame::Min(1),
        },
        request.range.start,
        request.range.end,
        now,
    )
}

/// Minute bars of four symbols over two weeks: about four pages.
fn minute_request(symbols: &[Symbol]) -> BarsRequest {
    BarsRequest {
        symbols: symbols.to_vec(),
        range: BarRange {
            timeframe: Timeframe::MINUTE,
            start: t("2026-11-02T00:00:00Z"),
            end: t("2026-11-13T23:59:00Z"),
            adjustment: Adjustment::raw(),
            feed: Some(Feed::Iex),
        },
    }
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
        range: BarRange {
            timeframe: Timeframe::DAY,
            start: t("2026-11-16T00:00:00Z"),
            end: t("2026-11-20T23:59:59Z"),
            adjustment: Adjustment::raw(),
            feed: Some(Feed::Iex),
        },
    };
    let now = t(SIM_NOW);

    // Two symbols a call: three calls for five symbols.
    let first = fetch_bars(&client, &store, &request, two_a_call(), now).await.unwrap();
    assert_eq!(first.calls, 3);
    for symbol in &symbols {
        let truth = bar_times(
            Series {
                seed: 42,
                symbol: symbol.as_str(),
                market: Market::Stocks,
                frame: Frame::Day,
            },
            request.range.start,
            request.range.end,
            now,
        );
        assert_eq!(
            first.outcomes.get(symbol),
            Some(&SymbolOutcome::Stored { bars: truth.len() }),
            "{symbol}"
        );
        let stored = store
            .bars(&request.series(symbol), request.range.start, request.range.end)
            .await
            .unwrap();
        assert_eq!(stored.iter().map(|b| b.time).collect::<Vec<_>>(), truth, "{symbol}");
        assert!(store
            .covers(&request.series(symbol), request.range.start, request.range.end)
            .await
            .unwrap());
    }

    // The same closed range again: no call, every symbol from the store.
    let again = fetch_bars(&client, &store, &request, two_a_call(), now).await.unwrap();
    assert_eq!(again.calls, 0);
    assert!(again
        .outcomes
        .values()
        .all(|o| matches!(o, SymbolOutcome::Cached { bars } if *bars > 0)));

    // A range that is not closed yet is fetched again and not recorded as covered.
    let open = BarsRequest {
        range: BarRange {
            end: now + chrono::Duration::days(1),
            ..request.range.clone()
        },
        ..request.clone()
    };
    let fresh = fetch_bars(&client, &store, &open, Packing::default(), now)
        .await
        .unwrap();
    assert_eq!(fresh.calls, 1);
    assert!(!store
        .covers(&open.series(&symbols[0]), open.range.start, open.range.end)
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
        signal9_alpaca::Credentials::new("wrong", "key"),
        std::sync::Arc::new(signal9_alpaca::Unmetered),
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

#[tokio::test]
async fn a_fetch_stopped_by_the_budget_goes_on_where_it_stopped_and_pays_for_no_page_twice() {
    let (_dir, store) = temp_store();
    stop_and_resume(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_stopped_by_the_budget_goes_on_where_it_stopped_on_dynamodb_too() {
    let config = signal9_shared::aws::AwsTarget::local(signal9_e2e::aws_endpoint())
        .load()
        .await;
    let store = signal9_shared::store::DynamoStore::from_config(&config, signal9_shared::testing::namespace());
    stop_and_resume(&store).await;
    store.drop_tables().await.unwrap();
}

/// A fetch of about four pages stopped by a two-call budget, then asked
/// again: it goes on from the third page, stores every bar once, records
/// coverage only for whole series and leaves no checkpoint behind.
async fn stop_and_resume(store: &dyn Store) {
    let sim = spawn(config(), 0).await.unwrap();
    store.init().await.unwrap();
    let now = t(SIM_NOW);
    let symbols: Vec<Symbol> = active_symbols(42, ASSETS, 4)
        .iter()
        .map(|s| Symbol::parse(s).unwrap())
        .collect();
    let request = minute_request(&symbols);
    let total: usize = symbols.iter().map(|s| truth(s, &request, now).len()).sum();
    let pages = (total as u64).div_ceil(PAGE_BARS) as u32;
    assert!(pages >= 3, "the request needs several pages ({total} bars)");

    // A budget of two calls: the fetch stops at the third page, deferred.
    let error = fetch_bars(&metered(&sim.base_url(), 2), store, &request, Packing::default(), now)
        .await
        .expect_err("the budget stops it");
    assert!(error.defers(), "{error}");
    // Two whole pages are stored, not held in memory and lost.
    let mut stored = 0;
    for symbol in &symbols {
        let series = request.series(symbol);
        let n = store
            .count_bars(&series, request.range.start, request.range.end)
            .await
            .unwrap();
        let all = truth(symbol, &request, now).len();
        stored += n;
        // Only a series stored in full is recorded as covered.
        assert_eq!(
            store
                .covers(&series, request.range.start, request.range.end)
                .await
                .unwrap(),
            n == all,
            "{symbol}: {n} of {all}"
        );
    }
    assert_eq!(stored as u64, 2 * PAGE_BARS);

    // Asked again (a redelivery): it goes on from the third page.
    let resumed = fetch_bars(
        &metered(&sim.base_url(), 1000),
        store,
        &request,
        Packing::default(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(resumed.calls + 2, pages, "every page paid for once");
    assert!(resumed.resumed > 0);
    for symbol in &symbols {
        let series = request.series(symbol);
        let times: Vec<_> = store
            .bars(&series, request.range.start, request.range.end)
            .await
            .unwrap()
            .iter()
            .map(|b| b.time)
            .collect();
        assert_eq!(times, truth(symbol, &request, now), "{symbol}");
        assert!(store
            .covers(&series, request.range.start, request.range.end)
            .await
            .unwrap());
        // A series finished before the stop is now answered from the store.
        assert!(
            matches!(resumed.outcomes[symbol], SymbolOutcome::Stored { bars } | SymbolOutcome::Cached { bars } if bars == times.len()),
            "{symbol}: {:?}",
            resumed.outcomes[symbol]
        );
    }
    let keys: Vec<String> = symbols.iter().map(|s| request.checkpoint_key(s)).collect();
    assert!(
        store.checkpoints(&keys).await.unwrap().is_empty(),
        "checkpoints are removed when done"
    );
}

#[tokio::test]
async fn a_stopped_series_regrouped_with_others_goes_on_from_its_last_bar() {
    let sim = spawn(config(), 0).await.unwrap();
    let (_dir, store) = temp_store();
    store.init().await.unwrap();
    let now = t(SIM_NOW);
    let symbols: Vec<Symbol> = active_symbols(42, ASSETS, 6)
        .iter()
        .map(|s| Symbol::parse(s).unwrap())
        .collect();
    let first = minute_request(&symbols[..4]);
    fetch_bars(&metered(&sim.base_url(), 2), &store, &first, Packing::default(), now)
        .await
        .expect_err("the budget stops it");
    // The jobs come back in other company: the first symbol is gone, two are new.
    let regrouped = minute_request(&symbols[1..]);
    let mut left = 0u64;
    let mut requests = 0u64;
    for symbol in &symbols[1..] {
        let held = store
            .count_bars(&regrouped.series(symbol), regrouped.range.start, regrouped.range.end)
            .await
            .unwrap();
        let all = truth(symbol, &regrouped, now).len();
        left += (all - held) as u64;
        requests += u64::from(held > 0 && held < all);
    }
    let report = fetch_bars(
        &metered(&sim.base_url(), 1000),
        &store,
        &regrouped,
        Packing::default(),
        now,
    )
    .await
    .unwrap();
    // At most one short page more than the bars left need: the part-done
    // series goes on alone, from its last bar.
    assert!(
        u64::from(report.calls) <= left.div_ceil(PAGE_BARS) + requests,
        "{} calls for {left} bars left",
        report.calls
    );
    for symbol in &symbols[1..] {
        let times: Vec<_> = store
            .bars(&regrouped.series(symbol), regrouped.range.start, regrouped.range.end)
            .await
            .unwrap()
            .iter()
            .map(|b| b.time)
            .collect();
        assert_eq!(times, truth(symbol, &regrouped, now), "{symbol}");
    }
}

#[tokio::test]
async fn a_bar_repeated_across_a_page_boundary_is_rejected_for_stocks_and_last_wins_for_crypto() {
    let sim = spawn(config(), 0).await.unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let (_dir, store) = temp_store();
    store.init().await.unwrap();
    let now = t(SIM_NOW);
    let faults = reqwest::Client::new()
        .put(format!("{}/_sim/faults", sim.base_url()))
        .json(&serde_json::json!({"repeat_page_boundary": true}))
        .send()
        .await
        .unwrap();
    assert!(faults.status().is_success());

    // One stock over more than a page: the repeated bar is caught.
    let stock = Symbol::parse(&active_symbols(42, ASSETS, 1)[0]).unwrap();
    let minute = minute_request(std::slice::from_ref(&stock));
    let request = BarsRequest {
        range: BarRange {
            start: t("2026-10-01T00:00:00Z"),
            ..minute.range.clone()
        },
        ..minute
    };
    assert!(truth(&stock, &request, now).len() as u64 > PAGE_BARS);
    let report = fetch_bars(&client, &store, &request, Packing::default(), now)
        .await
        .unwrap();
    match &report.outcomes[&stock] {
        SymbolOutcome::Rejected(rejection) => {
            assert!(rejection.reason.contains("previous page"), "{rejection}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let series = request.series(&stock);
    assert!(!store
        .covers(&series, request.range.start, request.range.end)
        .await
        .unwrap());
    // What the first page held was valid and stays; nothing after the bad page is stored.
    assert_eq!(
        store
            .count_bars(&series, request.range.start, request.range.end)
            .await
            .unwrap() as u64,
        PAGE_BARS
    );

    // A crypto pair: the repeat is a duplicate, the later copy wins, none is lost.
    let pair = Symbol::parse("BTC/USD").unwrap();
    let crypto = minute_request(std::slice::from_ref(&pair));
    let report = fetch_bars(&client, &store, &crypto, Packing::default(), now)
        .await
        .unwrap();
    let times: Vec<_> = store
        .bars(&crypto.series(&pair), crypto.range.start, crypto.range.end)
        .await
        .unwrap()
        .iter()
        .map(|b| b.time)
        .collect();
    assert_eq!(times, truth(&pair, &crypto, now));
    assert!(matches!(report.outcomes[&pair], SymbolOutcome::Stored { .. }));
}

#[test]
fn a_job_longer_than_the_page_limit_is_refused_naming_the_limit() {
    let request = BarsRequest {
        symbols: vec![Symbol::parse("AAPL").unwrap()],
        range: BarRange {
            timeframe: Timeframe::MINUTE,
            start: t("2020-01-01T00:00:00Z"),
            end: t("2025-12-31T00:00:00Z"),
            adjustment: Adjustment::raw(),
            feed: None,
        },
    };
    let error = request.check_size(100).unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent);
    let text = error.to_string();
    assert!(
        text.contains("SIGNAL9_MAX_JOB_PAGES") && text.contains("100 pages"),
        "{text}"
    );
    let year = BarsRequest {
        range: BarRange {
            start: t("2025-01-01T00:00:00Z"),
            ..request.range.clone()
        },
        ..request
    };
    year.check_size(100).unwrap();
}

/// Fetches `request` twice at `now`: the calls each fetch spent, and
/// whether the range of its first symbol is then covered.
async fn calls_twice(
    client: &signal9_alpaca::AlpacaClient,
    store: &SqliteStore,
    request: &BarsRequest,
    now: DateTime<Utc>,
) -> (Vec<u32>, bool) {
    let mut calls = Vec::new();
    for _ in 0..2 {
        let report = fetch_bars(client, store, request, Packing::default(), now)
            .await
            .unwrap();
        calls.push(report.calls);
    }
    let covered = store
        .covers(
            &request.series(&request.symbols[0]),
            request.range.start,
            request.range.end,
        )
        .await
        .unwrap();
    (calls, covered)
}

#[tokio::test]
async fn a_range_that_has_not_settled_is_fetched_again_by_the_next_request() {
    // 13:00 in New York on a Friday: the session is open.
    let now = t("2026-11-20T18:00:00Z");
    let sim = spawn(
        SimConfig {
            now: Some(now),
            ..config()
        },
        0,
    )
    .await
    .unwrap();
    let client = sim_client(&sim.base_url(), Duration::from_secs(10));
    let (_dir, store) = temp_store();
    let symbols: Vec<Symbol> = active_symbols(42, ASSETS, 3)
        .iter()
        .map(|s| Symbol::parse(s).unwrap())
        .collect();
    let minutes = |start: i64, end: i64| BarsRequest {
        symbols: symbols.clone(),
        range: BarRange {
            timeframe: Timeframe::MINUTE,
            start: now - chrono::Duration::minutes(start),
            end: now - chrono::Duration::minutes(end),
            adjustment: Adjustment::raw(),
            feed: Some(Feed::Iex),
        },
    };
    let days = |end: &str| BarsRequest {
        range: BarRange {
            timeframe: Timeframe::DAY,
            start: t("2026-11-16T05:00:00Z"),
            end: t(end),
            ..minutes(0, 0).range
        },
        ..minutes(0, 0)
    };
    // Minute bars up to one minute ago: the last bars may still change.
    let recent = minutes(60, 1);
    assert_eq!(
        calls_twice(&client, &store, &recent, now).await,
        (vec![1, 1], false),
        "1Min ending a minute ago"
    );
    // Today's daily bar during the session (the range ended a minute ago,
    // in New York's today).
    let today = days("2026-11-20T17:59:00Z");
    assert_eq!(
        calls_twice(&client, &store, &today, now).await,
        (vec![1, 1], false),
        "1Day up to today"
    );
    // Settled ranges are answered from the store the second time.
    let settled = minutes(120, 20);
    assert_eq!(
        calls_twice(&client, &store, &settled, now).await,
        (vec![1, 0], true),
        "1Min ending 20 minutes ago"
    );
    let yesterday = days("2026-11-20T04:59:59Z");
    assert_eq!(
        calls_twice(&client, &store, &yesterday, now).await,
        (vec![1, 0], true),
        "1Day up to yesterday"
    );
}
