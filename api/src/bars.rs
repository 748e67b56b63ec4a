//! `GET /v2/stocks/bars`, `GET /v2/stocks/{symbol}/bars` and
//! `GET /v1beta3/crypto/us/bars`: Alpaca's parameters, JSON and pagination,
//! answered from the store.
//!
//! Per symbol, the range is cut where it stops being settled (see
//! `BarsRequest::settles_at`): the settled part is answered from the store
//! where its coverage reaches, and the rest of it is fetched by an
//! interactive job (and so becomes covered); the unsettled tail (today's
//! bars) is fetched by a job unless this process fetched it in the last
//! `--fresh-secs`. Then every bar comes from the store, paged as Alpaca
//! pages: `limit` bars across the symbols, in symbol order, with an opaque
//! `next_page_token`.

use axum::http::StatusCode;
use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use signal9_alpaca::BarRange;
use signal9_alpaca::{Adjustment, Bar, Symbol, Timeframe, TimeframeUnit};
use signal9_shared::ingest::BarsRequest;
use signal9_shared::job::FetchBars;
use signal9_shared::store::SeriesKey;

use crate::fetch::Need;
use crate::{ApiError, AppState};

/// Which data API a route belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Market {
    /// `/v2/stocks/...`.
    Stocks,
    /// `/v1beta3/crypto/us/...`.
    Crypto,
}

/// A checked bars request.
#[derive(Debug, Clone, PartialEq)]
pub struct BarsQuery {
    /// The symbols, sorted, without repeats.
    pub symbols: Vec<Symbol>,
    /// The range (its end never after now; adjustment `raw` and feed
    /// `None` for crypto).
    pub range: BarRange,
    /// Bars per page.
    pub limit: usize,
    /// Newest first within each symbol.
    pub desc: bool,
    /// Where the previous page stopped.
    pub after: Option<(String, DateTime<Utc>)>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// A page token: the last symbol and bar time of the page before.
pub fn encode_token(symbol: &str, t: DateTime<Utc>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{symbol}\u{1f}{}", t.timestamp()))
}

/// The longest page token read: a symbol and a timestamp, base64.
const MAX_TOKEN_LEN: usize = 128;

/// Reads a page token: `None` for anything [`encode_token`] did not make
/// (too long, not base64, not UTF-8, no separator, a time outside
/// chrono's range or the symbol not a symbol).
pub fn decode_token(token: &str) -> Option<(String, DateTime<Utc>)> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (symbol, secs) = text.split_once('\u{1f}')?;
    Symbol::parse(symbol).ok()?;
    Some((symbol.to_owned(), DateTime::from_timestamp(secs.parse().ok()?, 0)?))
}

