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

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tracing::Instrument;

use crate::plan::{self, Packing};
use crate::store::{SeriesKey, Store, StoreError};
use signal9_alpaca::class::{Classify, ErrorClass};
use signal9_alpaca::validate::{self, BarRejection, Duplicates};
use signal9_alpaca::{AlpacaClient, AlpacaError, BarRange, BarsQuery, PageCursor, Symbol};

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

/// A bar request for one or more symbols over an inclusive range.
#[derive(Debug, Clone, PartialEq)]
pub struct BarsRequest {
    /// The symbols (all stocks or all crypto pairs).
    pub symbols: Vec<Symbol>,
    /// The range of each.
    pub range: BarRange,
}

impl BarsRequest {
    /// The series key of one of the request's symbols.
    pub fn series(&self, symbol: &Symbol) -> SeriesKey {
        SeriesKey {
            symbol: symbol.clone(),
            timeframe: self.range.timeframe,
            adjustment: self.range.adjustment.clone(),
            feed: self.range.feed,
        }
    }

    /// When this range's last bar is final, so that the range may be
    /// recorded as covered: the end of the bar period holding `end`, plus
    /// `settle`. Intraday bars end `timeframe` after `end`; a daily, weekly
    /// or monthly stock bar ends with the extended hours (20:00 New York)
    /// of the period's last day; a crypto bar at the UTC midnight after it.
    pub fn settles_at(&self, settle: std::time::Duration) -> DateTime<Utc> {
        use chrono::{Datelike, Duration as Span};
        use signal9_alpaca::TimeframeUnit;
        let settle = Span::from_std(settle).unwrap_or(Span::days(1));
        let crypto = self.symbols.first().is_some_and(Symbol::is_crypto_pair);
        let amount = i64::from(self.range.timeframe.amount());
        let last_day = |date: chrono::NaiveDate| match self.range.timeframe.unit() {
            TimeframeUnit::Week => date
                .checked_add_days(chrono::Days::new(u64::from(6 - date.weekday().num_days_from_monday())))
                .unwrap_or(date),
            TimeframeUnit::Month => {
                // The last day of the period of `amount` months holding `date`.
                let months = i64::from(date.year()) * 12 + i64::from(date.month0());
                let next = months - months.rem_euclid(amount.max(1)) + amount;
                let month = u32::try_from(next.rem_euclid(12)).unwrap_or(0).saturating_add(1);
                chrono::NaiveDate::from_ymd_opt(i32::try_from(next.div_euclid(12)).unwrap_or(i32::MAX), month, 1)
                    .and_then(|d| d.pred_opt())
                    .unwrap_or(date)
            }
            _ => date,
        };
        let period_end = match self.range.timeframe.unit() {
            TimeframeUnit::Minute => self
                .range
                .end
                .checked_add_signed(Span::minutes(amount))
                .unwrap_or(self.range.end),
            TimeframeUnit::Hour => self
                .range
                .end
                .checked_add_signed(Span::hours(amount))
                .unwrap_or(self.range.end),
            _ if crypto => {
                let last = last_day(self.range.end.date_naive());
                let day = last.succ_opt().unwrap_or(last);
                day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
            }
            _ => crate::calendar::ny_instant(
                last_day(crate::calendar::ny_date(self.range.end)),
                crate::calendar::SESSION_CLOSE_MIN,
            ),
        };
        period_end
            .checked_add_signed(settle)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The most bars one of the request's series can hold.
    pub(crate) fn estimate_per_symbol(&self) -> u64 {
        let crypto = self.symbols.first().is_some_and(Symbol::is_crypto_pair);
        plan::estimate_bars(self.range.timeframe, self.range.start, self.range.end, crypto)
    }

    /// Where a symbol's progress in this range is kept.
    pub fn checkpoint_key(&self, symbol: &Symbol) -> String {
        format!(
            "bars|{}|{}|{}",
            self.series(symbol),
            self.range.start.timestamp_millis(),
            self.range.end.timestamp_millis()
        )
    }

    /// Refuses a request whose single series needs more than `max_pages`
    /// pages: one job must stay small enough to finish within a budget window
    /// or two; a longer range is split into several jobs (`signal9-producer
    /// backfill` does).
    pub fn check_size(&self, max_pages: u64) -> Result<(), IngestError> {
        let bars = self.estimate_per_symbol();
        let pages = bars.div_ceil(plan::PAGE_BARS);
        if pages > max_pages {
            return Err(IngestError::TooLarge(format!(
                "{} {} bars from {} to {} can be up to {bars} bars ({pages} pages) a symbol, more than the \
                 {max_pages} pages one job may need (SIGNAL9_MAX_JOB_PAGES); split the range into shorter jobs \
                 (signal9-producer backfill does)",
                self.symbols.first().map(Symbol::as_str).unwrap_or("?"),
                self.range.timeframe,
                self.range.start.to_rfc3339(),
                self.range.end.to_rfc3339(),
            )));
        }
        Ok(())
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

/// How far one series of one fetch range got, kept in the store between
/// pages (see the module's documentation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The time of the last bar stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<DateTime<Utc>>,
    /// Bars stored so far.
    #[serde(default)]
    pub stored: usize,
    /// Every bar of the range is stored.
    #[serde(default)]
    pub done: bool,
    /// Why the series was rejected, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<BarRejection>,
    /// For the series a request stopped in: how that request goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
}

/// A request's next page: the token is valid only for the same query, so
/// the query's symbols come with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Resume {
    /// The next page token.
    pub token: String,
    /// The symbols of the request the token belongs to.
    pub symbols: Vec<Symbol>,
}

impl Checkpoint {
    fn started(&self) -> bool {
        self.done || self.rejected.is_some() || self.last.is_some() || self.stored > 0
    }
}

/// One request to make: its symbols, where it starts, and the page token
/// to go on from.
#[derive(Debug, Clone, PartialEq)]
struct Planned {
    symbols: Vec<Symbol>,
    start: DateTime<Utc>,
    token: Option<String>,
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

/// The requests that finish what `state` has left: a stopped request goes
/// on with its page token when every symbol after its cursor is still to
/// fetch here; any other series that stopped part-way goes on alone from
/// its last bar; untouched series are packed together.
fn plan_requests(request: &BarsRequest, state: &BTreeMap<Symbol, Checkpoint>, packing: Packing) -> Vec<Planned> {
    let finished = |c: &Checkpoint| c.done || c.rejected.is_some();
    let mut untouched: BTreeSet<&Symbol> = state.iter().filter(|(_, c)| !c.started()).map(|(s, _)| s).collect();
    let mut planned = Vec::new();
    for (symbol, checkpoint) in state.iter().filter(|(_, c)| c.started() && !finished(c)) {
        let resumable = checkpoint.resume.as_ref().filter(|resume| {
            // The token goes on after this series' last bar: the request's
            // earlier symbols are behind it, its later ones must all still
            // be to fetch here (no series fetched twice, none not asked for).
            resume
                .symbols
                .iter()
                .filter(|s| *s > symbol)
                .all(|s| untouched.contains(s))
        });
        match resumable {
            Some(resume) => {
                for s in &resume.symbols {
                    untouched.remove(s);
                }
                planned.push(Planned {
                    symbols: resume.symbols.clone(),
                    start: request.range.start,
                    token: Some(resume.token.clone()),
                });
            }
            None => planned.push(Planned {
                symbols: vec![symbol.clone()],
                start: checkpoint
                    .last
                    .map_or(request.range.start, |t| {
                        t.checked_add_signed(chrono::Duration::seconds(1)).unwrap_or(t)
                    })
                    .max(request.range.start),
                token: None,
            }),
        }
    }
    let untouched: Vec<Symbol> = untouched.into_iter().cloned().collect();
    for symbols in packing.pack(&untouched, request.estimate_per_symbol()) {
        planned.push(Planned {
            symbols,
            start: request.range.start,
            token: None,
        });
    }
    planned
}

/// Makes one request page by page: validates each page, writes its bars,
/// records coverage for the series it finished, then the checkpoints.
async fn stream_request(
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
        limit: Some(signal9_alpaca::query::MAX_LIMIT),
        range: BarRange {
            timeframe: request.range.timeframe,
            start: planned.start,
            end: request.range.end,
            adjustment: request.range.adjustment.clone(),
            feed: request.range.feed,
        },
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

fn lying(detail: &str) -> IngestError {
    IngestError::Alpaca(AlpacaError::BadBody {
        endpoint: "GET bars",
        detail: detail.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use signal9_alpaca::Adjustment;
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
