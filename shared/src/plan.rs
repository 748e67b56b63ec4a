//! Sizing bar work before it costs a call: how many bars a range of one
//! series can hold (from the trading calendar), and how many symbols one
//! multi-symbol request should carry so that its pages come out full.
//!
//! `limit` counts bars across all the symbols of a request, so a request of
//! `k` symbols of `e` bars each costs `ceil(k·e / 10,000)` calls: only its
//! last page can be short. Packing picks `k` so that last page is as full as
//! possible, within a cap on the symbols list (URL length) and on the pages
//! of one request (how long one batch holds its messages).

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

use crate::bounds::{show, OutOfBounds, EARLIEST};
use crate::calendar::{self, SESSION_CLOSE_MIN, SESSION_OPEN_MIN};
use signal9_alpaca::MAX_LIMIT;
use signal9_alpaca::{Timeframe, TimeframeUnit};

/// Bars one page holds at most.
pub const PAGE_BARS: u64 = MAX_LIMIT as u64;

/// The most symbols in one request by default. A symbol is at most 21
/// characters (real ones rarely pass 9) and a comma is sent as `%2C`, so
/// even 200 of the longest stay under 4,800 characters: well inside the
/// 8 KB request line common proxies allow.
pub(crate) const DEFAULT_SYMBOLS_PER_REQUEST: usize = 200;

/// The most pages one request (and one fetch-bars job) may need by default:
/// 1,000,000 bars, about four years of one symbol's minute bars.
pub(crate) const DEFAULT_MAX_PAGES: u64 = 100;

/// How long after a bar's period ends it still counts as forming (late
/// trades, corrections): 15 minutes.
pub(crate) const DEFAULT_SETTLE: std::time::Duration = std::time::Duration::from_secs(900);

/// The limits a fetch works within: how requests are packed, and when a
/// fetched range has settled enough to be recorded as covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    /// Most symbols in one request.
    pub max_symbols: usize,
    /// Most pages one request may need.
    pub max_pages: u64,
    /// The settle time (`SIGNAL9_SETTLE_SECS`): see
    /// [`crate::ingest::BarsRequest::settles_at`].
    pub settle: std::time::Duration,
}

impl Default for Packing {
    fn default() -> Self {
        Packing {
            max_symbols: DEFAULT_SYMBOLS_PER_REQUEST,
            max_pages: DEFAULT_MAX_PAGES,
            settle: DEFAULT_SETTLE,
        }
    }
}

impl Packing {
    /// How many symbols of about `per_symbol` bars each one request should
    /// carry: the count whose last page comes out fullest, the larger on a
    /// tie, within the caps. At least one.
    pub fn symbols_per_request(&self, per_symbol: u64) -> usize {
        let cap = self.max_symbols.max(1);
        let e = per_symbol.max(1);
        if (cap as u64).saturating_mul(e) <= PAGE_BARS {
            return cap;
        }
        // Each whole number of pages gives one candidate: as many symbols
        // as fit in it.
        let mut candidates: Vec<(usize, f64)> = Vec::new();
        for pages in 1..=self.max_pages.max(1) {
            let k = usize::try_from((pages * PAGE_BARS) / e).unwrap_or(cap).min(cap);
            if k > 0 {
                let bars = k as u64 * e;
                candidates.push((k, bars as f64 / (calls_for(bars) * PAGE_BARS) as f64));
            }
            if k == cap {
                break;
            }
        }
        // The fullest pages win; within a point of the fullest, the larger
        // request (fewer requests, fewer short last pages in a batch tail).
        let fullest = candidates.iter().map(|(_, fill)| *fill).fold(0.0, f64::max);
        candidates
            .iter()
            .filter(|(_, fill)| *fill >= fullest - 0.01)
            .map(|(k, _)| *k)
            .max()
            .unwrap_or(1)
    }

    /// Splits `symbols` into requests of [`Packing::symbols_per_request`].
    pub fn pack<T: Clone>(&self, symbols: &[T], per_symbol: u64) -> Vec<Vec<T>> {
        symbols
            .chunks(self.symbols_per_request(per_symbol))
            .map(<[T]>::to_vec)
            .collect()
    }
}

