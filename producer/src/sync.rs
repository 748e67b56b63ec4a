//! `sync`: starts a run of the asset sync by publishing its `sync-page`
//! jobs, one per slice of the universe that one listing call returns.
//!
//! Job ids are deterministic (`sync:{run}:{slice}`) and the run is recorded
//! in the store, so triggering the same run again publishes only the pages
//! that are not done yet. The run is marked published once its pages are
//! confirmed; a run left unpublished, or with every page done but never
//! closed, is healed by [`heal_run`] (the scheduler calls it every tick).

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Args;

use signal9_alpaca::AssetClass;
use signal9_shared::job::{Job, Payload, Priority, SyncPage};
use signal9_shared::settings::StoreSettings;
use signal9_shared::store::{RunStatus, Store};

use crate::args::PublishOptions;
use crate::publish::publish_jobs;

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
            println!(
                "run {run_id}: {} in {:.1} s: pages {}/{}, assets seen {}, new {}, updated {}, unchanged {}, status changes {}, delisted {}, rejected {}, listing calls {}",
                run.status.as_str(),
                started.elapsed().as_secs_f64(),
                run.pages_done,
                run.pages_total,
                r.listed,
                r.new,
                r.updated,
                r.unchanged,
                r.status_changes,
                r.delisted,
                r.rejected,
                u64::from(run.pages_done) + u64::from(r.relisted_pages)
            );
            for reason in r.rejections.iter().take(5) {
                println!("  rejected (still counted as listed): {reason}");
            }
            if run.status == RunStatus::Suspect {
                bail!(
                    "run {run_id} is suspect: nothing was delisted ({} would have been): {}",
                    r.would_delist,
                    r.suspect.join("; ")
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
        .page_records(run_id)
        .await?
        .into_iter()
        .map(|page| page.page_id)
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
        store.mark_published(run_id, Utc::now()).await?;
        return Ok(());
    }
    publish_jobs(options, jobs).await?;
    store.mark_published(run_id, Utc::now()).await?;
    Ok(())
}

/// How long a run may stay unpublished before another scheduler publishes
/// its pages (its creator may still be publishing them).
pub const HEAL_PUBLISH_AFTER: chrono::Duration = chrono::Duration::minutes(1);
/// How long a run may sit with every page done but not closed before a page
/// is published again to close it (its reconcile claim goes stale after 120 s).
pub const HEAL_CLOSE_AFTER: chrono::Duration = chrono::Duration::minutes(3);
/// How long a published run may have pages not done before they are
/// published again (the snapshot window: reconcile lists stale pages anyway).
pub const HEAL_PAGES_AFTER: chrono::Duration = chrono::Duration::minutes(30);

/// What [`heal_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heal {
    /// The run needs nothing (closed, or progressing).
    Nothing,
    /// Its pages had never been published: published now.
    Published,
    /// Every page was done but the run never closed: one page published again.
    Reclosed,
    /// Pages still not done long after publishing: published again.
    Republished,
}

/// Completes a run that its creator left behind: pages never published (the
/// scheduler died between recording the run and publishing), or every page
/// done and the run still open (its last reconcile died and nothing retried
/// it). Page job ids are deterministic and a page is recorded once, so a
/// page published twice changes nothing but costs one listing call.
pub async fn heal_run(store: &dyn Store, options: &PublishOptions, run_id: &str) -> Result<Heal> {
    let Some(run) = store.get_run(run_id).await? else {
        return Ok(Heal::Nothing);
    };
    if run.status != RunStatus::Running {
        return Ok(Heal::Nothing);
    }
    let now = Utc::now();
    let Some(published_at) = run.published_at else {
        if now - run.started_at < HEAL_PUBLISH_AFTER {
            return Ok(Heal::Nothing);
        }
        println!("run {run_id}: its pages were never published; publishing them");
        start_run(store, options, run_id).await?;
        return Ok(Heal::Published);
    };
    if run.pages_done >= run.pages_total {
        let last_activity = [Some(published_at), run.reconcile_claimed_at]
            .into_iter()
            .flatten()
            .chain(store.page_records(run_id).await?.iter().map(|p| p.listed_at))
            .max()
            .unwrap_or(published_at);
        if now - last_activity < HEAL_CLOSE_AFTER {
            return Ok(Heal::Nothing);
        }
        let Some((slice, page)) = slices().into_iter().next() else {
            return Ok(Heal::Nothing);
        };
        println!(
            "run {run_id}: every page is done but the run never closed; publishing page {slice} again to close it"
        );
        let job = Job::new(
            format!("sync:{run_id}:{slice}"),
            Payload::SyncPage(page),
            Priority::Bulk,
            Some(run_id.to_owned()),
        );
        publish_jobs(options, vec![job]).await?;
        store.mark_published(run_id, now).await?;
        return Ok(Heal::Reclosed);
    }
    if now - published_at < HEAL_PAGES_AFTER {
        return Ok(Heal::Nothing);
    }
    println!(
        "run {run_id}: pages still not done {} min after publishing; publishing them again",
        (now - published_at).num_minutes()
    );
    start_run(store, options, run_id).await?;
    Ok(Heal::Republished)
}
