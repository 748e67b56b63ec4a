//! The US equity market calendar: trading days, holidays and sessions.
//!
//! Holidays follow NYSE rules (New Year's Day, Martin Luther King Jr. Day,
//! Presidents' Day, Good Friday, Memorial Day, Juneteenth from 2022,
//! Independence Day, Labor Day, Thanksgiving, Christmas), with the usual
//! weekend observance: a Saturday holiday is observed on Friday (except New
//! Year's Day, which is then not observed), a Sunday one on Monday, plus
//! the days the exchange closed outside those rules (2001-09-11 to 14,
//! national days of mourning, Hurricane Sandy). Early closes are not
//! modelled. `tests/tests/calendar.rs` checks every day of 2000–2030
//! against the simulator's calendar, written apart from this one. The simulator stamps bars with it and the
//! scheduler picks the previous trading day with it.

use chrono::{DateTime, Datelike, Days, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::America::New_York;

/// Minutes after midnight New York time when extended-hours trading starts (04:00).
pub const SESSION_OPEN_MIN: u32 = 4 * 60;
/// Minutes after midnight New York time when extended-hours trading ends (20:00).
pub const SESSION_CLOSE_MIN: u32 = 20 * 60;
/// Regular session 09:30–16:00, in minutes after midnight.
pub const REGULAR_OPEN_MIN: u32 = 9 * 60 + 30;
/// End of the regular session.
pub const REGULAR_CLOSE_MIN: u32 = 16 * 60;

/// Closings the exchange announced outside its holiday rules, since 2000.
const SPECIAL_CLOSINGS: [(i32, u32, u32); 10] = [
    (2001, 9, 11),
    (2001, 9, 12),
    (2001, 9, 13),
    (2001, 9, 14),
    (2004, 6, 11),
    (2007, 1, 2),
    (2012, 10, 29),
    (2012, 10, 30),
    (2018, 12, 5),
    (2025, 1, 9),
];

fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u8) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n).unwrap_or(NaiveDate::MIN)
}

fn last_weekday(year: i32, month: u32, weekday: Weekday) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, 5)
        .unwrap_or_else(|| nth_weekday(year, month, weekday, 4))
}

/// Easter Sunday (anonymous Gregorian algorithm).
fn easter(year: i32) -> NaiveDate {
    // The algorithm holds for years after 1582; outside (only reached by a
    // date no door accepts) any date is as good as another, and the
    // arithmetic must not overflow near i32's ends.
    if !(1583..=9999).contains(&year) {
        return NaiveDate::MIN;
    }
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).unwrap_or(NaiveDate::MIN)
}

fn observed(date: NaiveDate) -> Option<NaiveDate> {
    match date.weekday() {
        Weekday::Sat => date.pred_opt(),
        Weekday::Sun => date.succ_opt(),
        _ => Some(date),
    }
}

/// True when `date` is an NYSE holiday.
pub(crate) fn is_holiday(date: NaiveDate) -> bool {
    let year = date.year();
    let fixed = |m, d| NaiveDate::from_ymd_opt(year, m, d);
    let mut holidays = vec![
        nth_weekday(year, 1, Weekday::Mon, 3),
        nth_weekday(year, 2, Weekday::Mon, 3),
        easter(year).checked_sub_days(Days::new(2)).unwrap_or(NaiveDate::MIN),
        last_weekday(year, 5, Weekday::Mon),
        nth_weekday(year, 9, Weekday::Mon, 1),
        nth_weekday(year, 11, Weekday::Thu, 4),
    ];
    // New Year's Day on a Saturday is not observed on the Friday before.
    if let Some(ny) = fixed(1, 1).filter(|d| d.weekday() != Weekday::Sat) {
        holidays.extend(observed(ny));
    }
    for (m, d, since) in [(7, 4, 0), (12, 25, 0), (6, 19, 2022)] {
        if year >= since {
            holidays.extend(fixed(m, d).and_then(observed));
        }
    }
    holidays.contains(&date) || SPECIAL_CLOSINGS.contains(&(year, date.month(), date.day()))
}

