//! `sync`: starts a run of the asset sync by publishing its `sync-page`
//! jobs, one per slice of the universe that one listing call returns.
//!
//! Job ids are deterministic (`sync:{run}:{slice}`) and the run is recorded
//! in the store, so triggering the same run again publishes only the pages
//! that are not done yet. Reconciling a finished run (delisting, events) is
//! not built yet.

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Args;

use signal9_shared::alpaca::AssetClass;
use signal9_shared::config::StoreSettings;
use signal9_shared::job::{Job, Payload, Priority, SyncPage};
use signal9_shared::store::{RunStatus, Store};

use crate::publish::{publish_jobs, PublishOptions};

/// `sync` settings.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The run id; the UTC date by default.
    #[arg(long)]
    run_id: Option<String>,
    #[command(flatten)]
    store: StoreSettings,
    #[command(flatten)]
    options: PublishOptions,
}

/// The slices one run lists: one listing call each.
pub fn slices() -> Vec<(String, SyncPage)> {
    [AssetClass::UsEquity, AssetClass::Crypto]
        .into_iter()
        .map(|class| {
            (
                class.as_str().to_owned(),
                SyncPage {
                    asset_class: class,
                    exchange: None,
                    status: None,
                },
            )
        })
        .collect()
}

/// Publishes the run's pages that are not done yet.
pub async fn run(args: SyncArgs) -> Result<()> {
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| Utc::now().date_naive().to_string());
    let store = args.store.open().await.context("opening the store")?;
    let started = std::time::Instant::now();
    start_run(store.as_ref(), &args.options, &run_id).await?;
    let Some(timeout) = args.options.wait() else {
        return Ok(());
    };
    // The pages are done; wait for the reconcile to close the run.
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let run = store
            .get_run(&run_id)
            .await?
            .context("the run disappeared from the store")?;
        if run.status != RunStatus::Running {
            let r = run.result.unwrap_or_default();
            let n = |k: &str| r[k].as_u64().unwrap_or(0);
            println!(
                "run {run_id}: {} in {:.1} s: pages {}/{}, assets seen {}, new {}, updated {}, unchanged {}, status changes {}, delisted {}, rejected {}, listing calls {}",
                run.status.as_str(),
                started.elapsed().as_secs_f64(),
                run.pages_done,
                run.pages_total,
                n("listed"),
                n("new"),
                n("updated"),
                n("unchanged"),
                n("status_changes"),
                n("delisted"),
                n("rejected"),
                run.pages_done
            );
            if run.status == RunStatus::Suspect {
                bail!(
                    "run {run_id} is suspect: it would delist {} assets, more than the limit of {}; nothing was delisted",
                    n("would_delist"),
                    n("delist_limit")
                );
            }
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "run {run_id} did not close within the wait: {}/{} pages done",
                run.pages_done,
                run.pages_total
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Creates the run (if new) and publishes its pages that are not done.
pub async fn start_run(store: &dyn Store, options: &PublishOptions, run_id: &str) -> Result<()> {
    let slices = slices();
    let created = store
        .create_run(run_id, u32::try_from(slices.len()).unwrap_or(u32::MAX), Utc::now())
        .await?;
    let done: Vec<String> = store
        .page_results(run_id)
        .await?
        .into_iter()
        .map(|(page, _)| page)
        .collect();
    let jobs: Vec<Job> = slices
        .into_iter()
        .map(|(slice, page)| {
            Job::new(
                format!("sync:{run_id}:{slice}"),
                Payload::SyncPage(page),
                Priority::Bulk,
                Some(run_id.to_owned()),
            )
        })
        .filter(|job| !done.contains(&job.id))
        .collect();
    println!(
        "run {run_id}: {} ({} pages to publish)",
        if created { "started" } else { "resumed" },
        jobs.len()
    );
    if jobs.is_empty() {
        println!("run {run_id}: every page is already done; nothing published");
        return Ok(());
    }
    publish_jobs(options, jobs).await
}
