//! The simulator's own US equity calendar, written from the exchange's
//! published holiday rules and kept apart from signal9's: a calendar bug in
//! the system then shows up as a disagreement in the tests
//! (`tests/tests/calendar.rs` compares the two day by day, 2000–2030).
//!
//! Rules (NYSE Rule 7.2 and its holiday notices):
//! - fixed-date holidays (New Year's Day, Juneteenth from 2022, Independence
//!   Day, Christmas): a Saturday one is observed on the Friday before, a
//!   Sunday one on the Monday after, except that New Year's Day on a
//!   Saturday is not observed at all (the Friday closes a fiscal year);
//! - Monday holidays: Martin Luther King Jr. Day (third Monday of January),
//!   Washington's Birthday (third Monday of February), Memorial Day (last
//!   Monday of May), Labor Day (first Monday of September);
//! - Thanksgiving (fourth Thursday of November) and Good Friday (two days
//!   before Western Easter, computed here with Gauss's method);
//! - unscheduled closings the exchange announced, listed by date.
//!
//! Early closes (13:00) do not change whether a day trades and are not
//! modelled. Day-of-week arithmetic is done here, on day numbers, so that
//! it shares no helper with the system's calendar.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::America::New_York;

/// Minutes after midnight New York time when extended hours start (04:00).
pub const SESSION_OPEN_MIN: u32 = 4 * 60;
/// Minutes after midnight New York time when extended hours end (20:00).
pub const SESSION_CLOSE_MIN: u32 = 20 * 60;
/// The regular session, 09:30–16:00, in minutes after midnight.
pub const REGULAR_OPEN_MIN: u32 = 9 * 60 + 30;
/// End of the regular session.
pub const REGULAR_CLOSE_MIN: u32 = 16 * 60;

/// Days the exchange closed outside its holiday rules (2000 onwards).
const UNSCHEDULED_CLOSINGS: &[(i32, u32, u32)] = &[
    (2001, 9, 11), // September 11 attacks, four days
    (2001, 9, 12),
    (2001, 9, 13),
    (2001, 9, 14),
    (2004, 6, 11),  // national day of mourning, President Reagan
    (2007, 1, 2),   // national day of mourning, President Ford
    (2012, 10, 29), // Hurricane Sandy, two days
    (2012, 10, 30),
    (2018, 12, 5), // national day of mourning, President G. H. W. Bush
    (2025, 1, 9),  // national day of mourning, President Carter
];

/// 0 = Monday … 6 = Sunday, from the day number (1970-01-01 was a Thursday).
fn weekday_index(date: NaiveDate) -> i64 {
    let days = (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days();
    (days + 3).rem_euclid(7)
}

fn ymd(year: i32, month: u32, day: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, month, day)
}

/// The `n`th (1-based) `weekday` (0 = Monday) of a month.
fn nth(year: i32, month: u32, weekday: i64, n: i64) -> Option<NaiveDate> {
    let first = ymd(year, month, 1)?;
    let offset = (weekday - weekday_index(first)).rem_euclid(7) + 7 * (n - 1);
    first.checked_add_days(chrono::Days::new(u64::try_from(offset).ok()?))
}

/// The last `weekday` (0 = Monday) of a month.
fn last(year: i32, month: u32, weekday: i64) -> Option<NaiveDate> {
    let next_month = if month == 12 {
        ymd(year + 1, 1, 1)?
    } else {
        ymd(year, month + 1, 1)?
    };
    let last_day = next_month.pred_opt()?;
    let back = (weekday_index(last_day) - weekday).rem_euclid(7);
    last_day.checked_sub_days(chrono::Days::new(u64::try_from(back).ok()?))
}

/// Western Easter Sunday by Gauss's method, with its two exceptions.
fn easter(year: i32) -> Option<NaiveDate> {
    let (a, b, c) = (year % 19, year % 4, year % 7);
    let k = year / 100;
    let p = (13 + 8 * k) / 25;
    let q = k / 4;
    let m = (15 - p + k - q).rem_euclid(30);
    let n = (4 + k - q).rem_euclid(7);
    let d = (19 * a + m) % 30;
    let e = (2 * b + 4 * c + 6 * d + n) % 7;
    let (month, mut day) = if 22 + d + e <= 31 {
        (3, 22 + d + e)
    } else {
        (4, d + e - 9)
    };
    if month == 4 && day == 26 {
        day = 19;
    } else if month == 4 && day == 25 && d == 28 && e == 6 && (11 * m + 11) % 30 < 19 {
        day = 18;
    }
    ymd(year, month, u32::try_from(day).ok()?)
}

