//! One request, page by page: each page validated, its bars written, the
//! coverage of finished series and the checkpoints recorded.

use super::plan::Planned;
use super::{BarsReport, BarsRequest, Checkpoint, IngestError, Resume};
use crate::store::{SeriesKey, Store, StoreError};
use signal9_alpaca::validate::{self, Duplicates};
use signal9_alpaca::{AlpacaClient, AlpacaError, BarsQuery, PageCursor, Symbol};
use std::collections::{BTreeMap, BTreeSet};
use tracing::Instrument;

/// Makes one request page by page: validates each page, writes its bars,
/// records coverage for the series it finished, then the checkpoints.
pub(crate) async fn stream_request(
    client: &AlpacaClient,
    store: &dyn Store,
    request: &BarsRequest,
    planned: &Planned,
    state: &mut BTreeMap<Symbol, Checkpoint>,
    closed: bool,
    report: &mut BarsReport,
) -> Result<(), IngestError> {
    let query = BarsQuery {
        symbols: planned.symbols.clone(),
        limit: Some(signal9_alpaca::MAX_LIMIT),
        range: request.range.between(planned.start, request.range.end),
    };
    // The pages: the client's cursor, from a checkpoint's token if any.
    let mut pages = PageCursor::new(planned.token.clone());
    // The last symbol a page reached: pages come in symbol order.
    let mut cursor: Option<Symbol> = None;
    loop {
        let page = client.bars_page(&query, pages.token()).await?;
        report.calls += 1;
        let bars = page.body.bars.unwrap_or_default();
        let empty = bars.values().all(Vec::is_empty);
        let next = pages.advance("GET bars", page.body.next_page_token, empty)?;
        let mut sets = Vec::new();
        let mut touched: BTreeSet<Symbol> = BTreeSet::new();
        for (name, list) in bars {
            // A symbol nobody asked for is not ours to store.
            let Some(symbol) = planned.symbols.iter().find(|s| s.as_str() == name) else {
                continue;
            };
            if list.is_empty() {
                continue;
            }
            if cursor.as_ref().is_some_and(|c| symbol < c) {
                return Err(lying("pages are not in symbol order"));
            }
            cursor = Some(symbol.clone());
            // A resumed request may name series this fetch does not own
            // (behind its cursor); only the fetch's own are written.
            let Some(checkpoint) = state.get_mut(symbol) else {
                continue;
            };
            if checkpoint.done || checkpoint.rejected.is_some() {
                continue;
            }
            touched.insert(symbol.clone());
            let duplicates = if symbol.is_crypto_pair() {
                Duplicates::LastWins
            } else {
                Duplicates::Reject
            };
            let valid = validate::bars(list, request.range.start, request.range.end, duplicates)
                .and_then(|valid| validate::continues(&valid, checkpoint.last, duplicates).map(|()| valid));
            match valid {
                Ok(valid) => {
                    checkpoint.last = valid.last().map(|b| b.time).or(checkpoint.last);
                    checkpoint.stored += valid.len();
                    sets.push((request.series(symbol), valid));
                }
                Err(rejection) => checkpoint.rejected = Some(rejection),
            }
        }
        let finished = next.is_none();
        // Series before the cursor are complete: the pages have moved on.
        let done: Vec<Symbol> = planned
            .symbols
            .iter()
            .filter(|s| finished || cursor.as_ref().is_some_and(|c| *s < c))
            .filter(|s| state.get(*s).is_some_and(|c| !c.done && c.rejected.is_none()))
            .cloned()
            .collect();
        for symbol in &done {
            if let Some(checkpoint) = state.get_mut(symbol) {
                checkpoint.done = true;
                checkpoint.resume = None;
                touched.insert(symbol.clone());
            }
        }
        if let (Some(symbol), Some(next)) = (cursor.as_ref().filter(|_| !finished), next.as_ref()) {
            if let Some(checkpoint) = state.get_mut(symbol).filter(|c| !c.done) {
                checkpoint.resume = Some(Resume {
                    token: next.clone(),
                    symbols: planned.symbols.clone(),
                });
                touched.insert(symbol.clone());
            }
        }
        let write = async {
            store.upsert_bar_sets(&sets).await?;
            if closed && !done.is_empty() {
                let keys: Vec<SeriesKey> = done.iter().map(|s| request.series(s)).collect();
                store
                    .add_coverage_many(&keys, request.range.start, request.range.end)
                    .await?;
            }
            // A series once done needs no checkpoint: a settled one is
            // answered by its coverage, an unsettled one is fetched afresh
            // by the next request (its last bars may have changed).
            let (gone, kept): (Vec<&Symbol>, Vec<&Symbol>) = touched.iter().partition(|s| done.contains(*s));
            if !gone.is_empty() {
                let keys: Vec<String> = gone.iter().map(|s| request.checkpoint_key(s)).collect();
                store.delete_checkpoints(&keys).await?;
            }
            let mut entries = Vec::with_capacity(kept.len());
            for symbol in kept {
                let body = serde_json::to_string(&state[symbol])
                    .map_err(|e| StoreError::Corrupt(format!("checkpoint of {symbol}: {e}")))?;
                entries.push((request.checkpoint_key(symbol), body));
            }
            store.put_checkpoints(&entries).await?;
            Ok::<(), StoreError>(())
        };
        write
            .instrument(tracing::info_span!(
                "store write",
                series = sets.len(),
                pages = pages.pages()
            ))
            .await?;
        if finished {
            return Ok(());
        }
    }
}

pub(crate) fn lying(detail: &str) -> IngestError {
    IngestError::Alpaca(AlpacaError::BadBody {
        endpoint: "GET bars",
        detail: detail.to_owned(),
    })
}
