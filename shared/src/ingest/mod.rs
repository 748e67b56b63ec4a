//! Bar ingestion, shared by every caller (the worker's handlers and the
//! direct ingest): fetch, validate and store the bars of a set of symbols.
//! Listing the asset universe lives in [`crate::sync`].
//!
//! Both are idempotent: running them twice leaves the store as running
//! them once, and a closed range the store already holds costs no call.
//!
//! Bars stream: each page is validated and written before the next is
//! asked for, so memory holds one page, whatever the range. After each page
//! a small [`Checkpoint`] per series records how far it got (the last bar
//! stored, and for the series the request stopped in, the next page token
//! and the request it belongs to). A fetch that stops (no token within the
//! wait, a redelivery, a SIGKILL) starts again where its checkpoints say,
//! so no page is paid for twice because of a deferral. A series' range is
//! recorded as covered only once all of it is stored.

mod checkpoint;
mod plan;
mod request;
mod stream;

use crate::plan::Packing;
pub(crate) use checkpoint::{Checkpoint, Resume};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use plan::plan_requests;
pub use request::BarsRequest;
use signal9_alpaca::validate::BarRejection;
use std::collections::BTreeMap;
use stream::stream_request;

use crate::store::{Store, StoreError};
use signal9_alpaca::class::{Classify, ErrorClass};
use signal9_alpaca::{AlpacaClient, AlpacaError, Symbol};

/// A failure of a whole ingestion step (not of one asset or symbol).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The API call failed.
    #[error(transparent)]
    Alpaca(#[from] AlpacaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request is larger than one job may be.
    #[error("{0}")]
    TooLarge(String),
}

impl Classify for IngestError {
    fn defers(&self) -> bool {
        matches!(self, IngestError::Alpaca(e) if e.defers())
    }

    fn dependency(&self) -> Option<&'static str> {
        match self {
            IngestError::Store(e) => e.dependency(),
            _ => None,
        }
    }

    fn class(&self) -> ErrorClass {
        match self {
            IngestError::Alpaca(e) => e.class(),
            IngestError::Store(e) => e.class(),
            IngestError::TooLarge(_) => ErrorClass::Permanent,
        }
    }
}

/// What became of one symbol of a bar request.
#[derive(Debug, Clone, PartialEq)]
pub enum SymbolOutcome {
    /// Fetched, validated and stored.
    Stored {
        /// Bars written.
        bars: usize,
    },
    /// A closed range the store held in full: answered with no call.
    Cached {
        /// Bars in the store for the range.
        bars: usize,
    },
    /// The API's bars failed validation; the bars of the pages before the
    /// bad one are stored, the rest are not, and no coverage is recorded.
    Rejected(BarRejection),
}

/// What a bar request did.
#[derive(Debug, Clone, Default)]
pub struct BarsReport {
    /// One outcome per requested symbol.
    pub outcomes: BTreeMap<Symbol, SymbolOutcome>,
    /// API calls spent (each one page).
    pub calls: u32,
    /// Series that went on from a checkpoint instead of their start.
    pub resumed: usize,
}

