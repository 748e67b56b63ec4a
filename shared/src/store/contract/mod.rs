//! The behaviour every [`Store`] backend must show, as reusable checks,
//! one file per domain of the store.
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

mod assets;
mod bars;
mod legacy;
mod outbox;
mod runs;

use super::{AssetChange, AssetFilter, PageRecord, RunStatus, RunTotals, SeriesKey, Store};
use crate::events::EventType;
use crate::job::SyncPage;
use chrono::{DateTime, Duration, Utc};
use signal9_alpaca::{Adjustment, Asset, AssetClass, AssetStatus, Bar, Feed, Symbol, Timeframe};

pub use assets::{
    active_equity_symbols_are_the_backfill_set, assets_are_stamped_seen, assets_delist_and_relist, assets_list_filters,
    assets_upsert_and_classify_changes,
};
pub use bars::{
    bar_sets_write_like_single_upserts, bars_are_counted_inclusively, bars_range_is_inclusive,
    bars_series_never_collide, bars_upsert_is_idempotent, checkpoints_replace_and_delete,
    chunks_a_bar_updated_inside_a_chunk, chunks_bars_across_a_chunk_boundary,
    chunks_concurrent_writers_to_one_chunk_lose_nothing, chunks_equal_timestamps_last_wins_and_a_crypto_day_fits,
    corporate_actions_drop_the_adjusted_series_they_change, coverage_merges_ranges,
    coverage_of_many_series_merges_per_series,
};
pub use legacy::chunks_per_bar_data_migrates_into_chunks;
pub use outbox::changes_put_their_events_in_the_outbox;
pub use runs::{reconcile_claim_is_exclusive_under_concurrency, sync_runs_count_pages_once};

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
