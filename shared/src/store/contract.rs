//! The behaviour every [`Store`] backend must show, as reusable checks.
//!
//! Each check takes a fresh, initialised store and panics with a message on
//! a breach. [`store_contract_tests!`](crate::store_contract_tests) turns them
//! into one `#[tokio::test]` each for a backend:
//!
//! ```ignore
//! signal9_shared::store_contract_tests!(async { SqliteStore::open(path).unwrap() });
//! ```

// Checks panic on a breach by design, like the tests that call them.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};

use super::{AssetChange, AssetFilter, PageRecord, RunStatus, RunTotals, SeriesKey, Store};
use crate::events::EventType;
use crate::job::SyncPage;
use signal9_alpaca::{Adjustment, Asset, AssetClass, AssetStatus, Bar, Feed, Symbol, Timeframe};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_763_614_800, 0).unwrap_or_default() // 2025-11-20T05:00:00Z
}

/// A plausible asset with a deterministic id built from `n`.
pub fn sample_asset(n: u32, symbol: &str) -> Asset {
    Asset {
        id: format!("00000000-0000-4000-8000-{n:012}"),
        class: if symbol.contains('/') {
            AssetClass::Crypto
        } else {
            AssetClass::UsEquity
        },
        exchange: if symbol.contains('/') {
            "CRYPTO".into()
        } else {
            "NASDAQ".into()
        },
        symbol: Symbol::parse(symbol).unwrap_or_else(|e| panic!("sample symbol: {e}")),
        name: Some(format!("Sample {symbol} Ünïcode")),
        status: AssetStatus::Active,
        tradable: true,
        marginable: Some(true),
        shortable: Some(false),
        easy_to_borrow: None,
        fractionable: Some(true),
        maintenance_margin_requirement: Some(30.0),
        margin_requirement_long: Some("30".into()),
        margin_requirement_short: None,
        attributes: vec!["has_options".into()],
        min_order_size: None,
        min_trade_increment: None,
        price_increment: None,
        borrow_status: None,
        cusip: None,
    }
}

/// A valid bar at `t0 + day` days.
pub fn sample_bar(day: i64, price: f64) -> Bar {
    Bar {
        time: t0() + Duration::days(day),
        open: price,
        high: price + 1.0,
        low: price - 0.5,
        close: price + 0.5,
        volume: if day % 3 == 0 { 0.0 } else { 1000.0 + day as f64 },
        trade_count: 10,
        vwap: price + 0.25,
    }
}

fn series(symbol: &str, timeframe: Timeframe) -> SeriesKey {
    SeriesKey {
        symbol: Symbol::parse(symbol).unwrap_or_else(|e| panic!("{e}")),
        timeframe,
        adjustment: Adjustment::raw(),
        feed: Some(Feed::Iex),
    }
}

/// New, unchanged and updated assets are told apart; the same symbol under
/// two ids is two assets.
pub async fn assets_upsert_and_classify_changes(store: &dyn Store) {
    let a = sample_asset(1, "AAPL");
    let b = sample_asset(2, "BRK.B");
    let old_ticker = Asset {
        status: AssetStatus::Inactive,
        ..sample_asset(3, "AAPL")
    };
    let writes = store
        .upsert_assets(&[a.clone(), b.clone(), old_ticker.clone()], t0())
        .await
        .unwrap();
    assert!(writes.iter().all(|w| w.change == AssetChange::New), "{writes:?}");

    let writes = store
        .upsert_assets(&[a.clone(), b.clone()], t0() + Duration::hours(1))
        .await
        .unwrap();
    assert!(writes.iter().all(|w| w.change == AssetChange::Unchanged), "{writes:?}");
    let stored = store.get_asset(&a.id).await.unwrap().expect("stored");
    assert_eq!(stored.updated_at, t0(), "an unchanged asset is not rewritten");

    let flipped = Asset {
        status: AssetStatus::Inactive,
        tradable: false,
        ..a.clone()
    };
    let at = t0() + Duration::days(1);
    let writes = store.upsert_assets(std::slice::from_ref(&flipped), at).await.unwrap();
    assert_eq!(
        writes[0].change,
        AssetChange::Updated {
            status: Some((AssetStatus::Active, AssetStatus::Inactive)),
            tradable: Some((true, false)),
            relisted: false
        }
    );
    let stored = store.get_asset(&a.id).await.unwrap().expect("stored");
    assert_eq!(stored.asset, flipped);
    assert_eq!(stored.previous_status, Some(AssetStatus::Active));
    assert_eq!(stored.previous_tradable, Some(true));
    assert_eq!(stored.status_changed_at, Some(at));
    assert_eq!(stored.first_seen, t0());

    let by_symbol = store.assets_by_symbol(&a.symbol).await.unwrap();
    assert_eq!(by_symbol.len(), 2, "a recycled ticker keeps both ids");
    assert!(store
        .get_asset("00000000-0000-4000-8000-999999999999")
        .await
        .unwrap()
        .is_none());
}