impl BarsQuery {
    /// Checks the query string of a request (`single`: the symbol of
    /// `/v2/stocks/{symbol}/bars`), as the API does, at `now`.
    /// Every bound is [`signal9_shared::bounds`]': dates in its window, at
    /// most `max_symbols` symbols.
    pub fn parse(
        market: Market,
        single: Option<&str>,
        params: &HashMap<String, String>,
        now: DateTime<Utc>,
        max_symbols: usize,
    ) -> Result<BarsQuery, ApiError> {
        let param = |k: &str| params.get(k).map(String::as_str).filter(|s| !s.is_empty());
        let raw: Vec<&str> = match single {
            Some(s) => vec![s],
            None => match param("symbols") {
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .take(max_symbols.saturating_add(1))
                    .collect(),
                None => return Err(bad("missing symbols")),
            },
        };
        if raw.is_empty() {
            return Err(bad("missing symbols"));
        }
        if raw.len() > max_symbols {
            return Err(bad(format!(
                "too many symbols: at most {max_symbols} in one request (SIGNAL9_API_MAX_SYMBOLS)"
            )));
        }
        let mut symbols = Vec::with_capacity(raw.len());
        for text in raw {
            let symbol = Symbol::parse(text).map_err(|_| bad(format!("invalid symbol: {}", short(text))))?;
            if symbol.is_crypto_pair() != (market == Market::Crypto) {
                return Err(bad(match market {
                    Market::Stocks => format!(
                        "invalid symbol: {} is a crypto pair; use /v1beta3/crypto/us/bars",
                        short(text)
                    ),
                    Market::Crypto => format!("invalid symbol: {} is not a crypto pair (BASE/QUOTE)", short(text)),
                }));
            }
            symbols.push(symbol);
        }
        symbols.sort();
        symbols.dedup();
        let timeframe: Timeframe = param("timeframe")
            .ok_or_else(|| bad("missing timeframe"))?
            .parse()
            .map_err(|_| bad("invalid timeframe"))?;
        let day_start = match market {
            Market::Stocks => signal9_shared::calendar::ny_instant(signal9_shared::calendar::ny_date(now), 0),
            Market::Crypto => now.date_naive().and_hms_opt(0, 0, 0).map_or(now, |t| t.and_utc()),
        };
        let start = match param("start") {
            Some(s) => parse_time(s).ok_or_else(|| bad("invalid start"))?,
            None => day_start,
        };
        let end = match param("end") {
            Some(s) => parse_time(s).ok_or_else(|| bad("invalid end"))?,
            None => now,
        };
        for (name, t) in [("start", start), ("end", end)] {
            signal9_shared::bounds::check_instant(name, t, now).map_err(|e| bad(format!("invalid {name}: {e}")))?;
        }
        if end < start {
            return Err(bad("end should not be before start"));
        }
        let end = end.min(now);
        let limit = match param("limit").map(str::parse::<usize>) {
            None => 1000,
            Some(Ok(n)) if (1..=10_000).contains(&n) => n,
            Some(_) => return Err(bad("invalid limit: must be between 1 and 10000")),
        };
        let desc = match param("sort") {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err(bad("invalid sort: must be asc or desc")),
        };
        let (adjustment, feed) = match market {
            Market::Crypto => (Adjustment::raw(), None),
            Market::Stocks => (
                match param("adjustment") {
                    Some(a) => a
                        .parse()
                        .map_err(|_| bad(format!("invalid adjustment: {}", short(a))))?,
                    None => Adjustment::raw(),
                },
                match param("feed") {
                    Some(f) => Some(f.parse().map_err(|_| bad(format!("invalid feed: {}", short(f))))?),
                    None => None,
                },
            ),
        };
        let after = match param("page_token") {
            Some(token) => Some(decode_token(token).ok_or_else(|| bad("invalid page token"))?),
            None => None,
        };
        Ok(BarsQuery {
            symbols,
            limit,
            desc,
            after,
            range: BarRange {
                timeframe,
                start,
                end,
                adjustment,
                feed,
            },
        })
    }

    pub(crate) fn series(&self, symbol: &Symbol) -> SeriesKey {
        SeriesKey {
            symbol: symbol.clone(),
            timeframe: self.range.timeframe,
            adjustment: self.range.adjustment.clone(),
            feed: self.range.feed,
        }
    }

    fn request(&self, symbol: &Symbol, start: DateTime<Utc>, end: DateTime<Utc>) -> BarsRequest {
        BarsRequest {
            symbols: vec![symbol.clone()],
            range: BarRange {
                timeframe: self.range.timeframe,
                start,
                end,
                adjustment: self.range.adjustment.clone(),
                feed: self.range.feed,
            },
        }
    }

    fn fetch(&self, symbol: &Symbol, start: DateTime<Utc>, end: DateTime<Utc>) -> FetchBars {
        FetchBars {
            symbol: symbol.clone(),
            range: BarRange {
                timeframe: self.range.timeframe,
                start,
                end,
                adjustment: self.range.adjustment.clone(),
                feed: self.range.feed,
            },
        }
    }