/// Fetches, validates and stores bars, packing symbols into multi-symbol
/// requests (see [`Packing`]). A settled range (see
/// [`BarsRequest::settles_at`]) that the store already covers is answered
/// from the store; a settled range once stored is recorded as covered. An
/// unsettled one is fetched and stored every time, never covered: its last
/// bar may still change. Pages stream to the store one at a time, and a
/// fetch that stopped goes on from its checkpoints.
pub async fn fetch_bars(
    client: &AlpacaClient,
    store: &dyn Store,
    request: &BarsRequest,
    packing: Packing,
    now: DateTime<Utc>,
) -> Result<BarsReport, IngestError> {
    let closed = now >= request.settles_at(packing.settle);
    let mut report = BarsReport::default();
    let mut to_fetch = Vec::new();
    // Which symbols the store answers: asked several at a time, since a
    // remote store spends a round trip on each.
    let cached: Vec<Result<Option<usize>, StoreError>> = futures::stream::iter(request.symbols.iter().cloned())
        .map(|symbol| async move {
            let series = request.series(&symbol);
            if closed && store.covers(&series, request.range.start, request.range.end).await? {
                Ok(Some(
                    store
                        .count_bars(&series, request.range.start, request.range.end)
                        .await?,
                ))
            } else {
                Ok(None)
            }
        })
        .buffered(16)
        .collect()
        .await;
    for (symbol, cached) in request.symbols.iter().zip(cached) {
        match cached? {
            Some(bars) => {
                report.outcomes.insert(symbol.clone(), SymbolOutcome::Cached { bars });
            }
            None => to_fetch.push(symbol.clone()),
        }
    }
    if to_fetch.is_empty() {
        return Ok(report);
    }
    let keys: Vec<String> = to_fetch.iter().map(|s| request.checkpoint_key(s)).collect();
    let saved = store.checkpoints(&keys).await?;
    let mut state: BTreeMap<Symbol, Checkpoint> = BTreeMap::new();
    for (symbol, key) in to_fetch.iter().zip(&keys) {
        let checkpoint = match saved.get(key).map(|body| serde_json::from_str::<Checkpoint>(body)) {
            Some(Ok(checkpoint)) => checkpoint,
            Some(Err(error)) => {
                tracing::warn!(%symbol, %error, "Unreadable fetch checkpoint; the series starts over");
                Checkpoint::default()
            }
            None => Checkpoint::default(),
        };
        report.resumed += usize::from(checkpoint.started());
        state.insert(symbol.clone(), checkpoint);
    }
    for planned in plan_requests(request, &state, packing) {
        stream_request(client, store, request, &planned, &mut state, closed, &mut report).await?;
    }
    for (symbol, checkpoint) in &state {
        let outcome = match &checkpoint.rejected {
            Some(rejection) => SymbolOutcome::Rejected(rejection.clone()),
            None => SymbolOutcome::Stored {
                bars: checkpoint.stored,
            },
        };
        report.outcomes.insert(symbol.clone(), outcome);
    }
    // Finished: the checkpoints have served (those of series answered from
    // the store too, in case a stop came between coverage and clean-up).
    let all: Vec<String> = request.symbols.iter().map(|s| request.checkpoint_key(s)).collect();
    store.delete_checkpoints(&all).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use signal9_alpaca::{Adjustment, BarRange};
    use std::time::Duration;

    #[test]
    fn a_settle_time_at_any_year_is_an_instant_not_a_panic() {
        // Found by the property tests (shared/tests/fuzz_parsers.rs): a
        // month period before year 0 overflowed the month number.
        for (timeframe, at) in [
            ("1Month", "-166240-11-20T04:56:01Z"),
            ("1Min", "+262142-12-31T23:59:59Z"),
        ] {
            let at: DateTime<Utc> = at.parse().unwrap();
            let request = BarsRequest {
                symbols: vec![Symbol::parse("AAPL").unwrap()],
                range: BarRange {
                    timeframe: timeframe.parse().unwrap(),
                    start: at,
                    end: at,
                    adjustment: Adjustment::raw(),
                    feed: None,
                },
            };
            let _ = request.settles_at(Duration::from_secs(900));
        }
    }

    fn request(symbol: &str, timeframe: &str, end: &str) -> BarsRequest {
        BarsRequest {
            symbols: vec![Symbol::parse(symbol).unwrap_or_else(|e| panic!("{e}"))],
            range: BarRange {
                timeframe: timeframe.parse().unwrap_or_else(|e| panic!("{e}")),
                start: "2026-01-01T00:00:00Z".parse().unwrap_or_default(),
                end: end.parse().unwrap_or_default(),
                adjustment: Adjustment::raw(),
                feed: None,
            },
        }
    }

    fn settles(symbol: &str, timeframe: &str, end: &str) -> String {
        request(symbol, timeframe, end)
            .settles_at(Duration::from_secs(900))
            .to_rfc3339()
    }

    #[test]
    fn a_range_settles_when_its_last_bar_has_ended_and_the_settle_time_passed() {
        // Intraday: the bar starting at `end` ends one timeframe later.
        assert_eq!(
            settles("AAPL", "1Min", "2026-11-20T15:00:00Z"),
            "2026-11-20T15:16:00+00:00"
        );
        assert_eq!(
            settles("AAPL", "1Hour", "2026-11-20T15:00:00Z"),
            "2026-11-20T16:15:00+00:00"
        );
        // A daily stock bar: that New York day's extended hours end at 20:00
        // (01:00 UTC the next day in November).
        assert_eq!(
            settles("AAPL", "1Day", "2026-11-20T05:00:00Z"),
            "2026-11-21T01:15:00+00:00"
        );
        assert_eq!(
            settles("AAPL", "1Day", "2026-11-21T04:59:59Z"),
            "2026-11-21T01:15:00+00:00"
        );
        // A week ends on its Sunday, a month on its last day, three months on
        // the quarter's.
        assert_eq!(
            settles("AAPL", "1Week", "2026-11-18T05:00:00Z"),
            "2026-11-23T01:15:00+00:00"
        );
        assert_eq!(
            settles("AAPL", "1Month", "2026-11-02T05:00:00Z"),
            "2026-12-01T01:15:00+00:00"
        );
        assert_eq!(
            settles("AAPL", "3Month", "2026-10-05T05:00:00Z"),
            "2027-01-01T01:15:00+00:00"
        );
        // Crypto days end at UTC midnight.
        assert_eq!(
            settles("BTC/USD", "1Day", "2026-11-20T00:00:00Z"),
            "2026-11-21T00:15:00+00:00"
        );
    }
}