/// The weekday a fixed-date holiday is observed on, if any.
fn observed(date: NaiveDate, saturday_moves_back: bool) -> Option<NaiveDate> {
    match weekday_index(date) {
        5 if saturday_moves_back => date.pred_opt(),
        5 => None,
        6 => date.succ_opt(),
        _ => Some(date),
    }
}

/// The exchange holidays of one year, as observed.
pub fn holidays(year: i32) -> Vec<NaiveDate> {
    let mut days: Vec<Option<NaiveDate>> = vec![
        ymd(year, 1, 1).and_then(|d| observed(d, false)),
        nth(year, 1, 0, 3),
        nth(year, 2, 0, 3),
        easter(year).and_then(|d| d.checked_sub_days(chrono::Days::new(2))),
        last(year, 5, 0),
        ymd(year, 7, 4).and_then(|d| observed(d, true)),
        nth(year, 9, 0, 1),
        nth(year, 11, 3, 4),
        ymd(year, 12, 25).and_then(|d| observed(d, true)),
    ];
    if year >= 2022 {
        days.push(ymd(year, 6, 19).and_then(|d| observed(d, true)));
    }
    let mut days: Vec<NaiveDate> = days.into_iter().flatten().collect();
    days.extend(
        UNSCHEDULED_CLOSINGS
            .iter()
            .filter(|(y, _, _)| *y == year)
            .filter_map(|&(y, m, d)| ymd(y, m, d)),
    );
    days.sort();
    days
}

/// True when US equities trade on `date` (a New York date).
pub fn is_trading_day(date: NaiveDate) -> bool {
    weekday_index(date) < 5 && !holidays(date.year()).contains(&date)
}

/// The UTC instant `minutes` after midnight New York time on `date`.
pub fn ny_instant(date: NaiveDate, minutes: u32) -> DateTime<Utc> {
    let time = NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).unwrap_or(NaiveTime::MIN);
    let local = date.and_time(time);
    match New_York.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => Utc.from_utc_datetime(&local),
    }
}

/// The New York calendar date of a UTC instant.
pub fn ny_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&New_York).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap_or_default()
    }

    #[test]
    fn easter_matches_published_dates_including_both_exceptions() {
        for (y, m, day) in [
            (2000, 4, 23),
            (2008, 3, 23),
            (2011, 4, 24),
            (2019, 4, 21),
            (2024, 3, 31),
            (2025, 4, 20),
            (2026, 4, 5),
            (2038, 4, 25),
            (1981, 4, 19), // Gauss's April 26 exception
            (1954, 4, 18), // the April 25 exception
        ] {
            assert_eq!(easter(y), Some(d(y, m, day)), "{y}");
        }
    }

    #[test]
    fn the_exchanges_published_holidays_for_2026_and_2027() {
        let y2026 = [
            (1, 1),
            (1, 19),
            (2, 16),
            (4, 3),
            (5, 25),
            (6, 19),
            (7, 3),
            (9, 7),
            (11, 26),
            (12, 25),
        ];
        assert_eq!(
            holidays(2026),
            y2026.iter().map(|&(m, day)| d(2026, m, day)).collect::<Vec<_>>()
        );
        let y2027 = [
            (1, 1),
            (1, 18),
            (2, 15),
            (3, 26),
            (5, 31),
            (6, 18),
            (7, 5),
            (9, 6),
            (11, 25),
            (12, 24),
        ];
        assert_eq!(
            holidays(2027),
            y2027.iter().map(|&(m, day)| d(2027, m, day)).collect::<Vec<_>>()
        );
        // 2022: New Year's Day on a Saturday is not observed on Friday.
        assert!(is_trading_day(d(2021, 12, 31)));
        assert!(!is_trading_day(d(2012, 10, 30)), "Hurricane Sandy");
        assert!(!is_trading_day(d(2026, 11, 21)), "a Saturday");
    }
}