/// True when the US equity market trades on `date` (a New York date).
pub fn is_trading_day(date: NaiveDate) -> bool {
    !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && !is_holiday(date)
}

/// The UTC instant of `minutes` after midnight New York time on `date`.
pub fn ny_instant(date: NaiveDate, minutes: u32) -> DateTime<Utc> {
    let time = NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).unwrap_or(NaiveTime::MIN);
    let local = date.and_time(time);
    // DST gaps fall at 02:00, outside every session time used here; `earliest`
    // still gives an answer if one is ever asked for.
    match New_York.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => Utc.from_utc_datetime(&local),
    }
}

/// The New York calendar date of a UTC instant (at the very ends of
/// chrono's range, where New York's date does not exist, the UTC date).
pub fn ny_date(t: DateTime<Utc>) -> NaiveDate {
    use chrono::Offset as _;
    let offset = t.with_timezone(&New_York).offset().fix();
    t.naive_utc()
        .checked_add_offset(offset)
        .map_or_else(|| t.date_naive(), |local| local.date())
}

/// The last trading day strictly before `date`.
pub fn previous_trading_day(date: NaiveDate) -> NaiveDate {
    let mut day = date;
    loop {
        day = day.pred_opt().unwrap_or(NaiveDate::MIN);
        if is_trading_day(day) || day == NaiveDate::MIN {
            return day;
        }
    }
}

/// The inclusive UTC range of one New York calendar day: its midnight to
/// one second before the next midnight.
pub fn ny_day_range(date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let next = date.succ_opt().unwrap_or(date);
    let end = ny_instant(next, 0);
    (
        ny_instant(date, 0),
        end.checked_sub_signed(Duration::seconds(1)).unwrap_or(end),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn known_holidays_and_observances() {
        for date in [
            d(2026, 1, 1),   // New Year's Day
            d(2026, 1, 19),  // MLK
            d(2026, 2, 16),  // Presidents' Day
            d(2026, 4, 3),   // Good Friday
            d(2026, 5, 25),  // Memorial Day
            d(2026, 6, 19),  // Juneteenth
            d(2026, 7, 3),   // Independence Day observed (Jul 4 is a Saturday)
            d(2026, 9, 7),   // Labor Day
            d(2026, 11, 26), // Thanksgiving
            d(2026, 12, 25), // Christmas
            d(2024, 3, 29),  // Good Friday 2024
            d(2022, 12, 26), // Christmas observed (Sunday)
        ] {
            assert!(is_holiday(date), "{date}");
            assert!(!is_trading_day(date), "{date}");
        }
        for date in [d(2026, 11, 27), d(2026, 11, 20), d(2021, 6, 18), d(2021, 12, 31)] {
            assert!(is_trading_day(date), "{date}");
        }
        assert!(!is_trading_day(d(2026, 11, 21)), "Saturday");
    }

    #[test]
    fn previous_trading_days_skip_weekends_and_holidays() {
        assert_eq!(
            previous_trading_day(d(2026, 11, 30)),
            d(2026, 11, 27),
            "Monday → Friday"
        );
        assert_eq!(
            previous_trading_day(d(2026, 11, 27)),
            d(2026, 11, 25),
            "Thanksgiving skipped"
        );
        let (start, end) = ny_day_range(d(2026, 11, 20));
        assert_eq!(start.to_rfc3339(), "2026-11-20T05:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2026-11-21T04:59:59+00:00");
    }

    #[test]
    fn the_ends_of_chronos_range_have_a_date_and_no_panic() {
        // Found by the property tests (shared/tests/fuzz_parsers.rs).
        for t in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            let date = ny_date(t);
            assert_eq!(date, t.date_naive());
            let _ = (is_trading_day(date), ny_day_range(date), previous_trading_day(date));
        }
    }

    #[test]
    fn daily_bars_stamp_at_new_york_midnight() {
        assert_eq!(ny_instant(d(2026, 11, 20), 0).to_rfc3339(), "2026-11-20T05:00:00+00:00");
        assert_eq!(ny_instant(d(2026, 7, 20), 0).to_rfc3339(), "2026-07-20T04:00:00+00:00");
    }
}
