//! One JSON page of bars from the store, paged as Alpaca pages: `limit`
//! bars across the symbols, in symbol order, with an opaque
//! `next_page_token`.

use super::query::{encode_token, BarsQuery};
use crate::{ApiError, AppState};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use signal9_alpaca::{Bar, Symbol};
use signal9_shared::store::SeriesKey;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// A window's bars, from the cache or the store; cached when `cacheable`
/// (covered, so they change only by an invalidation).
pub(crate) async fn read_window(
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
pub(crate) async fn take_bars(
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

pub(crate) fn json_str(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// A number as JSON: integral values without a fraction, as the API sends volumes.
pub(crate) fn number(out: &mut String, x: f64) {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        let _ = write!(out, "{}", x as i64);
    } else {
        let _ = write!(out, "{x}");
    }
}

pub(crate) fn write_bars(out: &mut String, bars: &[Bar]) {
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
