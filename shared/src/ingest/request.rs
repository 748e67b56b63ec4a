//! A bars request: symbols and one range, its size check, its settle
//! time, its series and checkpoint keys.

use super::IngestError;
use crate::plan;
use crate::store::SeriesKey;
use chrono::{DateTime, Utc};
use signal9_alpaca::{BarRange, Symbol};

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
