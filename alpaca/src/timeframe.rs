//! Bar timeframes as the market-data API spells them.
//!
//! The API accepts `[1-59]Min` (or `T`), `[1-23]Hour` (or `H`), `1Day` (`D`),
//! `1Week` (`W`) and `[1,2,3,4,6,12]Month` (`M`). A [`Timeframe`] is parsed once
//! at the edge and always printed in the long canonical form, so the same
//! timeframe never produces two different series keys.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The unit of a [`Timeframe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeframeUnit {
    /// Minutes, 1 to 59.
    Minute,
    /// Hours, 1 to 23.
    Hour,
    /// Days, only 1.
    Day,
    /// Weeks, only 1.
    Week,
    /// Months: 1, 2, 3, 4, 6 or 12.
    Month,
}

/// A valid bar timeframe, such as `5Min` or `1Day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timeframe {
    amount: u32,
    unit: TimeframeUnit,
}

/// Why a string is not a valid timeframe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timeframe {input:?}: {reason} (expected 1-59Min, 1-23Hour, 1Day, 1Week or 1/2/3/4/6/12Month)")]
pub struct TimeframeError {
    input: String,
    reason: &'static str,
}

impl Timeframe {
    /// One-minute bars.
    pub const MINUTE: Timeframe = Timeframe {
        amount: 1,
        unit: TimeframeUnit::Minute,
    };
    /// One-hour bars.
    pub const HOUR: Timeframe = Timeframe {
        amount: 1,
        unit: TimeframeUnit::Hour,
    };
    /// Daily bars.
    pub const DAY: Timeframe = Timeframe {
        amount: 1,
        unit: TimeframeUnit::Day,
    };

    /// Builds a timeframe, checking the amount is one the API accepts for the unit.
    pub fn new(amount: u32, unit: TimeframeUnit) -> Result<Self, TimeframeError> {
        let valid = match unit {
            TimeframeUnit::Minute => (1..=59).contains(&amount),
            TimeframeUnit::Hour => (1..=23).contains(&amount),
            TimeframeUnit::Day | TimeframeUnit::Week => amount == 1,
            TimeframeUnit::Month => matches!(amount, 1 | 2 | 3 | 4 | 6 | 12),
        };
        if !valid {
            return Err(TimeframeError {
                input: format!("{amount}{}", unit_name(unit)),
                reason: "amount out of range for the unit",
            });
        }
        Ok(Timeframe { amount, unit })
    }

    /// How many units one bar spans.
    pub fn amount(self) -> u32 {
        self.amount
    }

    /// The unit of one bar.
    pub fn unit(self) -> TimeframeUnit {
        self.unit
    }

    /// The bar length in seconds for fixed-length timeframes (minutes, hours,
    /// days, weeks); `None` for months, whose length varies.
    pub fn fixed_seconds(self) -> Option<i64> {
        let unit = match self.unit {
            TimeframeUnit::Minute => 60,
            TimeframeUnit::Hour => 3_600,
            TimeframeUnit::Day => 86_400,
            TimeframeUnit::Week => 7 * 86_400,
            TimeframeUnit::Month => return None,
        };
        Some(unit * i64::from(self.amount))
    }
}

fn unit_name(unit: TimeframeUnit) -> &'static str {
    match unit {
        TimeframeUnit::Minute => "Min",
        TimeframeUnit::Hour => "Hour",
        TimeframeUnit::Day => "Day",
        TimeframeUnit::Week => "Week",
        TimeframeUnit::Month => "Month",
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, unit_name(self.unit))
    }
}

impl FromStr for Timeframe {
    type Err = TimeframeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| TimeframeError {
            input: input.chars().take(32).collect(),
            reason,
        };
        let split = input
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| error("no unit"))?;
        let (digits, suffix) = input.split_at(split);
        if digits.is_empty() {
            return Err(error("no amount"));
        }
        if digits.len() > 2 || digits.starts_with('0') {
            return Err(error("amount out of range for the unit"));
        }
        let amount: u32 = digits.parse().map_err(|_| error("amount is not a number"))?;
        let unit = match suffix {
            "Min" | "T" => TimeframeUnit::Minute,
            "Hour" | "H" => TimeframeUnit::Hour,
            "Day" | "D" => TimeframeUnit::Day,
            "Week" | "W" => TimeframeUnit::Week,
            "Month" | "M" => TimeframeUnit::Month,
            _ => return Err(error("unknown unit")),
        };
        Timeframe::new(amount, unit).map_err(|e| error(e.reason))
    }
}

impl Serialize for Timeframe {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timeframe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_valid_form_parses_and_prints_canonically() {
        let cases: Vec<(String, String)> = (1..=59)
            .flat_map(|n| {
                [
                    (format!("{n}Min"), format!("{n}Min")),
                    (format!("{n}T"), format!("{n}Min")),
                ]
            })
            .chain((1..=23).flat_map(|n| {
                [
                    (format!("{n}Hour"), format!("{n}Hour")),
                    (format!("{n}H"), format!("{n}Hour")),
                ]
            }))
            .chain(
                [("1Day", "1Day"), ("1D", "1Day"), ("1Week", "1Week"), ("1W", "1Week")]
                    .map(|(a, b)| (a.into(), b.into())),
            )
            .chain([1, 2, 3, 4, 6, 12].into_iter().flat_map(|n| {
                [
                    (format!("{n}Month"), format!("{n}Month")),
                    (format!("{n}M"), format!("{n}Month")),
                ]
            }))
            .collect();
        assert_eq!(cases.len(), 2 * (59 + 23 + 1 + 1 + 6));
        for (input, canonical) in cases {
            let tf: Timeframe = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(tf.to_string(), canonical, "{input}");
            assert_eq!(canonical.parse::<Timeframe>().ok(), Some(tf));
        }
    }

    #[test]
    fn invalid_forms_are_rejected() {
        for input in [
            "", "Min", "0Min", "60Min", "00Min", "05Min", "100Min", "24Hour", "0Hour", "2Day", "7D", "2Week", "5Month",
            "7M", "13Month", "1min", "1day", "1 Day", "1Days", "-1Min", "1Sec", "1Year", "1", "+1Min", "1Min ",
        ] {
            assert!(input.parse::<Timeframe>().is_err(), "{input:?} should be rejected");
        }
    }

    #[test]
    fn error_names_the_input_and_the_accepted_forms() {
        let err = "2Day".parse::<Timeframe>().unwrap_err().to_string();
        assert!(err.contains("\"2Day\""), "{err}");
        assert!(err.contains("1-59Min"), "{err}");
    }

    #[test]
    fn serde_round_trips_through_the_canonical_string() {
        let tf: Timeframe = serde_json::from_str("\"15T\"").unwrap();
        assert_eq!(serde_json::to_string(&tf).unwrap(), "\"15Min\"");
        assert!(serde_json::from_str::<Timeframe>("\"61Min\"").is_err());
    }

    #[test]
    fn fixed_lengths() {
        assert_eq!("5Min".parse::<Timeframe>().unwrap().fixed_seconds(), Some(300));
        assert_eq!(Timeframe::DAY.fixed_seconds(), Some(86_400));
        assert_eq!("3Month".parse::<Timeframe>().unwrap().fixed_seconds(), None);
    }
}
