//! The sync's reconcile as a library (`shared::sync`), without RabbitMQ:
//! the simulator over HTTP, a real SQLite file or DynamoDB tables on the
//! local AWS-API server. A 15,000-asset universe on both backends with no
//! item over 100 KB; the per-class guard (an empty crypto listing, a crypto
//! listing cut to half, a listed asset that fails validation); and a page
//! listed too long ago being listed again before the run is compared.
#![allow(clippy::unwrap_used)]

use alpaca_sim::{spawn, RunningSim, SimConfig};
use signal9_alpaca::{AlpacaClient, AssetClass, AssetStatus, Symbol};
use signal9_e2e::{aws_endpoint, sim_client, SIM_NOW};
use signal9_shared::events::EventType;
use signal9_shared::job::SyncPage;
use signal9_shared::store::dynamo::item_size;
use signal9_shared::store::{AssetFilter, DynamoStore, RunStatus, RunTotals, SqliteStore, Store};
use signal9_shared::sync::{close_run, slice_query, sync_slice, ReconcileSettings};
use std::time::Duration;

async fn sim(assets: usize) -> RunningSim {
    spawn(
        SimConfig {
            assets,
            now: Some(SIM_NOW.parse().unwrap()),
            limit: 0,
            ..SimConfig::default()
        },
        0,
    )
    .await
    .unwrap()
}

fn client(sim: &RunningSim) -> AlpacaClient {
    sim_client(&sim.base_url(), Duration::from_secs(60))
}

fn slice(class: AssetClass) -> SyncPage {
    SyncPage {
        asset_class: class,
        exchange: None,
        status: None,
    }
}

/// Lists each page of a run and records it, as the workers do.
async fn list_pages(client: &AlpacaClient, store: &dyn Store, run_id: &str) {
    let slices = [slice(AssetClass::UsEquity), slice(AssetClass::Crypto)];
    store.create_run(run_id, 2, chrono::Utc::now()).await.unwrap();
    for page in &slices {
        let report = sync_slice(client, store, &slice_query(page), Some(run_id))
            .await
            .unwrap();
        let id = format!("sync:{run_id}:{}", page.asset_class);
        store.record_page(run_id, &report.record(&id, page)).await.unwrap();
    }
}

/// One whole run: every page listed and recorded, then closed.
async fn sync_run(client: &AlpacaClient, store: &dyn Store, run_id: &str) -> (RunStatus, RunTotals) {
    list_pages(client, store, run_id).await;
    close_run(client, store, run_id, &ReconcileSettings::default())
        .await
        .unwrap()
}

async fn change(sim: &RunningSim, changes: serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/assets", sim.base_url()))
        .json(&changes)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

async fn faults(sim: &RunningSim, faults: serde_json::Value) {
    let r = reqwest::Client::new()
        .put(format!("{}/_sim/faults", sim.base_url()))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
}

async fn delisted(store: &dyn Store) -> usize {
    store
        .list_assets(&AssetFilter {
            include_delisted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|a| a.delisted_at.is_some())
        .count()
}

fn temp_sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("sync.db")).unwrap();
    (dir, store)
}

async fn fresh_dynamo(prefix: &str) -> DynamoStore {
    let config = signal9_shared::aws::AwsTarget::local(aws_endpoint()).load().await;
    let store = DynamoStore::from_config(&config, format!("{prefix}-{}", signal9_shared::testing::namespace()));
    store.init().await.unwrap();
    store
}

