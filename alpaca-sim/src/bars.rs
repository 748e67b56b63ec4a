//! Simulated bars: which bar times exist, and what each bar holds.
//!
//! Values are a pure function of (seed, symbol, timeframe, bar time), so any
//! page can be produced without state and the same query always returns the
//! same bars. Stocks trade on the NYSE calendar: daily bars stamped at
//! midnight New York time, intraday bars from 04:00 to 20:00 New York time
//! (extended hours included), with some minutes absent for lack of trades.
//! Crypto trades around the clock, stamped in UTC.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};
use std::ops::ControlFlow;

use crate::calendar::{self, ny_date, ny_instant, SESSION_CLOSE_MIN, SESSION_OPEN_MIN};
pub use crate::prices::Market;
use crate::prices::{hash_str, level, splitmix, unit};

/// A bar length as the sim understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// N minutes, 1–59.
    Min(u32),
    /// N hours, 1–23.
    Hour(u32),
    /// One day.
    Day,
    /// One week.
    Week,
    /// N months: 1, 2, 3, 4, 6 or 12.
    Month(u32),
}

impl Frame {
    /// Parses the API's timeframe forms (`5Min`, `5T`, `1Hour`, `1H`, `1Day`, `1D`, `1Week`, `1W`, `3Month`, `3M`).
    pub fn parse(s: &str) -> Option<Frame> {
        let split = s.find(|c: char| !c.is_ascii_digit())?;
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() || digits.len() > 2 || digits.starts_with('0') {
            return None;
        }
        let n: u32 = digits.parse().ok()?;
        match unit {
            "Min" | "T" if (1..=59).contains(&n) => Some(Frame::Min(n)),
            "Hour" | "H" if (1..=23).contains(&n) => Some(Frame::Hour(n)),
            "Day" | "D" if n == 1 => Some(Frame::Day),
            "Week" | "W" if n == 1 => Some(Frame::Week),
            "Month" | "M" if matches!(n, 1 | 2 | 3 | 4 | 6 | 12) => Some(Frame::Month(n)),
            _ => None,
        }
    }

    fn intraday_minutes(self) -> Option<u32> {
        match self {
            Frame::Min(n) => Some(n),
            Frame::Hour(n) => Some(n * 60),
            _ => None,
        }
    }

    fn code(self) -> u64 {
        match self {
            Frame::Min(n) => u64::from(n),
            Frame::Hour(n) => 100 + u64::from(n),
            Frame::Day => 200,
            Frame::Week => 300,
            Frame::Month(n) => 400 + u64::from(n),
        }
    }
}

/// The first day of month `month0` (months counted from year 0) in the given zone's calendar.
fn month_start(month0: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(month0.div_euclid(12), month0.rem_euclid(12) as u32 + 1, 1).unwrap_or(NaiveDate::MIN)
}

fn month_index(date: NaiveDate) -> i32 {
    date.year() * 12 + date.month0() as i32
}

/// One simulated bar series.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// The simulator's seed.
    pub seed: u64,
    /// The symbol.
    pub symbol: &'a str,
    /// Stocks or crypto.
    pub market: Market,
    /// Bar length.
    pub frame: Frame,
}

