//! `sync-page`: list one slice of the universe (one call), store the valid
//! assets, and record the page in its run when the run exists.

use chrono::Utc;
use serde_json::{json, Value};

use signal9_shared::alpaca::AssetQuery;
use signal9_shared::ingest;
use signal9_shared::job::{Job, SyncPage};

use super::Context;
use crate::outcome::Failure;

/// Lists, validates and upserts one slice.
pub async fn run(ctx: &Context, job: &Job, page: &SyncPage) -> Result<Value, Failure> {
    let query = AssetQuery {
        status: page.status,
        class: Some(page.asset_class),
        exchange: page.exchange.clone(),
        attributes: vec![],
    };
    let report = ingest::sync_slice(&ctx.client, ctx.store.as_ref(), &query, Utc::now())
        .await
        .map_err(|e| Failure::from_error(&e))?;
    let rejected: Vec<String> = report.rejected.iter().take(20).map(ToString::to_string).collect();
    let result = json!({
        "listed": report.listed, "new": report.new, "updated": report.updated, "unchanged": report.unchanged,
        "status_changes": report.status_changes, "rejected": report.rejected.len(), "rejections": rejected,
    });
    if let Some(run_id) = &job.run_id {
        let known = ctx.store.get_run(run_id).await.map_err(|e| Failure::from_error(&e))?;
        if known.is_some() {
            ctx.store
                .record_page(run_id, &job.id, &result)
                .await
                .map_err(|e| Failure::from_error(&e))?;
        }
    }
    Ok(result)
}
