//! `sync-page`: list one slice of the universe (one call), store the valid
//! assets, publish what changed, and record the page in its run. The
//! worker that records a run's last page reconciles the run, once: assets
//! no page saw are marked delisted (never deleted) unless that would delist
//! more than the guard allows, in which case the run is marked `suspect`
//! and nothing is delisted.

use chrono::Utc;
use serde_json::{json, Value};
use std::collections::HashSet;

use signal9_shared::alpaca::{AssetClass, AssetQuery, AssetStatus};
use signal9_shared::events::{Event, EventType};
use signal9_shared::ingest;
use signal9_shared::job::{Job, SyncPage};
use signal9_shared::store::{AssetFilter, RunStatus, StoreError};

use super::{Context, Events};
use crate::outcome::Failure;

/// How long a reconcile claim holds before another worker may take it over.
const RECONCILE_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

fn store_failure(error: StoreError) -> Failure {
    Failure::from_error(&error)
}

/// Lists, validates and upserts one slice; reconciles the run if it was the last page.
pub async fn run(ctx: &Context, events: &Events, job: &Job, page: &SyncPage) -> Result<Value, Failure> {
    let query = AssetQuery {
        status: page.status,
        class: Some(page.asset_class),
        exchange: page.exchange.clone(),
        attributes: vec![],
    };
    let report = ingest::sync_slice(&ctx.client, ctx.store.as_ref(), &query, Utc::now())
        .await
        .map_err(|e| Failure::from_error(&e))?;
    let run_id = job.run_id.as_deref();
    let metrics = signal9_shared::telemetry::metrics::get();
    metrics.sync_pages.with_label_values(&["listed"]).inc();
    for (change, n) in [
        ("new", report.new),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
        ("status_changed", report.status_changes.len()),
        ("rejected", report.rejected.len()),
    ] {
        metrics.sync_assets.with_label_values(&[change]).inc_by(n as u64);
    }
    for asset in &report.new_assets {
        events.emit(Event::listed(asset, run_id)).await;
    }
    for change in &report.status_changes {
        events
            .emit(Event::new(EventType::AssetStatusChanged, run_id, json!(change)))
            .await;
    }
    let rejected: Vec<String> = report.rejected.iter().take(20).map(ToString::to_string).collect();
    let summary = json!({
        "listed": report.listed, "new": report.new, "updated": report.updated, "unchanged": report.unchanged,
        "status_changes": report.status_changes, "rejected": report.rejected.len(), "rejections": rejected,
    });
    let Some(run_id) = run_id else {
        return Ok(summary);
    };
    if ctx.store.get_run(run_id).await.map_err(store_failure)?.is_none() {
        return Ok(summary);
    }
    // The page's record carries what reconcile needs: its class and every id it saw.
    let mut record = summary.clone();
    record["asset_class"] = json!(page.asset_class);
    record["seen_ids"] = json!(report.seen_ids);
    let progress = ctx
        .store
        .record_page(run_id, &job.id, &record)
        .await
        .map_err(store_failure)?;
    if !progress.is_complete() {
        return Ok(summary);
    }
    if ctx
        .store
        .claim_reconcile(run_id, Utc::now(), RECONCILE_STALE_AFTER)
        .await
        .map_err(store_failure)?
    {
        reconcile(ctx, events, run_id).await?;
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
            class: signal9_shared::error::ErrorClass::Transient,
            message: format!("run {run_id} is being reconciled by another worker"),
            deferred: false,
        });
    }
    Ok(summary)
}

/// Closes a run whose pages are all done. Called by exactly one worker.
async fn reconcile(ctx: &Context, events: &Events, run_id: &str) -> Result<(), Failure> {
    let pages = ctx.store.page_results(run_id).await.map_err(store_failure)?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut classes: HashSet<AssetClass> = HashSet::new();
    let mut totals = json!({"listed": 0, "new": 0, "updated": 0, "unchanged": 0, "status_changes": 0, "rejected": 0});
    for (_, page) in &pages {
        seen.extend(
            page["seen_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned)),
        );
        if let Some(class) = page["asset_class"].as_str().and_then(|c| c.parse().ok()) {
            classes.insert(class);
        }
        for key in ["listed", "new", "updated", "unchanged", "rejected"] {
            totals[key] = json!(totals[key].as_u64().unwrap_or(0) + page[key].as_u64().unwrap_or(0));
        }
        let changes = page["status_changes"].as_array().map_or(0, Vec::len) as u64;
        totals["status_changes"] = json!(totals["status_changes"].as_u64().unwrap_or(0) + changes);
    }
    let mut known_active = 0usize;
    let mut missing: Vec<(String, String)> = Vec::new();
    for class in &classes {
        let filter = AssetFilter {
            class: Some(*class),
            status: None,
            include_delisted: false,
        };
        for stored in ctx.store.list_assets(&filter).await.map_err(store_failure)? {
            if stored.asset.status == AssetStatus::Active {
                known_active += 1;
            }
            if !seen.contains(&stored.asset.id) {
                missing.push((stored.asset.id.clone(), stored.asset.symbol.to_string()));
            }
        }
    }
    let allowed = (known_active as f64 * ctx.max_delist_fraction).floor() as usize;
    let now = Utc::now();
    totals["pages"] = json!(pages.len());
    totals["known_active"] = json!(known_active);
    if missing.len() > allowed {
        totals["would_delist"] = json!(missing.len());
        totals["delist_limit"] = json!(allowed);
        tracing::error!(
            run_id,
            would_delist = missing.len(),
            known_active,
            allowed,
            "Sync run is suspect: it would delist more than the guard allows; nothing delisted"
        );
        ctx.store
            .finish_run(run_id, RunStatus::Suspect, &totals, now)
            .await
            .map_err(store_failure)?;
        signal9_shared::telemetry::metrics::get()
            .sync_runs
            .with_label_values(&["suspect"])
            .inc();
        events
            .emit(Event::new(EventType::SyncSuspect, Some(run_id), totals))
            .await;
        return Ok(());
    }
    let ids: Vec<String> = missing.iter().map(|(id, _)| id.clone()).collect();
    let delisted = ctx.store.mark_delisted(&ids, now).await.map_err(store_failure)?;
    for (id, symbol) in &missing {
        events
            .emit(Event::new(
                EventType::AssetDelisted,
                Some(run_id),
                json!({"asset_id": id, "symbol": symbol}),
            ))
            .await;
    }
    totals["delisted"] = json!(delisted);
    ctx.store
        .finish_run(run_id, RunStatus::Completed, &totals, now)
        .await
        .map_err(store_failure)?;
    let metrics = signal9_shared::telemetry::metrics::get();
    metrics.sync_runs.with_label_values(&["completed"]).inc();
    metrics
        .sync_assets
        .with_label_values(&["delisted"])
        .inc_by(delisted as u64);
    tracing::info!(run_id, delisted, "Sync run reconciled and closed");
    events
        .emit(Event::new(EventType::SyncCompleted, Some(run_id), totals))
        .await;
    Ok(())
}