/// The largest item of every table of a DynamoDB store, in bytes as AWS counts them.
async fn largest_dynamo_item(store: &DynamoStore) -> (String, usize) {
    let config = signal9_shared::aws::AwsTarget::local(aws_endpoint()).load().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let mut largest = (String::new(), 0);
    for table in DynamoStore::TABLES {
        let mut pages = client.scan().table_name(store.table(table)).into_paginator().send();
        while let Some(page) = pages.next().await {
            for item in page.unwrap().items() {
                let size = item_size(item);
                if size > largest.1 {
                    largest = (table.to_string(), size);
                }
            }
        }
    }
    largest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_15000_asset_universe_closes_its_run_on_dynamodb_with_no_item_over_100_kb() {
    let sim = sim(15_000).await;
    let client = client(&sim);
    let store = fresh_dynamo("s9-scale").await;
    let started = std::time::Instant::now();
    let (status, totals) = sync_run(&client, &store, "big").await;
    println!(
        "first run of 15,000 assets on DynamoDB: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status, RunStatus::Completed, "{totals:?}");
    assert_eq!(totals.listed, 15_000);
    assert_eq!(totals.new + totals.rejected, 15_000, "{totals:?}");
    assert_eq!(totals.delisted, 0);
    let (table, largest) = largest_dynamo_item(&store).await;
    assert!(largest < 100 * 1024, "the largest item ({table}) is {largest} bytes");
    let counted = store.counters().largest_item.load(std::sync::atomic::Ordering::Relaxed);
    assert!(counted < 100 * 1024, "the largest item written was {counted} bytes");

    // The second day: every asset unchanged, the run closes again.
    let (status, totals) = sync_run(&client, &store, "big-2").await;
    assert_eq!(
        (status, totals.unchanged + totals.rejected, totals.delisted),
        (RunStatus::Completed, 15_000, 0)
    );
    let _ = store.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_15000_asset_universe_closes_its_run_on_sqlite_with_no_row_over_100_kb() {
    let sim = sim(15_000).await;
    let client = client(&sim);
    let (dir, store) = temp_sqlite();
    store.init().await.unwrap();
    let (status, totals) = sync_run(&client, &store, "big").await;
    assert_eq!(
        (status, totals.listed, totals.delisted),
        (RunStatus::Completed, 15_000, 0)
    );
    let conn = rusqlite::Connection::open(dir.path().join("sync.db")).unwrap();
    for (table, column) in [
        ("assets", "body"),
        ("sync_pages", "result"),
        ("sync_runs", "result"),
        ("outbox", "body"),
    ] {
        let largest: i64 = conn
            .query_row(
                &format!("SELECT COALESCE(MAX(LENGTH({column})), 0) FROM {table}"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(largest < 100 * 1024, "{table}.{column}: {largest} bytes");
    }
}

async fn an_empty_crypto_listing_makes_the_run_suspect_and_delists_nothing(store: &dyn Store) {
    let sim = sim(2_000).await;
    let client = client(&sim);
    assert_eq!(sync_run(&client, store, "day-1").await.0, RunStatus::Completed);

    faults(&sim, serde_json::json!({"truncate_class": {"crypto": 0.0}})).await;
    let (status, totals) = sync_run(&client, store, "day-2").await;
    assert_eq!(status, RunStatus::Suspect, "{totals:?}");
    assert!(
        totals
            .suspect
            .iter()
            .any(|r| r.starts_with("crypto: the listing returned nothing")),
        "{totals:?}"
    );
    assert_eq!(delisted(store).await, 0);
    let events = store.pending_events(100_000).await.unwrap();
    assert!(events.iter().any(|e| e.event.kind == EventType::SyncSuspect));
    assert!(!events.iter().any(|e| e.event.kind == EventType::AssetDelisted));
}

async fn a_crypto_listing_cut_to_half_is_judged_against_crypto_alone_and_delists_nothing(store: &dyn Store) {
    let sim = sim(2_000).await;
    let client = client(&sim);
    assert_eq!(sync_run(&client, store, "day-1").await.0, RunStatus::Completed);

    faults(&sim, serde_json::json!({"truncate_class": {"crypto": 0.5}})).await;
    let (status, totals) = sync_run(&client, store, "day-2").await;
    assert_eq!(status, RunStatus::Suspect, "{totals:?}");
    let crypto = &totals.classes[&AssetClass::Crypto];
    assert!(crypto.unseen > crypto.delist_limit, "{crypto:?}");
    assert!(
        crypto.unseen < (totals.classes[&AssetClass::UsEquity].known_active / 20),
        "one fraction over every class would have let this through: {totals:?}"
    );
    assert_eq!(delisted(store).await, 0);

    // Listed in full again: nothing was lost, nothing comes back as "updated".
    faults(&sim, serde_json::json!({})).await;
    let (status, totals) = sync_run(&client, store, "day-3").await;
    assert_eq!(
        (status, totals.updated, totals.delisted),
        (RunStatus::Completed, 0, 0),
        "{totals:?}"
    );
}

async fn a_listed_asset_that_fails_validation_counts_as_seen_and_is_reported(store: &dyn Store) {
    let sim = sim(2_000).await;
    let client = client(&sim);
    // As the API has returned AMD: empty name, no fractionable. Stored.
    change(
        &sim,
        serde_json::json!({"add": [{"symbol": "AMDX", "exchange": "NASDAQ", "name": "", "omit": ["fractionable"]}]}),
    )
    .await;
    let (status, _) = sync_run(&client, store, "day-1").await;
    assert_eq!(status, RunStatus::Completed);
    let amd = store.assets_by_symbol(&Symbol::parse("AMDX").unwrap()).await.unwrap();
    assert_eq!(amd.len(), 1, "an asset without fractionable is stored");
    assert_eq!(amd[0].asset.fractionable, None);

    // One listed asset loses a field it cannot be used without.
    let victim = signal9_e2e::active_symbols(42, 2_000, 1).remove(0);
    change(
        &sim,
        serde_json::json!({"set_omit": [{"symbol": victim, "omit": ["status"]}]}),
    )
    .await;
    let (status, totals) = sync_run(&client, store, "day-2").await;
    assert_eq!(status, RunStatus::Completed, "{totals:?}");
    assert_eq!(
        totals.delisted, 0,
        "a listed asset is not delisted for failing validation"
    );
    assert!(totals.rejected >= 1);
    assert!(
        totals
            .rejections
            .iter()
            .any(|r| r.contains(&victim) && r.contains("status")),
        "{totals:?}"
    );
    let stored = store.assets_by_symbol(&Symbol::parse(&victim).unwrap()).await.unwrap();
    assert!(stored.iter().all(|a| a.delisted_at.is_none()));
}

async fn a_page_listed_too_long_ago_is_listed_again_before_the_run_is_compared(store: &dyn Store) {
    let sim = sim(2_000).await;
    let client = client(&sim);
    assert_eq!(sync_run(&client, store, "day-1").await.0, RunStatus::Completed);
    let symbols = signal9_e2e::active_symbols(42, 2_000, 2);

    // Day 2: the equity page is listed, the crypto page fails and is
    // replayed from the dead-letter queue later (here: after the window).
    let equity = slice(AssetClass::UsEquity);
    store.create_run("day-2", 2, chrono::Utc::now()).await.unwrap();
    let report = sync_slice(&client, store, &slice_query(&equity), Some("day-2"))
        .await
        .unwrap();
    store
        .record_page("day-2", &report.record("sync:day-2:us_equity", &equity))
        .await
        .unwrap();

    // In between, another run lists a new asset, and one asset leaves the API.
    change(
        &sim,
        serde_json::json!({"add": [{"symbol": "NEWCO", "exchange": "NYSE"}], "remove": [symbols[0]]}),
    )
    .await;
    assert_eq!(sync_run(&client, store, "extra").await.1.new, 1);
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    let crypto = slice(AssetClass::Crypto);
    let report = sync_slice(&client, store, &slice_query(&crypto), Some("day-2"))
        .await
        .unwrap();
    store
        .record_page("day-2", &report.record("sync:day-2:crypto", &crypto))
        .await
        .unwrap();
    let settings = ReconcileSettings {
        snapshot_window: Duration::from_secs(2),
        ..ReconcileSettings::default()
    };
    let (status, totals) = close_run(&client, store, "day-2", &settings).await.unwrap();
    assert_eq!(status, RunStatus::Completed, "{totals:?}");
    assert_eq!(totals.relisted_pages, 1, "the equity page was listed again");
    let newco = store.assets_by_symbol(&Symbol::parse("NEWCO").unwrap()).await.unwrap();
    assert!(newco[0].delisted_at.is_none(), "listed in between, not delisted");
    assert_eq!(newco[0].asset.status, AssetStatus::Active);
    let pages = store.page_records("day-2").await.unwrap();
    let equity_page = pages
        .iter()
        .find(|p| p.slice.asset_class == AssetClass::UsEquity)
        .unwrap();
    assert!(
        equity_page.listed_at > report.listed_at - chrono::Duration::seconds(1),
        "the record is the new listing"
    );
}

/// Each check, once on a SQLite file and once on DynamoDB tables (moto).
macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_dir, store) = super::temp_sqlite();
                    signal9_shared::store::Store::init(&store).await.unwrap();
                    super::$name(&store).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = super::fresh_dynamo("s9-sync").await;
                    super::$name(&store).await;
                    let _ = store.drop_tables().await;
                }
            )*
        }
    };
}

on_both_backends!(
    an_empty_crypto_listing_makes_the_run_suspect_and_delists_nothing,
    a_crypto_listing_cut_to_half_is_judged_against_crypto_alone_and_delists_nothing,
    a_listed_asset_that_fails_validation_counts_as_seen_and_is_reported,
    a_page_listed_too_long_ago_is_listed_again_before_the_run_is_compared
);
