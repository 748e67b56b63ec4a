//! `sync-page`: list one slice of the universe (one call), store the valid
//! assets (each change with its event, in the outbox), and record the page
//! in its run. The worker that records a run's last page closes the run,
//! once ([`signal9_shared::sync::close_run`]): stale pages are listed again,
//! the per-class guard decides, and unseen assets are delisted or the run is
//! marked `suspect`.

use signal9_shared::telemetry::events::{Emit, SyncPageListed, SyncRunClosed};

use signal9_alpaca::class::ErrorClass;
use signal9_shared::job::{Job, SyncPage};
use signal9_shared::reply::{Detail, SyncPageDetail};
use signal9_shared::store::{RunStatus, StoreError};
use signal9_shared::sync::{self, slice_query};

use super::Context;
use crate::outcome::Failure;

/// How long a reconcile claim holds before another worker may take it over.
const RECONCILE_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

fn store_failure(error: StoreError) -> Failure {
    Failure::from_error(&error)
}

/// Lists, validates and upserts one slice; closes the run if it was the last page.
pub(crate) async fn run(ctx: &Context, job: &Job, page: &SyncPage) -> Result<Detail, Failure> {
    let run_id = job.run_id.as_deref();
    let report = sync::sync_slice(&ctx.client, ctx.store.as_ref(), &slice_query(page), run_id)
        .await
        .map_err(|e| Failure::from_error(&e))?;
    ctx.outbox_written.notify_one();
    SyncPageListed {
        new: report.new,
        updated: report.updated,
        unchanged: report.unchanged,
        status_changed: report.status_changes.len(),
        rejected: report.rejected.len(),
    }
    .emit();
    let record = report.record(&job.id, page);
    let summary = Detail::SyncPage(SyncPageDetail {
        listed: record.listed,
        new: record.new,
        updated: record.updated,
        unchanged: record.unchanged,
        status_changes: report.status_changes.clone(),
        rejected: record.rejected,
        rejected_seen: report.rejected_seen,
        rejections: record.rejections.clone(),
    });
    let Some(run_id) = run_id else {
        return Ok(summary);
    };
    if ctx.store.get_run(run_id).await.map_err(store_failure)?.is_none() {
        return Ok(summary);
    }
    let progress = ctx.store.record_page(run_id, &record).await.map_err(store_failure)?;
    if !progress.is_complete() {
        return Ok(summary);
    }
    if ctx
        .store
        .claim_reconcile(run_id, chrono::Utc::now(), RECONCILE_STALE_AFTER)
        .await
        .map_err(store_failure)?
    {
        let (status, totals) = sync::close_run(&ctx.client, ctx.store.as_ref(), run_id, &ctx.reconcile)
            .await
            .map_err(|e| Failure::from_error(&e))?;
        ctx.outbox_written.notify_one();
        SyncRunClosed {
            run_id,
            status: status.as_str(),
            delisted: totals.delisted,
            relisted_pages: u64::from(totals.relisted_pages),
        }
        .emit();
        return Ok(summary);
    }
    // Someone else holds the reconcile. While the run is open this page stays
    // unfinished and retries: should the holder have died, a retry after its
    // claim goes stale takes the reconcile over.
    let open = ctx
        .store
        .get_run(run_id)
        .await
        .map_err(store_failure)?
        .is_some_and(|r| r.status == RunStatus::Running);
    if open {
        return Err(Failure {
            class: ErrorClass::Transient,
            message: format!("run {run_id} is being reconciled by another worker"),
            deferred: false,
            dependency: None,
        });
    }
    Ok(summary)
}
