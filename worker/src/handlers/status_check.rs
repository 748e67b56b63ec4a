//! `status-check`: one asset lookup, validated and upserted.

use chrono::Utc;

use signal9_alpaca::validate;
use signal9_shared::job::StatusCheck;
use signal9_shared::reply::{Detail, StatusCheckDetail};
use signal9_shared::store::AssetChange;

use super::Context;
use crate::outcome::Failure;

/// Looks the asset up (one call) and stores it.
pub(crate) async fn run(ctx: &Context, job: &StatusCheck) -> Result<Detail, Failure> {
    let response = ctx
        .client
        .get_asset(job.symbol.as_str())
        .await
        .map_err(|e| Failure::from_error(&e))?;
    let asset = validate::asset(&response.body).map_err(|e| Failure::from_error(&e))?;
    let writes = ctx
        .store
        .upsert_assets(std::slice::from_ref(&asset), Utc::now())
        .await
        .map_err(|e| Failure::from_error(&e))?;
    ctx.outbox_written.notify_one();
    let change = writes.first().map(|w| w.change).unwrap_or(AssetChange::Unchanged);
    Ok(Detail::StatusCheck(StatusCheckDetail {
        symbol: asset.symbol.to_string(),
        id: asset.id,
        status: asset.status,
        tradable: asset.tradable,
        change,
    }))
}