/// The calls a request of `bars` bars costs: full pages, and one for an
/// empty answer.
pub fn calls_for(bars: u64) -> u64 {
    bars.div_ceil(PAGE_BARS).max(1)
}

/// The last instant an estimate looks at: 9999-12-31.
const LAST_ESTIMATED: DateTime<Utc> = match NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(date) => match date.and_hms_opt(23, 59, 59) {
        Some(t) => t.and_utc(),
        None => DateTime::<Utc>::MAX_UTC,
    },
    None => DateTime::<Utc>::MAX_UTC,
};

/// The most bars one series can have with `start <= t <= end`: one per
/// bar slot of every session in range (stocks: trading days, 04:00–20:00
/// New York for intraday bars; crypto: every day, around the clock). Real
/// series have gaps (a quiet minute has no bar), so this is an upper bound.
pub fn estimate_bars(timeframe: Timeframe, start: DateTime<Utc>, end: DateTime<Utc>, crypto: bool) -> u64 {
    // No bar exists before the earliest accepted date, and clamping the
    // far end keeps every step below in range and every loop bounded for
    // a caller that did not check its range at a door.
    let (start, end) = (start.max(EARLIEST), end.min(LAST_ESTIMATED));
    if end < start {
        return 0;
    }
    let day_of = |t: DateTime<Utc>| if crypto { t.date_naive() } else { calendar::ny_date(t) };
    let at = |d: NaiveDate, minutes: u32| {
        if crypto {
            Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()) + Duration::minutes(minutes.into())
        } else {
            calendar::ny_instant(d, minutes)
        }
    };
    let trades = |d: NaiveDate| crypto || calendar::is_trading_day(d);
    let (first, last) = (day_of(start), day_of(end));
    let days = first.iter_days().take_while(|d| *d <= last);
    match timeframe.unit() {
        TimeframeUnit::Minute | TimeframeUnit::Hour => {
            let step = timeframe.fixed_seconds().unwrap_or(60).max(60) / 60;
            let step = u32::try_from(step).unwrap_or(u32::MAX);
            let (open, close) = if crypto {
                (0, 24 * 60)
            } else {
                (SESSION_OPEN_MIN, SESSION_CLOSE_MIN)
            };
            let mut total = 0u64;
            for day in days.filter(|d| trades(*d)) {
                let mut bucket = open / step * step;
                // Whole days inside the range are counted at once.
                let (day_start, day_end) = (at(day, bucket), at(day, close));
                if day_start >= start && day_end <= end {
                    total += u64::from((close - bucket).div_ceil(step));
                    continue;
                }
                while bucket < close {
                    let t = at(day, bucket);
                    if t > end {
                        break;
                    }
                    total += u64::from(t >= start);
                    bucket += step;
                }
            }
            total
        }
        TimeframeUnit::Day => {
            let step = u64::from(timeframe.amount().max(1));
            let count = days
                .filter(|d| trades(*d) && at(*d, 0) >= start && at(*d, 0) <= end)
                .count() as u64;
            count.div_ceil(step)
        }
        TimeframeUnit::Week => {
            let weeks = (last - first).num_days() / 7 + 2;
            u64::try_from(weeks)
                .unwrap_or(0)
                .div_ceil(u64::from(timeframe.amount().max(1)))
        }
        TimeframeUnit::Month => {
            let months = (last.year() - first.year()) * 12 + last.month() as i32 - first.month() as i32 + 1;
            u64::try_from(months)
                .unwrap_or(0)
                .div_ceil(u64::from(timeframe.amount().max(1)))
        }
    }
}