/// Listing filters by class and status and hides delisted assets unless asked.
pub async fn assets_list_filters(store: &dyn Store) {
    let equity = sample_asset(10, "MSFT");
    let crypto = sample_asset(11, "BTC/USD");
    let inactive = Asset {
        status: AssetStatus::Inactive,
        ..sample_asset(12, "ZZZ")
    };
    store
        .upsert_assets(&[equity.clone(), crypto.clone(), inactive.clone()], t0())
        .await
        .unwrap();

    let all = store.list_assets(&AssetFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    let symbols: Vec<&str> = all.iter().map(|s| s.asset.symbol.as_str()).collect();
    assert_eq!(symbols, vec!["BTC/USD", "MSFT", "ZZZ"], "ordered by symbol");

    let crypto_only = store
        .list_assets(&AssetFilter {
            class: Some(AssetClass::Crypto),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(crypto_only.len(), 1);
    assert_eq!(crypto_only[0].asset, crypto);
    let active = store
        .list_assets(&AssetFilter {
            status: Some(AssetStatus::Active),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(active.len(), 2);
}

/// The backfill's symbols: active, tradable, not delisted US equities,
/// sorted, each once even when a recycled ticker has two assets.
pub async fn active_equity_symbols_are_the_backfill_set(store: &dyn Store) {
    let recycled = Asset {
        status: AssetStatus::Inactive,
        tradable: false,
        ..sample_asset(33, "MSFT")
    };
    let untradable = Asset {
        tradable: false,
        ..sample_asset(34, "NOTR")
    };
    let gone = sample_asset(35, "GONE");
    let assets = [
        sample_asset(30, "MSFT"),
        sample_asset(31, "BRK.B"),
        sample_asset(32, "ETH/USD"),
        recycled,
        untradable,
        gone.clone(),
        sample_asset(36, "BRK.B"),
    ];
    store.upsert_assets(&assets, t0()).await.unwrap();
    store
        .mark_delisted(std::slice::from_ref(&gone.id), t0(), None)
        .await
        .unwrap();
    let symbols = super::active_equity_symbols(store).await.unwrap();
    let names: Vec<&str> = symbols.iter().map(Symbol::as_str).collect();
    assert_eq!(names, ["BRK.B", "MSFT"]);
}

/// Delisting marks, never deletes; a delisted asset seen again is relisted.
pub async fn assets_delist_and_relist(store: &dyn Store) {
    let a = sample_asset(20, "GONE");
    store.upsert_assets(std::slice::from_ref(&a), t0()).await.unwrap();
    let at = t0() + Duration::days(2);
    assert_eq!(
        store
            .mark_delisted(std::slice::from_ref(&a.id), at, None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .mark_delisted(std::slice::from_ref(&a.id), at, None)
            .await
            .unwrap(),
        0,
        "delisting twice changes nothing"
    );
    assert_eq!(
        store
            .mark_delisted(&["00000000-0000-4000-8000-777777777777".into()], at, None)
            .await
            .unwrap(),
        0
    );

    let stored = store.get_asset(&a.id).await.unwrap().expect("delisted assets are kept");
    assert_eq!(stored.delisted_at, Some(at));
    assert!(store.list_assets(&AssetFilter::default()).await.unwrap().is_empty());
    let with_delisted = store
        .list_assets(&AssetFilter {
            include_delisted: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(with_delisted.len(), 1);

    let writes = store
        .upsert_assets(std::slice::from_ref(&a), at + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        writes[0].change,
        AssetChange::Updated {
            status: None,
            tradable: None,
            relisted: true
        }
    );
    assert_eq!(store.get_asset(&a.id).await.unwrap().expect("kept").delisted_at, None);
}

/// Writing the same bars twice leaves one copy; later values win.
pub async fn bars_upsert_is_idempotent(store: &dyn Store) {
    let key = series("AAPL", Timeframe::DAY);
    let bars: Vec<Bar> = (0..10).map(|d| sample_bar(d, 100.0 + d as f64)).collect();
    assert_eq!(store.upsert_bars(&key, &bars).await.unwrap(), 10);
    store.upsert_bars(&key, &bars).await.unwrap();
    let (start, end) = (t0(), t0() + Duration::days(30));
    assert_eq!(
        store.bars(&key, start, end).await.unwrap(),
        bars,
        "one copy of each bar, in time order, exact values"
    );

    let revised = sample_bar(4, 200.0);
    store.upsert_bars(&key, &[revised]).await.unwrap();
    let stored = store.bars(&key, start, end).await.unwrap();
    assert_eq!(stored.len(), 10);
    assert_eq!(stored[4], revised, "the last write wins");
}

/// Bars of different timeframes, adjustments, feeds and symbols never collide.
pub async fn bars_series_never_collide(store: &dyn Store) {
    let daily = series("AAPL", Timeframe::DAY);
    let hourly = series("AAPL", Timeframe::HOUR);
    let split = SeriesKey {
        adjustment: "split".parse().unwrap_or_default(),
        ..daily.clone()
    };
    let sip = SeriesKey {
        feed: Some(Feed::Sip),
        ..daily.clone()
    };
    let other = series("AAPL.W", Timeframe::DAY);
    for (i, key) in [&daily, &hourly, &split, &sip, &other].into_iter().enumerate() {
        store
            .upsert_bars(key, &[sample_bar(0, 10.0 * (i + 1) as f64)])
            .await
            .unwrap();
    }
    for (i, key) in [&daily, &hourly, &split, &sip, &other].into_iter().enumerate() {
        let got = store.bars(key, t0(), t0()).await.unwrap();
        assert_eq!(got.len(), 1, "{key}");
        assert_eq!(got[0].open, 10.0 * (i + 1) as f64, "{key} kept its own bar");
    }
}

/// Bars of many series written in one call land exactly as one upsert per
/// series would leave them, across any batching the backend does; a later
/// set of the same series wins.
pub async fn bar_sets_write_like_single_upserts(store: &dyn Store) {
    let symbols: Vec<String> = (0..40).map(|i| format!("S{i:02}")).collect();
    let mut sets: Vec<(SeriesKey, Vec<Bar>)> = symbols
        .iter()
        .map(|symbol| {
            let bars = (0..3).map(|d| sample_bar(d, 20.0 + d as f64)).collect();
            (series(symbol, Timeframe::DAY), bars)
        })
        .collect();
    let revised = sample_bar(1, 99.0);
    sets.push((series("S07", Timeframe::DAY), vec![revised]));
    assert_eq!(
        store.upsert_bar_sets(&sets).await.unwrap(),
        121,
        "bars written, as given"
    );
    assert_eq!(
        store.upsert_bar_sets(&[]).await.unwrap(),
        0,
        "an empty call writes nothing"
    );
    for symbol in &symbols {
        let got = store
            .bars(&series(symbol, Timeframe::DAY), t0(), t0() + Duration::days(10))
            .await
            .unwrap();
        assert_eq!(got.len(), 3, "{symbol}: each bar once");
        let expected_open = if symbol == "S07" { 99.0 } else { 21.0 };
        assert_eq!(got[1].open, expected_open, "{symbol}: the last set wins");
    }
}

/// Range reads are inclusive at both ends.
pub async fn bars_range_is_inclusive(store: &dyn Store) {
    let key = series("BTC/USD", Timeframe::DAY);
    let bars: Vec<Bar> = (0..5).map(|d| sample_bar(d, 50.0)).collect();
    store.upsert_bars(&key, &bars).await.unwrap();
    let got = store.bars(&key, bars[1].time, bars[3].time).await.unwrap();
    assert_eq!(got, bars[1..=3].to_vec());
    assert!(store
        .bars(&key, t0() + Duration::days(100), t0() + Duration::days(200))
        .await
        .unwrap()
        .is_empty());
}

/// Bars are counted over the same inclusive range `bars` reads.
pub async fn bars_are_counted_inclusively(store: &dyn Store) {
    let key = series("MSFT", Timeframe::DAY);
    let bars: Vec<Bar> = (0..7).map(|d| sample_bar(d, 20.0)).collect();
    store.upsert_bars(&key, &bars).await.unwrap();
    assert_eq!(store.count_bars(&key, bars[1].time, bars[4].time).await.unwrap(), 4);
    assert_eq!(store.count_bars(&key, bars[0].time, bars[6].time).await.unwrap(), 7);
    let other = series("MSFT", Timeframe::HOUR);
    assert_eq!(store.count_bars(&other, bars[0].time, bars[6].time).await.unwrap(), 0);
}

/// Checkpoints are written, replaced, read by key and removed; a key with
/// none is simply absent.
pub async fn checkpoints_replace_and_delete(store: &dyn Store) {
    let keys: Vec<String> = vec![
        "fetch|a".into(),
        "series|AAPL|1Min|raw|iex|1|2".into(),
        "missing".into(),
    ];
    assert!(store.checkpoints(&keys).await.unwrap().is_empty());
    store
        .put_checkpoints(&[
            (keys[0].clone(), "{\"n\":1}".into()),
            (keys[1].clone(), "{\"n\":2}".into()),
        ])
        .await
        .unwrap();
    store
        .put_checkpoints(&[(keys[0].clone(), "{\"n\":3}".into())])
        .await
        .unwrap();
    let found = store.checkpoints(&keys).await.unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[&keys[0]], "{\"n\":3}");
    assert_eq!(found[&keys[1]], "{\"n\":2}");
    store.delete_checkpoints(&keys).await.unwrap();
    assert!(store.checkpoints(&keys).await.unwrap().is_empty());
}

/// Recorded ranges merge; `covers` is true only inside one merged range.
pub async fn coverage_merges_ranges(store: &dyn Store) {
    let key = series("MSFT", Timeframe::DAY);
    let day = |d: i64| t0() + Duration::days(d);
    assert!(!store.covers(&key, day(0), day(1)).await.unwrap());
    store.add_coverage(&key, day(0), day(5)).await.unwrap();
    store.add_coverage(&key, day(10), day(15)).await.unwrap();
    assert!(store.covers(&key, day(1), day(4)).await.unwrap());
    assert!(store.covers(&key, day(0), day(5)).await.unwrap());
    assert!(
        !store.covers(&key, day(4), day(11)).await.unwrap(),
        "a gap is not covered"
    );
    assert_eq!(store.covered_until(&key, day(2)).await.unwrap(), Some(day(5)));
    assert_eq!(store.covered_until(&key, day(5)).await.unwrap(), Some(day(5)));
    assert_eq!(store.covered_until(&key, day(7)).await.unwrap(), None, "in the gap");
    assert_eq!(store.covered_until(&key, day(-1)).await.unwrap(), None, "before any");
    store.add_coverage(&key, day(5), day(10)).await.unwrap();
    assert!(
        store.covers(&key, day(0), day(15)).await.unwrap(),
        "touching ranges merge"
    );
    assert!(!store.covers(&key, day(0), day(16)).await.unwrap());
    assert!(
        !store
            .covers(&series("MSFT", Timeframe::HOUR), day(1), day(2))
            .await
            .unwrap(),
        "coverage is per series"
    );
}

/// Coverage of many series recorded in one call merges per series exactly
/// as one call per series does, and a series named twice is harmless.
pub async fn coverage_of_many_series_merges_per_series(store: &dyn Store) {
    let day = |d: i64| t0() + Duration::days(d);
    let keys: Vec<SeriesKey> = (0..30).map(|i| series(&format!("C{i:02}"), Timeframe::DAY)).collect();
    // Half the series already hold [0, 5]; the call adds [5, 9] to all.
    for key in keys.iter().step_by(2) {
        store.add_coverage(key, day(0), day(5)).await.unwrap();
    }
    let mut twice = keys.clone();
    twice.insert(4, keys[3].clone());
    store.add_coverage_many(&twice, day(5), day(9)).await.unwrap();
    for (i, key) in keys.iter().enumerate() {
        assert!(store.covers(key, day(5), day(9)).await.unwrap(), "{key}");
        assert_eq!(
            store.covers(key, day(0), day(9)).await.unwrap(),
            i % 2 == 0,
            "{key}: merged with its own earlier range only"
        );
    }
    store.add_coverage_many(&[], day(0), day(1)).await.unwrap();
}

fn page(id: &str, class: AssetClass, listed: u32, at: DateTime<Utc>) -> PageRecord {
    PageRecord {
        page_id: id.into(),
        slice: SyncPage {
            asset_class: class,
            exchange: None,
            status: None,
        },
        listed_at: at,
        listed,
        new: listed,
        updated: 0,
        unchanged: 0,
        status_changes: 0,
        rejected: 0,
        rejections: vec![],
    }
}

/// Runs: created once, pages counted once each, reconcile claimed once.
pub async fn sync_runs_count_pages_once(store: &dyn Store) {
    assert!(store.create_run("2026-11-23", 3, t0()).await.unwrap());
    assert!(
        !store.create_run("2026-11-23", 99, t0()).await.unwrap(),
        "a second create changes nothing"
    );
    let equity = page("us_equity", AssetClass::UsEquity, 10, t0());
    let p = store.record_page("2026-11-23", &equity).await.unwrap();
    assert_eq!((p.pages_done, p.pages_total), (1, 3));
    let again = PageRecord {
        listed: 11,
        ..equity.clone()
    };
    let p = store.record_page("2026-11-23", &again).await.unwrap();
    assert_eq!(p.pages_done, 1, "recording a page twice counts once");
    let crypto = page("crypto", AssetClass::Crypto, 2, t0());
    store.record_page("2026-11-23", &crypto).await.unwrap();
    let p = store
        .record_page("2026-11-23", &page("us_option", AssetClass::UsOption, 0, t0()))
        .await
        .unwrap();
    assert!(p.is_complete());
    assert!(store.record_page("no-such-run", &crypto).await.is_err());
    let pages = store.page_records("2026-11-23").await.unwrap();
    assert_eq!(pages.len(), 3);
    assert!(pages.contains(&crypto));
    assert!(pages.contains(&equity), "the first record of a page stays");

    let relisted = PageRecord {
        listed_at: t0() + Duration::hours(1),
        listed: 12,
        ..equity.clone()
    };
    store.replace_page("2026-11-23", &relisted).await.unwrap();
    let pages = store.page_records("2026-11-23").await.unwrap();
    assert_eq!(pages.len(), 3, "a replaced page is still one page");
    assert!(pages.contains(&relisted));

    let run = store.get_run("2026-11-23").await.unwrap().expect("run");
    assert_eq!(run.published_at, None);
    store
        .mark_published("2026-11-23", t0() + Duration::seconds(1))
        .await
        .unwrap();
    assert!(store.mark_published("nope", t0()).await.is_err());

    let stale = std::time::Duration::from_secs(60);
    assert!(store.claim_reconcile("2026-11-23", t0(), stale).await.unwrap());
    assert!(
        !store
            .claim_reconcile("2026-11-23", t0() + Duration::seconds(10), stale)
            .await
            .unwrap(),
        "reconcile is claimed once"
    );
    assert!(
        store
            .claim_reconcile("2026-11-23", t0() + Duration::seconds(61), stale)
            .await
            .unwrap(),
        "a claim older than stale_after (its holder died) can be taken over"
    );
    assert!(!store
        .claim_reconcile("2026-11-23", t0() + Duration::seconds(62), stale)
        .await
        .unwrap());

    let run = store.get_run("2026-11-23").await.unwrap().expect("run");
    assert_eq!(
        (run.status, run.pages_done, run.pages_total),
        (RunStatus::Running, 3, 3)
    );
    assert_eq!(run.published_at, Some(t0() + Duration::seconds(1)));
    assert_eq!(run.reconcile_claimed_at, Some(t0() + Duration::seconds(61)));
    assert!(store.last_completed_run().await.unwrap().is_none());
    let totals = RunTotals {
        new: 5,
        ..RunTotals::default()
    };
    store
        .finish_run("2026-11-23", RunStatus::Completed, &totals, t0() + Duration::hours(1))
        .await
        .unwrap();
    let run = store.get_run("2026-11-23").await.unwrap().expect("run");
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.result, Some(totals));
    assert_eq!(run.finished_at, Some(t0() + Duration::hours(1)));
    assert!(
        !store
            .claim_reconcile("2026-11-23", t0() + Duration::days(1), stale)
            .await
            .unwrap(),
        "a closed run is never claimed"
    );

    store
        .create_run("2026-11-24", 1, t0() + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(store.latest_run().await.unwrap().expect("latest").run_id, "2026-11-24");
    let recent: Vec<String> = store
        .recent_runs(5)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert!(
        recent.starts_with(&["2026-11-24".to_owned(), "2026-11-23".to_owned()]),
        "newest first: {recent:?}"
    );
    assert_eq!(store.recent_runs(1).await.unwrap().len(), 1);
    assert_eq!(
        store.last_completed_run().await.unwrap().expect("completed").run_id,
        "2026-11-23"
    );
    assert!(store.get_run("nope").await.unwrap().is_none());
    assert!(store
        .finish_run("nope", RunStatus::Failed, &RunTotals::default(), t0())
        .await
        .is_err());
}

/// Every asset a listing returns is stamped seen at the listing's time; a
/// stamp never moves back; refused-but-listed assets can be stamped alone.
pub async fn assets_are_stamped_seen(store: &dyn Store) {
    let a = sample_asset(40, "SEEN");
    let b = sample_asset(41, "ALSO");
    store.upsert_assets(&[a.clone(), b.clone()], t0()).await.unwrap();
    let later = t0() + Duration::hours(2);
    store.upsert_assets(std::slice::from_ref(&a), later).await.unwrap();
    let seen = |id: String| async move { store.get_asset(&id).await.unwrap().expect("stored").seen_at };
    assert_eq!(
        seen(a.id.clone()).await,
        Some(later),
        "an unchanged asset is stamped too"
    );
    assert_eq!(seen(b.id.clone()).await, Some(t0()));
    assert_eq!(
        store.get_asset(&a.id).await.unwrap().expect("stored").updated_at,
        t0(),
        "a stamp is not a change"
    );
    store.upsert_assets(std::slice::from_ref(&a), t0()).await.unwrap();
    assert_eq!(
        seen(a.id.clone()).await,
        Some(later),
        "an older listing never moves it back"
    );

    let stamped = store
        .mark_seen(&[b.id.clone(), "00000000-0000-4000-8000-555555555555".into()], later)
        .await
        .unwrap();
    assert_eq!(stamped, 1, "unknown ids are skipped");
    assert_eq!(seen(b.id.clone()).await, Some(later));
}

/// Each change puts its event in the outbox with it; an unchanged asset
/// puts none; the same change has the same event id; sent events leave.
pub async fn changes_put_their_events_in_the_outbox(store: &dyn Store) {
    let a = sample_asset(50, "EVNT");
    store
        .upsert_assets_seen(std::slice::from_ref(&a), t0(), Some("r1"))
        .await
        .unwrap();
    store
        .upsert_assets_seen(std::slice::from_ref(&a), t0() + Duration::hours(1), Some("r1"))
        .await
        .unwrap();
    let pending = store.pending_events(100).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].event.kind, EventType::AssetListed);
    assert_eq!(pending[0].event.run_id.as_deref(), Some("r1"));
    let listed_id = pending[0].event.id.clone();

    let flipped = Asset {
        status: AssetStatus::Inactive,
        ..a.clone()
    };
    let at = t0() + Duration::days(1);
    store
        .upsert_assets_seen(std::slice::from_ref(&flipped), at, Some("r2"))
        .await
        .unwrap();
    store
        .mark_delisted(std::slice::from_ref(&a.id), at + Duration::hours(1), Some("r2"))
        .await
        .unwrap();
    store
        .upsert_assets_seen(std::slice::from_ref(&flipped), at + Duration::hours(2), Some("r3"))
        .await
        .unwrap();
    store.create_run("r3", 1, at).await.unwrap();
    store
        .finish_run("r3", RunStatus::Suspect, &RunTotals::default(), at + Duration::hours(3))
        .await
        .unwrap();
    let pending = store.pending_events(100).await.unwrap();
    let kinds: Vec<EventType> = pending.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::AssetListed,
            EventType::AssetStatusChanged,
            EventType::AssetDelisted,
            EventType::AssetListed,
            EventType::SyncSuspect
        ],
        "oldest first: {pending:?}"
    );
    assert_eq!(
        pending[3].event.data["relisted"], true,
        "a delisted asset seen again is listed again"
    );
    assert_ne!(pending[3].event.id, listed_id);
    assert!(store.pending_events(2).await.unwrap().len() >= 2);

    // Sent events leave (by receipt: a backend may keep several together).
    let first: Vec<_> = pending
        .iter()
        .filter(|p| p.receipt == pending[0].receipt)
        .cloned()
        .collect();
    store.events_sent(&first).await.unwrap();
    let left = store.pending_events(100).await.unwrap();
    assert_eq!(left.len(), pending.len() - first.len());
    assert!(left.iter().all(|e| e.event.id != listed_id));
    store.events_sent(&left).await.unwrap();
    assert!(store.pending_events(100).await.unwrap().is_empty());
}

/// A corporate action drops the coverage, bars and unfinished fetches of
/// exactly the series of its symbol whose adjustment it changes, puts one
/// `bars.invalidated` event per series in the outbox, and is applied once.
pub async fn corporate_actions_drop_the_adjusted_series_they_change(store: &dyn Store) {
    let with = |symbol: &str, timeframe: Timeframe, adjustment: &str| SeriesKey {
        adjustment: adjustment.parse().unwrap(),
        ..series(symbol, timeframe)
    };
    let raw = with("SPLT", Timeframe::DAY, "raw");
    let split = with("SPLT", Timeframe::DAY, "split");
    let all_hourly = with("SPLT", Timeframe::HOUR, "all");
    let dividend = with("SPLT", Timeframe::DAY, "dividend");
    let other = with("SPLT.B", Timeframe::DAY, "split");
    let bars: Vec<Bar> = (0..5).map(|d| sample_bar(d, 10.0)).collect();
    let (start, end) = (bars[0].time, bars[4].time);
    for key in [&raw, &split, &all_hourly, &dividend, &other] {
        store.upsert_bars(key, &bars).await.unwrap();
        store.add_coverage(key, start, end).await.unwrap();
    }
    // An unfinished fetch of an adjusted series, and one of the raw series.
    let checkpoint = |key: &SeriesKey| format!("bars|{key}|1|2");
    store
        .put_checkpoints(&[(checkpoint(&split), "{}".into()), (checkpoint(&raw), "{}".into())])
        .await
        .unwrap();
    let pending_before = store.pending_events(1000).await.unwrap().len();

    let action = signal9_alpaca::CorporateAction {
        id: "7e0c2a8e-0000-4000-8000-000000000001".into(),
        kind: signal9_alpaca::ActionKind::ForwardSplit,
        symbol: Symbol::parse("SPLT").unwrap(),
        ex_date: chrono::NaiveDate::from_ymd_opt(2025, 11, 27).unwrap(),
        terms: "4:1".into(),
    };
    let at = t0() + Duration::days(10);
    let mut dropped = store.apply_action(&action, at).await.unwrap().expect("first apply");
    dropped.sort();
    let mut expected = vec![split.clone(), all_hourly.clone()];
    expected.sort();
    assert_eq!(
        dropped, expected,
        "split and all change; raw, dividend and another symbol do not"
    );
    for key in [&split, &all_hourly] {
        assert!(!store.covers(key, start, end).await.unwrap(), "{key} still covered");
        assert_eq!(store.count_bars(key, start, end).await.unwrap(), 0, "{key} kept bars");
    }
    for key in [&raw, &dividend, &other] {
        assert!(store.covers(key, start, end).await.unwrap(), "{key} lost its coverage");
        assert_eq!(store.count_bars(key, start, end).await.unwrap(), 5, "{key} lost bars");
    }
    let checkpoints = store
        .checkpoints(&[checkpoint(&split), checkpoint(&raw)])
        .await
        .unwrap();
    assert!(
        !checkpoints.contains_key(&checkpoint(&split)),
        "the dropped series' fetch must start over"
    );
    assert!(checkpoints.contains_key(&checkpoint(&raw)));

    let pending = store.pending_events(1000).await.unwrap();
    let invalidated: Vec<_> = pending
        .iter()
        .filter(|p| p.event.kind == EventType::BarsInvalidated)
        .collect();
    assert_eq!(pending.len() - pending_before, 2);
    let mut named: Vec<String> = invalidated
        .iter()
        .map(|p| p.event.data["series"].as_str().unwrap().to_owned())
        .collect();
    named.sort();
    let mut keys: Vec<String> = expected.iter().map(ToString::to_string).collect();
    keys.sort();
    assert_eq!(named, keys);
    assert_eq!(invalidated[0].event.data["action"]["type"], "forward_split");
    assert_eq!(invalidated[0].event.data["symbol"], "SPLT");

    // Applied once: again, nothing changes, even bars stored since stay.
    store.upsert_bars(&split, &bars).await.unwrap();
    assert_eq!(store.apply_action(&action, at).await.unwrap(), None);
    assert_eq!(store.count_bars(&split, start, end).await.unwrap(), 5);
    assert_eq!(store.pending_events(1000).await.unwrap().len(), pending.len());
}

fn minute_bar(t: DateTime<Utc>, price: f64) -> Bar {
    Bar {
        time: t,
        open: price,
        high: price + 0.5,
        low: price - 0.25,
        close: price + 0.125,
        volume: 12.5,
        trade_count: 3,
        vwap: price + 0.0625,
    }
}

/// Bars across a chunk boundary (daily bars across a month's end, minute
/// bars across UTC midnight) are written in one call and read back whole
/// and in parts.
pub async fn chunks_bars_across_a_chunk_boundary(store: &dyn Store) {
    let daily = series("EDGE", Timeframe::DAY);
    let first: DateTime<Utc> = "2025-11-26T05:00:00Z".parse().unwrap();
    let days: Vec<Bar> = (0..8)
        .map(|d| minute_bar(first + Duration::days(d), 10.0 + d as f64))
        .collect();
    store.upsert_bars(&daily, &days).await.unwrap();
    let all = store.bars(&daily, days[0].time, days[7].time).await.unwrap();
    assert_eq!(all, days, "November and December chunks read as one range");
    let december: DateTime<Utc> = "2025-12-01T00:00:00Z".parse().unwrap();
    let tail = store.bars(&daily, december, days[7].time).await.unwrap();
    assert_eq!(tail.len(), 3);
    assert_eq!(store.count_bars(&daily, first, december).await.unwrap(), 5);

    let minutes = series("EDGE", Timeframe::MINUTE);
    let before_midnight: DateTime<Utc> = "2025-11-20T23:55:00Z".parse().unwrap();
    let bars: Vec<Bar> = (0..10)
        .map(|m| minute_bar(before_midnight + Duration::minutes(m), 20.0 + m as f64))
        .collect();
    store.upsert_bars(&minutes, &bars).await.unwrap();
    assert_eq!(store.bars(&minutes, bars[0].time, bars[9].time).await.unwrap(), bars);
    let midnight: DateTime<Utc> = "2025-11-21T00:00:00Z".parse().unwrap();
    assert_eq!(
        store.bars(&minutes, midnight, bars[9].time).await.unwrap(),
        bars[5..].to_vec()
    );
}

/// A bar written again inside an existing chunk replaces the stored one;
/// the chunk's other bars stay.
pub async fn chunks_a_bar_updated_inside_a_chunk(store: &dyn Store) {
    let key = series("UPDT", Timeframe::MINUTE);
    let t0: DateTime<Utc> = "2025-11-20T14:30:00Z".parse().unwrap();
    let bars: Vec<Bar> = (0..10)
        .map(|m| minute_bar(t0 + Duration::minutes(m), 50.0 + m as f64))
        .collect();
    store.upsert_bars(&key, &bars).await.unwrap();
    let fixed = Bar {
        close: 99.99,
        volume: 1234.0,
        ..bars[4]
    };
    store.upsert_bars(&key, std::slice::from_ref(&fixed)).await.unwrap();
    let stored = store.bars(&key, bars[0].time, bars[9].time).await.unwrap();
    assert_eq!(stored.len(), 10, "one copy of each bar");
    assert_eq!(stored[4], fixed);
    assert_eq!(stored[3], bars[3]);
    assert_eq!(stored[5], bars[5]);
}

/// Writers merging into one chunk at the same time lose none of each
/// other's bars.
pub async fn chunks_concurrent_writers_to_one_chunk_lose_nothing(store: &dyn Store) {
    let key = series("RACE", Timeframe::MINUTE);
    let t0: DateTime<Utc> = "2025-11-20T09:00:00Z".parse().unwrap();
    let writers = (0..8i64).map(|w| {
        let key = key.clone();
        let bars: Vec<Bar> = (0..20i64)
            .map(|i| minute_bar(t0 + Duration::minutes(w * 20 + i), 100.0 + w as f64))
            .collect();
        async move { store.upsert_bars(&key, &bars).await }
    });
    for result in futures::future::join_all(writers).await {
        result.unwrap();
    }
    let stored = store.bars(&key, t0, t0 + Duration::hours(3)).await.unwrap();
    assert_eq!(stored.len(), 160, "every writer's bars are in the chunk");
    assert!(stored.windows(2).all(|w| w[0].time < w[1].time));
}

/// Crypto bars of equal timestamps in one write: the last one wins; and a
/// whole day of crypto minutes (1,440 bars, one chunk) reads back exactly.
pub async fn chunks_equal_timestamps_last_wins_and_a_crypto_day_fits(store: &dyn Store) {
    let key = SeriesKey {
        feed: None,
        ..series("BTC/USD", Timeframe::MINUTE)
    };
    let t0: DateTime<Utc> = "2025-11-20T00:00:00Z".parse().unwrap();
    let twice = [
        minute_bar(t0, 61_000.5),
        minute_bar(t0 + Duration::minutes(1), 61_001.0),
        minute_bar(t0, 61_002.25),
    ];
    store.upsert_bars(&key, &twice).await.unwrap();
    let stored = store.bars(&key, t0, t0 + Duration::minutes(1)).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].open, 61_002.25, "the last bar of a time wins");

    let day: Vec<Bar> = (0..1440)
        .map(|m| {
            let price = 61_000.0 + ((m as f64) * 0.37).sin() * 250.0;
            Bar {
                volume: ((m as f64) * 1.7).cos().abs() * 3.217_5,
                ..minute_bar(t0 + Duration::minutes(m), price)
            }
        })
        .collect();
    store.upsert_bars(&key, &day).await.unwrap();
    let end = t0 + Duration::minutes(1439);
    assert_eq!(store.bars(&key, t0, end).await.unwrap(), day);
    assert_eq!(store.count_bars(&key, t0, end).await.unwrap(), 1440);
}

/// Bars kept by an older version one per row or item are read beside the
/// chunks (a chunk's bar winning), and the migration moves them into
/// chunks, verifies them, drops the old layout and can be run again.
pub async fn chunks_per_bar_data_migrates_into_chunks(store: &dyn Store) {
    let daily = series("OLDD", Timeframe::DAY);
    let minutes = series("OLDM", Timeframe::MINUTE);
    let t0: DateTime<Utc> = "2025-10-01T04:00:00Z".parse().unwrap();
    let days: Vec<Bar> = (0..40)
        .map(|d| minute_bar(t0 + Duration::days(d), 30.0 + d as f64))
        .collect();
    let mins: Vec<Bar> = (0..300).map(|m| minute_bar(t0 + Duration::minutes(m), 40.0)).collect();
    store.put_legacy_bars(&daily, &days).await.unwrap();
    store.put_legacy_bars(&minutes, &mins).await.unwrap();
    // A worker of this version wrote a newer bar of one of those days.
    let newer = Bar {
        close: 77.0,
        ..days[10]
    };
    store.upsert_bars(&daily, std::slice::from_ref(&newer)).await.unwrap();
    let read = store.bars(&daily, days[0].time, days[39].time).await.unwrap();
    assert_eq!(read.len(), 40, "the old layout is read beside the chunks");
    assert_eq!(read[10], newer, "a chunk's bar wins");

    let mut pages = 0;
    let migration = super::migrate::migrate_bars(store, 64, |_| pages += 1)
        .await
        .unwrap()
        .expect("there was per-bar data");
    assert_eq!(migration.progress.bars, 340, "{migration:?}");
    assert_eq!(migration.series, 2);
    assert!(migration.dropped);
    assert!(pages >= 340 / 64, "{pages} pages");
    assert!(
        store.legacy_bars(None, 10).await.unwrap().is_none(),
        "the old layout is gone"
    );
    let chunked = store.chunked_bars(&daily, days[0].time, days[39].time).await.unwrap();
    assert_eq!(chunked.len(), 40);
    assert_eq!(chunked[10], newer, "the migration kept the newer bar");
    assert_eq!(chunked[11], days[11]);
    assert_eq!(store.bars(&minutes, mins[0].time, mins[299].time).await.unwrap(), mins);
    assert_eq!(
        super::migrate::migrate_bars(store, 64, |_| {}).await.unwrap(),
        None,
        "nothing left"
    );
}

/// Concurrent claims of one reconcile: exactly one wins.
pub async fn reconcile_claim_is_exclusive_under_concurrency(store: &dyn Store) {
    store.create_run("race", 1, t0()).await.unwrap();
    // Claims start together; SQLite runs them on several blocking threads.
    let claims: Vec<bool> = futures::future::join_all(
        (0..16).map(|_| store.claim_reconcile("race", t0(), std::time::Duration::from_secs(60))),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap())
    .collect();
    assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{claims:?}");
}

/// Generates one `#[tokio::test]` per contract check for a backend. The
/// argument is an expression evaluating to a future of a fresh store.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@each $make;
            assets_upsert_and_classify_changes, assets_list_filters, assets_delist_and_relist, active_equity_symbols_are_the_backfill_set,
            bars_upsert_is_idempotent, bars_series_never_collide, bar_sets_write_like_single_upserts, bars_range_is_inclusive,
            bars_are_counted_inclusively, checkpoints_replace_and_delete,
            coverage_merges_ranges, coverage_of_many_series_merges_per_series, sync_runs_count_pages_once, reconcile_claim_is_exclusive_under_concurrency,
            assets_are_stamped_seen, changes_put_their_events_in_the_outbox,
            corporate_actions_drop_the_adjusted_series_they_change,
            chunks_bars_across_a_chunk_boundary, chunks_a_bar_updated_inside_a_chunk,
            chunks_concurrent_writers_to_one_chunk_lose_nothing,
            chunks_equal_timestamps_last_wins_and_a_crypto_day_fits, chunks_per_bar_data_migrates_into_chunks);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $make.await;
                $crate::store::Store::init(&store).await.expect("init");
                $crate::store::contract::$name(&store).await;
            }
        )*
    };
}
