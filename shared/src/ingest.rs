//! Bar ingestion, shared by every caller (the worker's handlers and the
//! direct ingest): fetch, validate and store the bars of a set of symbols.
//! Listing the asset universe lives in [`crate::sync`].
//!
//! Both are idempotent: running them twice leaves the store as running
//! them once, and a closed range the store already holds costs no call.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::BTreeMap;
use tracing::Instrument;

use crate::alpaca::{Adjustment, AlpacaClient, AlpacaError, BarsQuery, Feed, Symbol, Timeframe};
use crate::error::{Classify, ErrorClass};
use crate::store::{SeriesKey, Store, StoreError};
use crate::validate::{self, BarRejection, Duplicates};

/// The most symbols in one multi-symbol request by default: long symbol
/// lists are refused by common proxies, and the API documents no maximum.
pub const DEFAULT_SYMBOLS_PER_CALL: usize = 200;

/// A failure of a whole ingestion step (not of one asset or symbol).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The API call failed.
    #[error(transparent)]
    Alpaca(#[from] AlpacaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for IngestError {
    fn defers(&self) -> bool {
        matches!(self, IngestError::Alpaca(e) if e.defers())
    }

    fn class(&self) -> ErrorClass {
        match self {
            IngestError::Alpaca(e) => e.class(),
            IngestError::Store(e) => e.class(),
        }
    }
}

/// A bar request for one or more symbols over an inclusive range.
#[derive(Debug, Clone, PartialEq)]
pub struct BarsRequest {
    /// The symbols (all stocks or all crypto pairs).
    pub symbols: Vec<Symbol>,
    /// Bar length.
    pub timeframe: Timeframe,
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Inclusive end.
    pub end: DateTime<Utc>,
    /// Adjustment.
    pub adjustment: Adjustment,
    /// Feed (API default when `None`).
    pub feed: Option<Feed>,
}

impl BarsRequest {
    /// The series key of one of the request's symbols.
    pub fn series(&self, symbol: &Symbol) -> SeriesKey {
        SeriesKey {
            symbol: symbol.clone(),
            timeframe: self.timeframe,
            adjustment: self.adjustment.clone(),
            feed: self.feed,
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
    /// The API's bars failed validation; nothing was stored.
    Rejected(BarRejection),
}

/// What a bar request did.
#[derive(Debug, Clone, Default)]
pub struct BarsReport {
    /// One outcome per requested symbol.
    pub outcomes: BTreeMap<Symbol, SymbolOutcome>,
    /// API calls spent.
    pub calls: u32,
}

/// Fetches, validates and stores bars, coalescing symbols into multi-symbol
/// requests of at most `per_call` symbols. A closed range (ending before
/// `now`) that the store already covers is answered from the store; a
/// stored closed range is recorded as covered.
pub async fn fetch_bars(
    client: &AlpacaClient,
    store: &dyn Store,
    request: &BarsRequest,
    per_call: usize,
    now: DateTime<Utc>,
) -> Result<BarsReport, IngestError> {
    let closed = request.end < now;
    let mut report = BarsReport::default();
    let mut to_fetch = Vec::new();
    // Which symbols the store answers: asked several at a time, since a
    // remote store spends a round trip on each.
    let cached: Vec<Result<Option<usize>, StoreError>> = futures::stream::iter(request.symbols.iter().cloned())
        .map(|symbol| async move {
            let series = request.series(&symbol);
            if closed && store.covers(&series, request.start, request.end).await? {
                Ok(Some(store.bars(&series, request.start, request.end).await?.len()))
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
    for chunk in to_fetch.chunks(per_call.max(1)) {
        let query = BarsQuery {
            symbols: chunk.to_vec(),
            timeframe: request.timeframe,
            start: request.start,
            end: request.end,
            adjustment: request.adjustment.clone(),
            feed: request.feed,
            limit: Some(crate::alpaca::query::MAX_LIMIT),
        };
        let mut fetched = client.fetch_bars(&query).await?;
        report.calls += fetched.calls;
        // The valid bars of the whole chunk go to the store in one call, so a
        // backend can pack them into few writes.
        let mut sets = Vec::new();
        for symbol in chunk {
            let bars = fetched.bars.remove(symbol.as_str()).unwrap_or_default();
            let duplicates = if symbol.is_crypto_pair() {
                Duplicates::LastWins
            } else {
                Duplicates::Reject
            };
            match validate::bars(bars, request.start, request.end, duplicates) {
                Ok(valid) => sets.push((request.series(symbol), valid)),
                Err(rejection) => {
                    report
                        .outcomes
                        .insert(symbol.clone(), SymbolOutcome::Rejected(rejection));
                }
            }
        }
        let write = async {
            store.upsert_bar_sets(&sets).await?;
            if closed {
                let keys: Vec<SeriesKey> = sets.iter().map(|(key, _)| key.clone()).collect();
                store.add_coverage_many(&keys, request.start, request.end).await?;
            }
            Ok::<(), StoreError>(())
        };
        write
            .instrument(tracing::info_span!("store write", series = sets.len()))
            .await?;
        for (series, bars) in &sets {
            report
                .outcomes
                .insert(series.symbol.clone(), SymbolOutcome::Stored { bars: bars.len() });
        }
    }
    Ok(report)
}