/// Checks that a range of `timeframe` bars needs no more than `max_pages`
/// pages of 10,000 bars for one series (the same estimate the workers and
/// the backfill planner use). Call it only on a range [`crate::bounds::check_range`]
/// passed: the estimate walks the range's days.
pub fn check_pages(
    timeframe: Timeframe,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    crypto: bool,
    max_pages: u64,
) -> Result<u64, OutOfBounds> {
    let bars = estimate_bars(timeframe, start, end, crypto);
    let pages = bars.div_ceil(PAGE_BARS);
    if pages > max_pages {
        return Err(OutOfBounds(format!(
            "{timeframe} bars from {} to {} need about {pages} pages, more than the {max_pages} one job may need",
            show(start),
            show(end)
        )));
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_fits_its_pages_or_is_refused_permanently() {
        use signal9_alpaca::class::{Classify, ErrorClass};
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let (a, b) = (t("2026-01-01T00:00:00Z"), t("2026-02-01T00:00:00Z"));
        let minute: Timeframe = "1Min".parse().unwrap();
        let refused = check_pages(minute, t("1990-01-01T00:00:00Z"), b, true, 100).unwrap_err();
        assert!(refused.0.contains("more than the 100"), "{refused}");
        assert_eq!(check_pages(minute, a, b, false, 100), Ok(2));
        assert_eq!(refused.class(), ErrorClass::Permanent);
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_year_of_daily_bars_is_its_trading_days() {
        // 2024 had 252 NYSE trading days; a crypto pair trades all 366.
        let n = estimate_bars(
            Timeframe::DAY,
            t("2024-01-01T00:00:00Z"),
            t("2024-12-31T23:59:59Z"),
            false,
        );
        assert_eq!(n, 252);
        let crypto = estimate_bars(
            Timeframe::DAY,
            t("2024-01-01T00:00:00Z"),
            t("2024-12-31T23:59:59Z"),
            true,
        );
        assert_eq!(crypto, 366);
    }

    #[test]
    fn minute_bars_fill_the_extended_session_and_clip_at_the_edges() {
        // One full trading day: 04:00-20:00 New York is 960 minutes.
        let day = estimate_bars(
            Timeframe::MINUTE,
            t("2025-06-02T00:00:00Z"),
            t("2025-06-03T03:59:59Z"),
            false,
        );
        assert_eq!(day, 960);
        // 13:30-13:39 UTC (09:30-09:39 New York, summer): ten minutes.
        let ten = estimate_bars(
            Timeframe::MINUTE,
            t("2025-06-02T13:30:00Z"),
            t("2025-06-02T13:39:00Z"),
            false,
        );
        assert_eq!(ten, 10);
        // A weekend has none.
        let weekend = estimate_bars(
            Timeframe::MINUTE,
            t("2025-06-07T00:00:00Z"),
            t("2025-06-08T23:59:00Z"),
            false,
        );
        assert_eq!(weekend, 0);
        assert_eq!(
            estimate_bars(
                Timeframe::HOUR,
                t("2025-06-02T00:00:00Z"),
                t("2025-06-03T03:59:59Z"),
                false
            ),
            16
        );
    }

    #[test]
    fn packing_fills_the_last_page() {
        let packing = Packing::default();
        // A year of daily bars (250 each): 200 symbols = 50,000 bars = 5 full pages.
        assert_eq!(packing.symbols_per_request(250), 200);
        // 252 each: 198 symbols are 49,896 bars, 5 pages 99.8 % full; 200
        // would need a sixth page for 400 bars.
        let k = packing.symbols_per_request(252);
        assert_eq!(calls_for(k as u64 * 252), 5, "k = {k}");
        assert!(k >= 190, "k = {k}");
        // One bar each: the symbols cap decides.
        assert_eq!(packing.symbols_per_request(1), 200);
        // More than a page each: whole pages per request, capped.
        let minute_month = packing.symbols_per_request(20_160);
        assert!(minute_month as u64 * 20_160 <= 100 * PAGE_BARS);
        // A symbol above the page cap still gets a request of its own.
        assert_eq!(packing.symbols_per_request(5_000_000), 1);
        let groups = packing.pack(&(0..450).collect::<Vec<_>>(), 1);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), vec![200, 200, 50]);
    }
}