/// Calls `f` with every bar time of the series in `[from, to]`, ascending,
/// that is complete by `now` (its end is not after `now`). Stops early when
/// `f` breaks.
pub fn for_each_bar_time(
    series: Series<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    mut f: impl FnMut(DateTime<Utc>) -> ControlFlow<()>,
) {
    let Series {
        seed,
        symbol,
        market,
        frame,
    } = series;
    let to = to.min(now);
    if to < from {
        return;
    }
    let day_of = |t: DateTime<Utc>| match market {
        Market::Stocks => ny_date(t),
        Market::Crypto => t.date_naive(),
    };
    let midnight = |d: NaiveDate, minutes: u32| match market {
        Market::Stocks => ny_instant(d, minutes),
        Market::Crypto => {
            Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()) + Duration::minutes(minutes.into())
        }
    };
    let trades = |d: NaiveDate| market == Market::Crypto || calendar::is_trading_day(d);
    let mut emit = |start: DateTime<Utc>, end: DateTime<Utc>| -> ControlFlow<()> {
        if start >= from && start <= to && end <= now {
            f(start)
        } else {
            ControlFlow::Continue(())
        }
    };

    let first_day = day_of(from) - Duration::days(1);
    let last_day = day_of(to);
    match frame.intraday_minutes() {
        Some(step) => {
            let symbol_hash = hash_str(seed, symbol);
            let mut day = first_day;
            while day <= last_day {
                if trades(day) {
                    let (open, close) = match market {
                        Market::Stocks => (SESSION_OPEN_MIN, SESSION_CLOSE_MIN),
                        Market::Crypto => (0, 24 * 60),
                    };
                    let mut bucket = open / step * step;
                    while bucket < close {
                        let start = midnight(day, bucket);
                        let end = start + Duration::minutes(step.into());
                        if start > to {
                            return;
                        }
                        if !quiet_bucket(symbol_hash, market, step, bucket, start) && emit(start, end).is_break() {
                            return;
                        }
                        bucket += step;
                    }
                }
                day += Duration::days(1);
            }
        }
        None => {
            // Periods: a day, an ISO week, or N months; each stamped at the
            // start of its first trading day.
            let mut day = first_day;
            while day <= last_day {
                let (period_start, period_end) = match frame {
                    Frame::Week => {
                        let monday = day - Duration::days(day.weekday().num_days_from_monday().into());
                        (monday, monday + Duration::days(7))
                    }
                    Frame::Month(n) => {
                        let idx = month_index(day);
                        let base = idx - idx.rem_euclid(n as i32);
                        (month_start(base), month_start(base + n as i32))
                    }
                    _ => (day, day + Duration::days(1)),
                };
                let first_trading = std::iter::successors(Some(period_start), |d| d.succ_opt())
                    .take_while(|d| *d < period_end)
                    .find(|d| trades(*d));
                if let Some(stamp_day) = first_trading {
                    if emit(midnight(stamp_day, 0), midnight(period_end, 0)).is_break() {
                        return;
                    }
                }
                day = period_end;
            }
        }
    }
}

/// Minutes without trades: a share of 1–4 minute buckets are absent,
/// many more in extended hours than in the regular session.
fn quiet_bucket(symbol_hash: u64, market: Market, step: u32, minute_of_day: u32, start: DateTime<Utc>) -> bool {
    if step >= 5 {
        return false;
    }
    let h = splitmix(symbol_hash ^ (start.timestamp() as u64)) % 100;
    let regular = (calendar::REGULAR_OPEN_MIN..calendar::REGULAR_CLOSE_MIN).contains(&minute_of_day);
    match market {
        Market::Crypto => h < 5,
        Market::Stocks if regular => h < 2,
        Market::Stocks => h < 35,
    }
}

/// The bar of a series at `t`, as JSON in the API's shape.
pub fn bar_json(series: Series<'_>, t: DateTime<Utc>) -> Value {
    let Series {
        seed,
        symbol,
        market,
        frame,
    } = series;
    let sym = hash_str(seed, symbol);
    let h = splitmix(sym ^ splitmix(frame.code()) ^ (t.timestamp() as u64));
    // A stock's seeded splits are in its prices: after a 2-for-1 split the
    // raw price halves and the volume doubles (see [`crate::actions`]).
    let scale = match market {
        Market::Stocks => crate::actions::seeded_split_scale(seed, symbol, ny_date(t)),
        Market::Crypto => 1.0,
    };
    let level = level(seed, symbol, market, t) * scale;
    let open = round(level * (1.0 + 0.01 * (unit(splitmix(h ^ 1)) - 0.5)));
    let close = round(level * (1.0 + 0.01 * (unit(splitmix(h ^ 2)) - 0.5)));
    let high = round(open.max(close) * (1.0 + 0.005 * unit(splitmix(h ^ 3))));
    let low = round(open.min(close) * (1.0 - 0.005 * unit(splitmix(h ^ 4)))).min(open.min(close));
    let high = high.max(open.max(close));
    let vwap = round(low + (high - low) * unit(splitmix(h ^ 5)));
    let zero_volume = splitmix(h ^ 6).is_multiple_of(40);
    let ts = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match market {
        Market::Stocks => {
            let volume: u64 = if zero_volume {
                0
            } else {
                ((100 + splitmix(h ^ 7) % 2_000_000) as f64 / scale).round().max(1.0) as u64
            };
            let trades = if zero_volume { 0 } else { 1 + volume / 150 };
            json!({"t": ts, "o": open, "h": high, "l": low, "c": close, "v": volume, "n": trades, "vw": vwap})
        }
        Market::Crypto => {
            let volume = if zero_volume {
                0.0
            } else {
                (unit(splitmix(h ^ 7)) * 50.0 * 1e6).round() / 1e6
            };
            let trades = if zero_volume { 0 } else { 1 + splitmix(h ^ 8) % 500 };
            json!({"t": ts, "o": open, "h": high, "l": low, "c": close, "v": volume, "n": trades, "vw": vwap})
        }
    }
}