    /// The last instant `t` in `[start, end]` whose range `[start, t]` has
    /// settled at `now`, if any.
    pub(crate) fn settled_until(
        &self,
        symbol: &Symbol,
        now: DateTime<Utc>,
        settle: std::time::Duration,
    ) -> Option<DateTime<Utc>> {
        let settled = |t: DateTime<Utc>| self.request(symbol, self.range.start, t).settles_at(settle) <= now;
        if settled(self.range.end) {
            return Some(self.range.end);
        }
        let candidates: Vec<DateTime<Utc>> = match self.range.timeframe.unit() {
            TimeframeUnit::Minute | TimeframeUnit::Hour => {
                let step = match self.range.timeframe.unit() {
                    TimeframeUnit::Minute => Duration::minutes(i64::from(self.range.timeframe.amount())),
                    _ => Duration::hours(i64::from(self.range.timeframe.amount())),
                };
                let back = now - Duration::from_std(settle).unwrap_or_default() - step * 2;
                let floored = DateTime::from_timestamp(back.timestamp() - back.timestamp().rem_euclid(60), 0);
                floored.into_iter().collect()
            }
            _ => (1..=40)
                .map(|k| {
                    let midnight = if symbol.is_crypto_pair() {
                        (now.date_naive() - Duration::days(k - 1))
                            .and_hms_opt(0, 0, 0)
                            .map_or(now, |t| t.and_utc())
                    } else {
                        signal9_shared::calendar::ny_instant(
                            signal9_shared::calendar::ny_date(now) - Duration::days(k - 1),
                            0,
                        )
                    };
                    midnight - Duration::seconds(1)
                })
                .collect(),
        };
        candidates
            .into_iter()
            .find(|t| *t >= self.range.start && *t < self.range.end && settled(*t))
    }
}

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
fn split(
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
fn range_key(query: &BarsQuery, symbol: &Symbol) -> String {
    format!(
        "{}|c{}|{}",
        query.series(symbol),
        query.range.start.timestamp(),
        query.range.end.timestamp()
    )
}

/// A window's bars, from the cache or the store; cached when `cacheable`
/// (covered, so they change only by an invalidation).
async fn read_window(
    state: &AppState,
    series: &SeriesKey,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cacheable: bool,
) -> Result<Arc<Vec<Bar>>, ApiError> {
    let key = format!("{series}|w{}|{}", from.timestamp(), to.timestamp());
    if cacheable {
        if let Some(bars) = state.cache.get(&key) {
            return Ok(bars);
        }
    }
    let bars = Arc::new(state.store.bars(series, from, to).await.map_err(ApiError::store)?);
    if cacheable {
        state.cache.put(key, bars.clone());
    }
    Ok(bars)
}

/// Up to `want` bars of one series inside `[from, to]`, oldest first or
/// (`desc`) newest first, read in windows from the page's position: the
/// first sized to hold `want` bars of the timeframe, each next one twice
/// as long (a series has nights, weekends and gaps), so a page's cost
/// follows its `limit`, not the length of the range behind it.
async fn take_bars(
    state: &AppState,
    series: &SeriesKey,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    desc: bool,
    want: usize,
    cacheable: bool,
) -> Result<Vec<Bar>, ApiError> {
    let mut taken: Vec<Bar> = Vec::new();
    if from > to || want == 0 {
        return Ok(taken);
    }
    let bar_secs = series.timeframe.fixed_seconds().unwrap_or(31 * 86_400).max(60);
    let first = i64::try_from(want).unwrap_or(i64::MAX).saturating_mul(bar_secs);
    let mut span = Duration::seconds(first.clamp(86_400, 3_650 * 86_400));
    let (mut lo, mut hi) = (from, to);
    loop {
        // The next window, from the position towards the far end.
        let (start, end) = if desc {
            (hi.checked_sub_signed(span).map_or(lo, |t| t.max(lo)), hi)
        } else {
            (lo, lo.checked_add_signed(span).map_or(hi, |t| t.min(hi)))
        };
        let bars = read_window(state, series, start, end, cacheable).await?;
        let room = want - taken.len();
        if desc {
            taken.extend(bars.iter().rev().take(room).copied());
        } else {
            taken.extend(bars.iter().take(room).copied());
        }
        let reached_the_end = if desc { start == lo } else { end == hi };
        if taken.len() >= want || reached_the_end {
            return Ok(taken);
        }
        if desc {
            hi = start - Duration::seconds(1);
        } else {
            lo = end + Duration::seconds(1);
        }
        span = span.checked_mul(2).unwrap_or(span);
    }
}

/// One page of the answer, as Alpaca's JSON: each symbol read from the
/// page's position for at most the bars the page still has room for,
/// plus one to know whether more follow.
pub(crate) async fn page(
    state: &AppState,
    query: &BarsQuery,
    single: bool,
    cacheable: bool,
) -> Result<String, ApiError> {
    let mut page: BTreeMap<&str, Vec<Bar>> = BTreeMap::new();
    let mut count = 0usize;
    let mut last: Option<(&str, DateTime<Utc>)> = None;
    let mut more = false;
    for symbol in &query.symbols {
        if let Some((after, _)) = &query.after {
            if symbol.as_str() < after.as_str() {
                continue;
            }
        }
        let resume = query
            .after
            .as_ref()
            .filter(|(after, _)| after == symbol.as_str())
            .map(|(_, t)| *t);
        let one = Duration::seconds(1);
        let range = match (resume, query.desc) {
            (None, _) => (query.range.start, query.range.end),
            (Some(r), false) => (
                r.checked_add_signed(one).unwrap_or(r).max(query.range.start),
                query.range.end,
            ),
            (Some(r), true) => (
                query.range.start,
                r.checked_sub_signed(one).unwrap_or(r).min(query.range.end),
            ),
        };
        let room = query.limit.saturating_sub(count);
        let mut taken = take_bars(state, &query.series(symbol), range, query.desc, room + 1, cacheable).await?;
        if taken.len() > room {
            taken.truncate(room);
            more = true;
        }
        count += taken.len();
        if let Some(bar) = taken.last() {
            last = Some((symbol.as_str(), bar.time));
        }
        if !taken.is_empty() {
            page.insert(symbol.as_str(), taken);
        }
        if more {
            break;
        }
    }
    let token = more.then(|| last.map(|(s, t)| encode_token(s, t))).flatten();
    let mut out = String::with_capacity(64 + count * 120);
    out.push('{');
    if single {
        let symbol = query.symbols.first().map(Symbol::as_str).unwrap_or_default();
        out.push_str("\"bars\":");
        match page.get(symbol) {
            Some(bars) => write_bars(&mut out, bars),
            None => out.push_str("null"),
        }
        let _ = write!(out, ",\"symbol\":{}", json_str(symbol));
    } else {
        out.push_str("\"bars\":{");
        for (i, (symbol, bars)) in page.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{}:", json_str(symbol));
            write_bars(&mut out, bars);
        }
        out.push('}');
    }
    match token {
        Some(token) => {
            let _ = write!(out, ",\"next_page_token\":{}", json_str(&token));
        }
        None => out.push_str(",\"next_page_token\":null"),
    }
    out.push('}');
    Ok(out)
}

