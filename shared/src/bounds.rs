//! What every door accepts: the one statement of the bounds that job
//! messages, the read API and the producer's commands check outside input
//! against, where they parse it.
//!
//! A date outside [`EARLIEST`] … now + [`FUTURE_SLACK`] is refused: no
//! market data is older than 1990 at Alpaca (its history starts in 2015
//! for stocks, 2021 for crypto), and nothing is known about the day after
//! tomorrow. Everything downstream (the calendar, the estimates, the
//! settle time) may then do its date arithmetic inside a window of about
//! 13,500 days, where nothing overflows and no loop over days runs long.
//! A refusal says which field, what it held and what is allowed: a
//! permanent dead letter for a job, a 400 for the API, an error before
//! publishing for the producer.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use signal9_alpaca::class::{Classify, ErrorClass};

/// The earliest instant any range may start (or end) at: 1990-01-01T00:00:00Z.
pub const EARLIEST: DateTime<Utc> = match NaiveDate::from_ymd_opt(1990, 1, 1) {
    Some(date) => match date.and_hms_opt(0, 0, 0) {
        Some(t) => t.and_utc(),
        None => DateTime::<Utc>::MIN_UTC,
    },
    None => DateTime::<Utc>::MIN_UTC,
};

/// How far past now a range may reach: two days (clocks differ; a client
/// asking for "through tomorrow" is not wrong).
pub const FUTURE_SLACK: Duration = Duration::days(2);

/// The most symbols one read-API request or one producer command may name
/// by default (Alpaca's own request lines hold a few hundred at most).
pub const MAX_SYMBOLS: usize = 200;

/// Why an input is out of bounds. Permanent: the same input never passes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OutOfBounds(pub String);

impl Classify for OutOfBounds {
    fn class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

/// The latest instant accepted at `now`.
pub fn latest(now: DateTime<Utc>) -> DateTime<Utc> {
    now.checked_add_signed(FUTURE_SLACK).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Checks that `t` (the field `name`) lies in the window at `now`.
pub fn check_instant(name: &str, t: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), OutOfBounds> {
    let latest = latest(now);
    if t < EARLIEST || t > latest {
        return Err(OutOfBounds(format!(
            "{name} {} is outside the accepted window {} to {} (now + 2 days)",
            show(t),
            show(EARLIEST),
            show(latest)
        )));
    }
    Ok(())
}

/// Checks a bar range: both ends in the window, the end not before the start.
pub fn check_range(start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), OutOfBounds> {
    check_instant("start", start, now)?;
    check_instant("end", end, now)?;
    if end < start {
        return Err(OutOfBounds(format!(
            "end {} is before start {}",
            show(end),
            show(start)
        )));
    }
    Ok(())
}

/// An instant as RFC 3339, also for years chrono prints oddly (a year
/// before 0 or after 9999 is written with its sign).
pub(crate) fn show(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_window_runs_from_1990_to_two_days_after_now() {
        let now = t("2026-12-06T12:00:00Z");
        assert!(check_instant("start", t("1990-01-01T00:00:00Z"), now).is_ok());
        assert!(check_instant("start", t("2026-12-08T12:00:00Z"), now).is_ok());
        let early = check_instant("start", t("1989-12-31T23:59:59Z"), now).unwrap_err();
        assert!(
            early.0.contains("start 1989-12-31T23:59:59Z") && early.0.contains("1990-01-01"),
            "{early}"
        );
        assert!(check_instant("end", t("2026-12-08T12:00:01Z"), now).is_err());
        let far = DateTime::<Utc>::MIN_UTC;
        assert!(check_instant("start", far, now).unwrap_err().0.contains("outside"));
        assert!(check_instant("end", DateTime::<Utc>::MAX_UTC, now).is_err());
        assert_eq!(latest(DateTime::<Utc>::MAX_UTC), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn a_range_ends_after_it_starts() {
        let now = t("2026-12-06T12:00:00Z");
        let (a, b) = (t("2026-01-01T00:00:00Z"), t("2026-02-01T00:00:00Z"));
        assert!(check_range(a, b, now).is_ok());
        assert!(check_range(b, a, now).unwrap_err().0.contains("before start"));
    }
}