/// Scales a bar's prices by `price` and its volume by `volume` (an
/// adjustment, or a split the bar was produced before), rounded as the
/// API rounds.
pub fn scale(bar: &mut Value, price: f64, volume: f64) {
    if price != 1.0 {
        for key in ["o", "h", "l", "c", "vw"] {
            if let Some(x) = bar[key].as_f64() {
                bar[key] = json!(round(x * price));
            }
        }
    }
    if volume != 1.0 {
        if let Some(v) = bar["v"].as_u64() {
            bar["v"] = json!((v as f64 * volume).round() as u64);
        }
    }
}

fn round(x: f64) -> f64 {
    if x >= 1.0 {
        (x * 100.0).round() / 100.0
    } else {
        (x * 10_000.0).round() / 10_000.0
    }
    .max(0.0001)
}

/// Every bar time of a series in `[from, to]` complete by `now`, for tests
/// and ground truth.
pub fn bar_times(series: Series<'_>, from: DateTime<Utc>, to: DateTime<Utc>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    for_each_bar_time(series, from, to, now, |t| {
        out.push(t);
        ControlFlow::Continue(())
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn frames_parse_like_the_api() {
        assert_eq!(Frame::parse("15T"), Some(Frame::Min(15)));
        assert_eq!(Frame::parse("1Day"), Some(Frame::Day));
        assert_eq!(Frame::parse("6M"), Some(Frame::Month(6)));
        for bad in ["60Min", "2Day", "5Month", "0H", "1day", "Min"] {
            assert_eq!(Frame::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn daily_bars_skip_weekends_and_holidays() {
        let now = t("2026-12-31T00:00:00Z");
        let times = bar_times(
            Series {
                seed: 1,
                symbol: "AAPL",
                market: Market::Stocks,
                frame: Frame::Day,
            },
            t("2026-11-23T00:00:00Z"),
            t("2026-11-30T23:59:59Z"),
            now,
        );
        let days: Vec<String> = times.iter().map(|t| ny_date(*t).to_string()).collect();
        // Thanksgiving (26th) and the weekend are absent.
        assert_eq!(
            days,
            vec!["2026-11-23", "2026-11-24", "2026-11-25", "2026-11-27", "2026-11-30"]
        );
        assert!(times.iter().all(|t| t.to_rfc3339().ends_with("05:00:00+00:00")));
    }

    #[test]
    fn intraday_bars_stay_within_extended_hours() {
        let now = t("2026-12-31T00:00:00Z");
        let times = bar_times(
            Series {
                seed: 1,
                symbol: "AAPL",
                market: Market::Stocks,
                frame: Frame::Hour(1),
            },
            t("2026-11-20T05:00:00Z"),
            t("2026-11-21T04:59:59Z"),
            now,
        );
        assert_eq!(times.len(), 16, "04:00 to 19:00 New York");
        assert_eq!(times[0], t("2026-11-20T09:00:00Z"));
        let minutes = bar_times(
            Series {
                seed: 1,
                symbol: "AAPL",
                market: Market::Stocks,
                frame: Frame::Min(1),
            },
            t("2026-11-20T00:00:00Z"),
            t("2026-11-21T00:00:00Z"),
            now,
        );
        assert!(minutes.len() < 960 && minutes.len() > 700, "{}", minutes.len());
    }

    #[test]
    fn crypto_trades_on_weekends() {
        let now = t("2026-12-31T00:00:00Z");
        let days = bar_times(
            Series {
                seed: 1,
                symbol: "BTC/USD",
                market: Market::Crypto,
                frame: Frame::Day,
            },
            t("2026-11-21T00:00:00Z"),
            t("2026-11-22T00:00:00Z"),
            now,
        );
        assert_eq!(days, vec![t("2026-11-21T00:00:00Z"), t("2026-11-22T00:00:00Z")]);
    }

    #[test]
    fn bars_end_at_the_horizon() {
        let now = t("2026-11-20T15:00:00Z");
        let times = bar_times(
            Series {
                seed: 1,
                symbol: "AAPL",
                market: Market::Stocks,
                frame: Frame::Hour(1),
            },
            t("2026-11-20T00:00:00Z"),
            t("2026-11-21T00:00:00Z"),
            now,
        );
        assert_eq!(times.last(), Some(&t("2026-11-20T14:00:00Z")));
        assert!(bar_times(
            Series {
                seed: 1,
                symbol: "AAPL",
                market: Market::Stocks,
                frame: Frame::Day
            },
            t("2026-11-20T00:00:00Z"),
            t("2026-11-21T00:00:00Z"),
            now
        )
        .is_empty());
    }

    #[test]
    fn weekly_and_monthly_bars_stamp_at_the_first_trading_day() {
        let now = t("2027-03-01T00:00:00Z");
        let weeks = bar_times(
            Series {
                seed: 1,
                symbol: "AAPL",
                market: Market::Stocks,
                frame: Frame::Week,
            },
            t("2026-11-01T00:00:00Z"),
            t("2026-12-01T00:00:00Z"),
            now,
        );
        assert_eq!(weeks.len(), 5, "{weeks:?}");
        assert_eq!(ny_date(weeks[4]).to_string(), "2026-11-30");
        let months = bar_times(
            Series {
                seed: 1,
                symbol: "AAPL",
                market: Market::Stocks,
                frame: Frame::Month(1),
            },
            t("2026-01-01T00:00:00Z"),
            t("2026-12-31T00:00:00Z"),
            now,
        );
        assert_eq!(months.len(), 12);
        assert_eq!(ny_date(months[0]).to_string(), "2026-01-02", "Jan 1 is a holiday");
        let quarters = bar_times(
            Series {
                seed: 1,
                symbol: "AAPL",
                market: Market::Stocks,
                frame: Frame::Month(3),
            },
            t("2026-01-01T00:00:00Z"),
            t("2026-12-31T00:00:00Z"),
            now,
        );
        assert_eq!(quarters.len(), 4);
    }

    #[test]
    fn bar_values_are_deterministic_and_consistent() {
        let bt = t("2026-11-20T05:00:00Z");
        let a = bar_json(
            Series {
                seed: 3,
                symbol: "AAPL",
                market: Market::Stocks,
                frame: Frame::Day,
            },
            bt,
        );
        assert_eq!(
            a,
            bar_json(
                Series {
                    seed: 3,
                    symbol: "AAPL",
                    market: Market::Stocks,
                    frame: Frame::Day
                },
                bt
            )
        );
        let (o, h, l, c) = (
            a["o"].as_f64().unwrap(),
            a["h"].as_f64().unwrap(),
            a["l"].as_f64().unwrap(),
            a["c"].as_f64().unwrap(),
        );
        assert!(h >= o.max(c) && l <= o.min(c) && l > 0.0);
        assert!(a["v"].is_u64(), "stock volume is an integer");
        assert!(bar_json(
            Series {
                seed: 3,
                symbol: "BTC/USD",
                market: Market::Crypto,
                frame: Frame::Day
            },
            bt
        )["v"]
            .is_f64());
    }
}
