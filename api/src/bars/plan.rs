//! What a bars request needs: per symbol, the range cut where it stops
//! being settled, the part the store covers, and the interactive fetch jobs
//! for the rest ([`Plan`]).

use super::query::BarsQuery;
use crate::fetch::Need;
use crate::{ApiError, AppState};
use chrono::{DateTime, Duration, Utc};
use signal9_alpaca::Symbol;
use signal9_shared::job::FetchBars;
use std::sync::Arc;

/// Where a request's bars came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// All from the store, no job.
    Store,
    /// Every symbol's whole range was fetched.
    Fetched,
    /// Some from the store, some fetched.
    Mixed,
}

impl Source {
    /// The `X-Signal9-Source` value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Store => "store",
            Source::Fetched => "fetched",
            Source::Mixed => "mixed",
        }
    }
}

/// A recent fetch of an unsettled range by this process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fresh {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    at: DateTime<Utc>,
}

/// What must be fetched for a query, and where the answer will come from.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Ranges to fetch.
    pub(crate) needs: Vec<Need>,
    /// Unsettled ranges those fetch (remembered once fetched).
    pub(crate) fresh: Vec<(String, Fresh)>,
    /// Symbols with some part answered by the store.
    pub(crate) from_store: usize,
    /// Symbols whose whole range is fetched.
    pub(crate) fetched_whole: usize,
    /// Planning stopped here: the request needs at least this many jobs,
    /// more than one request may cause.
    pub(crate) over_cap: Option<u64>,
}

