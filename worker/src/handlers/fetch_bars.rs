//! `fetch-bars`: one multi-symbol request for a batch of compatible jobs;
//! each job's symbol is validated and stored on its own.

use chrono::Utc;

use signal9_shared::ingest::{self, BarsRequest, SymbolOutcome};
use signal9_shared::job::Payload;
use signal9_shared::reply::{BarsSource, Detail, FetchBarsDetail};

use super::Context;
use crate::outcome::Failure;
use crate::pending::Pending;

/// Runs a batch; returns one result per job, in the batch's order.
pub(crate) async fn run(ctx: &Context, batch: &[Pending]) -> Vec<Result<Detail, Failure>> {
    let payloads: Vec<_> = batch
        .iter()
        .filter_map(|p| match &p.job.payload {
            Payload::FetchBars(f) => Some(f),
            _ => None,
        })
        .collect();
    let Some(first) = payloads.first() else {
        return batch
            .iter()
            .map(|_| Err(Failure::permanent("not a fetch-bars job")))
            .collect();
    };
    let mut symbols: Vec<_> = payloads.iter().map(|p| p.symbol.clone()).collect();
    symbols.sort();
    symbols.dedup();
    let request = BarsRequest {
        symbols,
        range: first.range.clone(),
    };
    if let Err(error) = request.check_size(ctx.packing.max_pages) {
        return batch.iter().map(|_| Err(Failure::from_error(&error))).collect();
    }
    // The replies name their batch, so a caller can count its calls once.
    let batch_id = uuid::Uuid::new_v4().simple().to_string();
    let report = match ingest::fetch_bars(&ctx.client, ctx.store.as_ref(), &request, ctx.packing, Utc::now()).await {
        Ok(report) => report,
        Err(error) => return batch.iter().map(|_| Err(Failure::from_error(&error))).collect(),
    };
    batch
        .iter()
        .map(|pending| {
            let Payload::FetchBars(p) = &pending.job.payload else {
                return Err(Failure::permanent("not a fetch-bars job"));
            };
            match report.outcomes.get(&p.symbol) {
                Some(SymbolOutcome::Stored { bars }) => Ok(Detail::FetchBars(FetchBarsDetail {
                    symbol: p.symbol.to_string(),
                    bars: *bars as u64,
                    source: BarsSource::Api,
                    calls: Some(report.calls as u64),
                    batch: Some(batch_id.clone()),
                    resumed: Some(report.resumed > 0),
                })),
                Some(SymbolOutcome::Cached { bars }) => Ok(Detail::FetchBars(FetchBarsDetail {
                    symbol: p.symbol.to_string(),
                    bars: *bars as u64,
                    source: BarsSource::Store,
                    calls: None,
                    batch: None,
                    resumed: None,
                })),
                Some(SymbolOutcome::Rejected(rejection)) => Err(Failure::from_error(rejection)),
                None => Err(Failure::permanent("the batch produced no outcome for this symbol")),
            }
        })
        .collect()
}
