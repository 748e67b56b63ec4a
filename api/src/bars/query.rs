//! The bars request as Alpaca takes it: the parameters checked into a
//! [`BarsQuery`], and the opaque page token.

use crate::ApiError;
use axum::http::StatusCode;
use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use signal9_alpaca::BarRange;
use signal9_alpaca::{Adjustment, Symbol, Timeframe, TimeframeUnit};
use signal9_shared::ingest::BarsRequest;
use signal9_shared::job::FetchBars;
use signal9_shared::store::SeriesKey;
use std::collections::HashMap;

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

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

pub(crate) fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
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
pub(crate) const MAX_TOKEN_LEN: usize = 128;

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

    pub(crate) fn request(&self, symbol: &Symbol, start: DateTime<Utc>, end: DateTime<Utc>) -> BarsRequest {
        BarsRequest {
            symbols: vec![symbol.clone()],
            range: self.range.between(start, end),
        }
    }

    pub(crate) fn fetch(&self, symbol: &Symbol, start: DateTime<Utc>, end: DateTime<Utc>) -> FetchBars {
        FetchBars {
            symbol: symbol.clone(),
            range: self.range.between(start, end),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bars::page::write_bars;
    use signal9_alpaca::Bar;

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
