//! `signal9-producer migrate-store`: moves the bars an older version stored
//! one per row or item into chunks, page by page, verifying each page by
//! reading its bars back from the chunks, then drops the old table. Safe to
//! stop and run again: it goes on from the last verified page. Workers may
//! run meanwhile: reads consult both layouts until the end, and a bar a
//! worker wrote into a chunk wins over the old one of the same time.

use anyhow::{Context, Result};
use clap::Args;
use std::time::Instant;

use signal9_shared::settings::StoreSettings;
use signal9_shared::store::migrate::migrate_bars;

/// Settings of `migrate-store`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Bars read, merged into chunks and verified per page (and between two
    /// checkpoints of the progress).
    #[arg(long, default_value_t = 10_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(100..=100_000))]
    batch: usize,
    #[command(flatten)]
    store: StoreSettings,
}

/// Runs the migration to its end.
pub async fn run(args: MigrateArgs) -> Result<()> {
    let store = args.store.open().await.context("opening the store")?;
    store.init().await.context("creating the chunk table")?;
    let started = Instant::now();
    let report = migrate_bars(store.as_ref(), args.batch, |progress| {
        if progress.pages % 20 == 0 {
            println!(
                "migrate-store: {} bars in {} pages merged and verified",
                progress.bars, progress.pages
            );
        }
    })
    .await
    .context("migrating the per-bar data")?;
    let Some(migration) = report else {
        println!(
            "migrate-store: {}: no per-bar data, nothing to migrate",
            args.store.describe()
        );
        return Ok(());
    };
    let p = &migration.progress;
    println!(
        "migrate-store: {} bars of {} series merged into chunks and verified in {} pages{}, {:.1} s",
        p.bars,
        migration.series,
        p.pages,
        if migration.resumed { " (resumed)" } else { "" },
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        migration.dropped,
        "{} rows whose series key does not read were left in the per-bar table, which stays; see the log",
        p.skipped
    );
    println!("migrate-store: the per-bar table is dropped; bars are read from chunks alone");
    Ok(())
}