fn json_str(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// A number as JSON: integral values without a fraction, as the API sends volumes.
fn number(out: &mut String, x: f64) {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        let _ = write!(out, "{}", x as i64);
    } else {
        let _ = write!(out, "{x}");
    }
}

fn write_bars(out: &mut String, bars: &[Bar]) {
    out.push('[');
    for (i, bar) in bars.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"t\":\"{}\",\"o\":",
            bar.time.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        number(out, bar.open);
        out.push_str(",\"h\":");
        number(out, bar.high);
        out.push_str(",\"l\":");
        number(out, bar.low);
        out.push_str(",\"c\":");
        number(out, bar.close);
        out.push_str(",\"v\":");
        number(out, bar.volume);
        let _ = write!(out, ",\"n\":{},\"vw\":", bar.trade_count);
        number(out, bar.vwap);
        out.push('}');
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn query(params: &[(&str, &str)], market: Market) -> Result<BarsQuery, ApiError> {
        let map = params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        BarsQuery::parse(market, None, &map, t("2026-12-04T18:00:00Z"), 200)
    }

    #[test]
    fn parameters_are_checked_as_the_api_checks_them() {
        let q = query(
            &[
                ("symbols", "MSFT,AAPL,MSFT"),
                ("timeframe", "1Day"),
                ("start", "2026-01-01"),
                ("limit", "10"),
            ],
            Market::Stocks,
        )
        .unwrap();
        assert_eq!(
            q.symbols.iter().map(Symbol::as_str).collect::<Vec<_>>(),
            ["AAPL", "MSFT"]
        );
        assert_eq!(q.range.end, t("2026-12-04T18:00:00Z"), "end defaults to now");
        for (params, message) in [
            (vec![("timeframe", "1Day")], "missing symbols"),
            (vec![("symbols", "AAPL")], "missing timeframe"),
            (
                vec![("symbols", "AAPL"), ("timeframe", "7Fortnight")],
                "invalid timeframe",
            ),
            (
                vec![("symbols", "AAPL"), ("timeframe", "1Day"), ("limit", "0")],
                "invalid limit",
            ),
            (
                vec![("symbols", "AAPL"), ("timeframe", "1Day"), ("sort", "up")],
                "invalid sort",
            ),
            (
                vec![("symbols", "AAPL"), ("timeframe", "1Day"), ("page_token", "!!")],
                "invalid page token",
            ),
            (vec![("symbols", "BTC/USD"), ("timeframe", "1Day")], "crypto pair"),
            (vec![("symbols", "AA PL"), ("timeframe", "1Day")], "invalid symbol"),
            (
                vec![
                    ("symbols", "AAPL"),
                    ("timeframe", "1Day"),
                    ("start", "2026-02-01"),
                    ("end", "2026-01-01"),
                ],
                "end should not be before start",
            ),
        ] {
            let err = query(&params, Market::Stocks).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(err.message.contains(message), "{params:?}: {}", err.message);
        }
        assert!(query(&[("symbols", "AAPL"), ("timeframe", "1Day")], Market::Crypto).is_err());
    }

    #[test]
    fn a_range_is_cut_where_it_stops_being_settled() {
        let now = t("2026-12-04T18:00:00Z");
        let q = query(
            &[("symbols", "AAPL"), ("timeframe", "1Day"), ("start", "2026-11-01")],
            Market::Stocks,
        )
        .unwrap();
        let symbol = Symbol::parse("AAPL").unwrap();
        let settle = std::time::Duration::from_secs(900);
        // Today (Dec 4, New York) has not settled; Dec 3 has (20:00 NY + 15 min).
        assert_eq!(q.settled_until(&symbol, now, settle), Some(t("2026-12-04T04:59:59Z")));
        let past = query(
            &[
                ("symbols", "AAPL"),
                ("timeframe", "1Day"),
                ("start", "2025-01-01"),
                ("end", "2025-12-31T23:59:59Z"),
            ],
            Market::Stocks,
        )
        .unwrap();
        assert_eq!(
            past.settled_until(&symbol, now, settle),
            Some(past.range.end),
            "a past year is settled whole"
        );
        let minutes = query(
            &[
                ("symbols", "AAPL"),
                ("timeframe", "1Min"),
                ("start", "2026-12-04T14:00:00Z"),
            ],
            Market::Stocks,
        )
        .unwrap();
        let cut = minutes.settled_until(&symbol, now, settle).unwrap();
        assert!(
            cut <= now - Duration::minutes(16) && cut > now - Duration::minutes(20),
            "{cut}"
        );
    }

    #[test]
    fn tokens_round_trip_and_numbers_print_as_the_api_prints_them() {
        let token = encode_token("BRK.B", t("2026-01-02T05:00:00Z"));
        assert_eq!(decode_token(&token), Some(("BRK.B".into(), t("2026-01-02T05:00:00Z"))));
        let mut out = String::new();
        write_bars(
            &mut out,
            &[Bar {
                time: t("2026-01-02T05:00:00Z"),
                open: 1.5,
                high: 2.0,
                low: 1.25,
                close: 1.75,
                volume: 1200.0,
                trade_count: 7,
                vwap: 1.6,
            }],
        );
        assert_eq!(
            out,
            r#"[{"t":"2026-01-02T05:00:00Z","o":1.5,"h":2,"l":1.25,"c":1.75,"v":1200,"n":7,"vw":1.6}]"#
        );
    }
}