impl Plan {
    /// What fetching costs, in Alpaca calls: each job's pages, from the
    /// same estimate the workers size their requests by (an upper bound:
    /// a real series has gaps, and jobs of one request may share a call).
    pub(crate) fn calls(&self) -> u64 {
        self.needs
            .iter()
            .map(|need| {
                let f = &need.fetch;
                signal9_shared::plan::calls_for(signal9_shared::plan::estimate_bars(
                    f.range.timeframe,
                    f.range.start,
                    f.range.end,
                    f.symbol.is_crypto_pair(),
                ))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Stops planning: `more` jobs beyond those planned would be needed.
    fn stop(mut self, more: u64) -> Plan {
        let planned = u64::try_from(self.needs.len()).unwrap_or(u64::MAX);
        self.over_cap = Some(planned.saturating_add(more));
        self
    }

    /// The `X-Signal9-Source` of the answer.
    pub(crate) fn source(&self) -> Source {
        if self.needs.is_empty() {
            Source::Store
        } else if self.from_store == 0 {
            Source::Fetched
        } else {
            Source::Mixed
        }
    }
}

/// Splits `[start, end]` into ranges of at most `max_bars` estimated bars,
/// each sharing its first instant with the end of the one before (so
/// their coverage merges); `Err(parts)` when that takes more than `room`
/// parts (nothing is built: the request is over its cap).
pub(crate) fn split(
    query: &BarsQuery,
    symbol: &Symbol,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    max_bars: u64,
    room: usize,
) -> Result<Vec<FetchBars>, u64> {
    let estimate = signal9_shared::plan::estimate_bars(query.range.timeframe, start, end, symbol.is_crypto_pair());
    let parts = estimate.div_ceil(max_bars.max(1)).max(1);
    if parts > u64::try_from(room).unwrap_or(u64::MAX) {
        return Err(parts);
    }
    let span = (end - start) / i32::try_from(parts).unwrap_or(i32::MAX);
    Ok((0..parts)
        .map(|i| {
            let i = i32::try_from(i).unwrap_or(i32::MAX);
            let from = start + span * i;
            let to = if i + 1 == i32::try_from(parts).unwrap_or(i32::MAX) {
                end
            } else {
                start + span * (i + 1)
            };
            query.fetch(symbol, from, to)
        })
        .collect())
}

/// Decides, per symbol, what the store answers and what must be fetched.
/// Planning stops as soon as the jobs pass `max_jobs` ([`Plan::over_cap`]),
/// so a request no one will serve costs no more than that to refuse.
pub(crate) async fn plan(
    state: &AppState,
    query: &BarsQuery,
    now: DateTime<Utc>,
    max_jobs: usize,
) -> Result<Plan, ApiError> {
    let packing = state.settings.packing.packing();
    let max_bars = packing.max_pages * signal9_shared::plan::PAGE_BARS;
    let fresh_for = Duration::seconds(i64::try_from(state.settings.fresh_secs).unwrap_or(0));
    let mut plan = Plan::default();
    if query.range.start > query.range.end {
        // A start after now: nothing to fetch, and no bar to answer.
        return Ok(plan);
    }
    // Only the symbols this page can still reach.
    let symbols = query.symbols.iter().filter(|s| {
        query
            .after
            .as_ref()
            .is_none_or(|(after, _)| s.as_str() >= after.as_str())
    });
    for symbol in symbols {
        let series = query.series(symbol);
        let cut = query.settled_until(symbol, now, packing.settle);
        let mut stored = false;
        let mut fetched_all = true;
        if cut == Some(query.range.end) && state.cache.contains(&range_key(query, symbol)) {
            // Read from the store (its whole range covered) within the
            // cache's time: covered still, short of a corporate action.
            plan.from_store += 1;
            continue;
        }
        if let Some(cut) = cut {
            let until = state
                .store
                .covered_until(&series, query.range.start)
                .await
                .map_err(ApiError::store)?;
            match until {
                Some(until) if until >= cut => {
                    stored = true;
                    fetched_all = false;
                    if cut == query.range.end {
                        // Covered whole: later requests for the range skip
                        // this check until an invalidation or the TTL.
                        state.cache.put(range_key(query, symbol), Arc::new(Vec::new()));
                    }
                }
                Some(until) => {
                    stored = true;
                    fetched_all = false;
                    let room = max_jobs.saturating_sub(plan.needs.len());
                    match split(query, symbol, until, cut, max_bars, room) {
                        Ok(parts) => plan.needs.extend(parts.into_iter().map(|fetch| Need { fetch })),
                        Err(parts) => return Ok(plan.stop(parts)),
                    }
                }
                None => {
                    let room = max_jobs.saturating_sub(plan.needs.len());
                    match split(query, symbol, query.range.start, cut, max_bars, room) {
                        Ok(parts) => plan.needs.extend(parts.into_iter().map(|fetch| Need { fetch })),
                        Err(parts) => return Ok(plan.stop(parts)),
                    }
                }
            }
        }
        if cut != Some(query.range.end) {
            let from = cut.map_or(query.range.start, |c| c + Duration::seconds(1));
            let key = series.to_string();
            let recent = state
                .fresh
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&key)
                .copied();
            let is_fresh = recent.is_some_and(|f| {
                now - f.at < fresh_for
                    && f.from <= from
                    && (f.to >= query.range.end || f.to >= f.at - Duration::seconds(1))
            });
            if is_fresh {
                stored = true;
                fetched_all = false;
            } else if plan.needs.len() >= max_jobs {
                return Ok(plan.stop(1));
            } else {
                plan.needs.push(Need {
                    fetch: query.fetch(symbol, from, query.range.end),
                });
                plan.fresh.push((
                    key,
                    Fresh {
                        from,
                        to: query.range.end,
                        at: now,
                    },
                ));
            }
        }
        plan.from_store += usize::from(stored);
        plan.fetched_whole += usize::from(fetched_all);
    }
    Ok(plan)
}

/// The cache's key marking a symbol's whole range as covered (read from
/// the store with no fetch lately).
pub(crate) fn range_key(query: &BarsQuery, symbol: &Symbol) -> String {
    format!(
        "{}|c{}|{}",
        query.series(symbol),
        query.range.start.timestamp(),
        query.range.end.timestamp()
    )
}
