//! Benchmark: what one asset sync run costs on DynamoDB (the local AWS-API
//! server, moto) and on SQLite, as the workers run it (`shared::sync`):
//! each page listed and recorded, then the run closed; then the outbox
//! cleared as the relay clears it (publishing itself is not counted).
//!
//! `bench-sync --assets 15000` runs two days against the simulator: day 1
//! finds every asset new (one `asset.listed` event each), day 2 finds every
//! asset unchanged (only the seen stamps). For each it prints the API calls,
//! the DynamoDB requests (writes and reads), the write units as AWS bills
//! them (item size rounded up to 1 KB; index writes not included) and the
//! wall time.

use alpaca_sim::{spawn, SimConfig};
use anyhow::{ensure, Result};
use signal9_alpaca::{AlpacaClient, AssetClass};
use signal9_e2e::{aws_endpoint, flag, sim_client, SIM_NOW};
use signal9_shared::job::SyncPage;
use signal9_shared::store::{DynamoStore, RunStatus, SqliteStore, Store};
use signal9_shared::sync::{close_run, slice_query, sync_slice, ReconcileSettings};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

async fn trading_calls(base: &str) -> Result<u64> {
    let stats: serde_json::Value = reqwest::get(format!("{base}/_sim/stats")).await?.json().await?;
    Ok(stats["apis"]["trading"]["accepted"].as_u64().unwrap_or(0))
}

/// One run, as the workers do it; returns the seconds it took.
async fn run(client: &AlpacaClient, store: &dyn Store, run_id: &str) -> Result<f64> {
    let started = Instant::now();
    let slices = [AssetClass::UsEquity, AssetClass::Crypto].map(|class| SyncPage {
        asset_class: class,
        exchange: None,
        status: None,
    });
    store.create_run(run_id, 2, chrono::Utc::now()).await?;
    for page in &slices {
        let report = sync_slice(client, store, &slice_query(page), Some(run_id)).await?;
        let id = format!("sync:{run_id}:{}", page.asset_class);
        store.record_page(run_id, &report.record(&id, page)).await?;
    }
    let (status, totals) = close_run(client, store, run_id, &ReconcileSettings::default()).await?;
    ensure!(
        status == RunStatus::Completed,
        "run {run_id} ended {status:?}: {totals:?}"
    );
    Ok(started.elapsed().as_secs_f64())
}

/// Clears the outbox as the relay does; returns (events, seconds).
async fn clear_outbox(store: &dyn Store) -> Result<(usize, f64)> {
    let started = Instant::now();
    let mut events = 0;
    loop {
        let pending = store.pending_events(500).await?;
        if pending.is_empty() {
            return Ok((events, started.elapsed().as_secs_f64()));
        }
        events += pending.len();
        store.events_sent(&pending).await?;
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    batch_writes: u64,
    item_writes: u64,
    write_units: u64,
    reads: u64,
}

fn snapshot(store: &DynamoStore) -> Snapshot {
    let c = store.counters();
    Snapshot {
        batch_writes: c.batch_writes.load(Ordering::Relaxed),
        item_writes: c.item_writes.load(Ordering::Relaxed),
        write_units: c.write_units.load(Ordering::Relaxed),
        reads: c.reads.load(Ordering::Relaxed),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let assets: usize = flag("--assets", 15_000);
    let sim = spawn(
        SimConfig {
            assets,
            now: Some(SIM_NOW.parse()?),
            limit: 0,
            ..SimConfig::default()
        },
        0,
    )
    .await?;
    let base = sim.base_url();
    let client = sim_client(&base, Duration::from_secs(120));

    let config = signal9_shared::aws::AwsTarget::local(aws_endpoint()).load().await;
    let prefix = format!("bench-sync-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dynamo = DynamoStore::from_config(&config, prefix);
    dynamo.init().await?;
    println!("sync of {assets} assets on DynamoDB (moto on this machine)");
    println!("| day | API calls | BatchWriteItem | single writes | reads | write units | WU per asset | run s | outbox events | outbox clear s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (day, run_id) in [(1, "day-1"), (2, "day-2")] {
        let calls = trading_calls(&base).await?;
        let before = snapshot(&dynamo);
        let seconds = run(&client, &dynamo, run_id).await?;
        let (events, clear) = clear_outbox(&dynamo).await?;
        let after = snapshot(&dynamo);
        let units = after.write_units - before.write_units;
        println!(
            "| {day} | {} | {} | {} | {} | {units} | {:.2} | {seconds:.1} | {events} | {clear:.1} |",
            trading_calls(&base).await? - calls,
            after.batch_writes - before.batch_writes,
            after.item_writes - before.item_writes,
            after.reads - before.reads,
            units as f64 / assets as f64,
        );
    }
    println!(
        "largest item written: {} bytes",
        dynamo.counters().largest_item.load(Ordering::Relaxed)
    );
    dynamo.drop_tables().await?;

    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(dir.path().join("bench.db"))?;
    sqlite.init().await?;
    for run_id in ["day-1", "day-2"] {
        let seconds = run(&client, &sqlite, run_id).await?;
        let (events, clear) = clear_outbox(&sqlite).await?;
        println!("SQLite {run_id}: run {seconds:.1} s, outbox {events} events cleared in {clear:.1} s");
    }
    Ok(())
}
