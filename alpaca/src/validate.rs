//! What counts as real data, and what is rejected before it reaches the store.
//!
//! The rules accept everything the real API sends (every exchange string,
//! dotted symbols, crypto pairs, zero volume, fractional prices, missing
//! optional fields) and reject what cannot be true: a high below the open,
//! negative or non-finite numbers, bars outside the range asked for,
//! duplicate timestamps, unknown statuses.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::class::{Classify, ErrorClass};
use crate::{Asset, Bar};

/// The longest exchange string kept; real ones are a few letters.
const MAX_EXCHANGE_LEN: usize = 32;
/// The longest asset name kept.
const MAX_NAME_LEN: usize = 512;

/// Why one asset of a listing was refused. The listing goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("asset {} rejected: {reason}", describe(id, symbol))]
pub struct AssetRejection {
    /// The asset's id, when it had a readable one.
    pub id: Option<String>,
    /// The asset's symbol, when it had a readable one.
    pub symbol: Option<String>,
    /// What rule it broke.
    pub reason: String,
}

fn describe(id: &Option<String>, symbol: &Option<String>) -> String {
    match (symbol, id) {
        (Some(s), _) => format!("{s:?}"),
        (None, Some(i)) => format!("id {i:?}"),
        (None, None) => "(no symbol, no id)".into(),
    }
}

impl Classify for AssetRejection {
    fn class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

/// Decodes and checks one element of an asset listing.
pub fn asset(raw: &Value) -> Result<Asset, AssetRejection> {
    let short = |key: &str| {
        raw.get(key)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(40).collect::<String>())
    };
    let reject = |reason: String| AssetRejection {
        id: short("id"),
        symbol: short("symbol"),
        reason,
    };
    let asset = Asset::deserialize(raw).map_err(|e| reject(e.to_string()))?;
    check_asset(&asset).map_err(reject)?;
    Ok(asset)
}

fn check_asset(asset: &Asset) -> Result<(), String> {
    if uuid::Uuid::parse_str(&asset.id).is_err() {
        return Err(format!(
            "id {:?} is not a UUID",
            asset.id.chars().take(40).collect::<String>()
        ));
    }
    if asset.exchange.is_empty()
        || asset.exchange.len() > MAX_EXCHANGE_LEN
        || asset.exchange.chars().any(char::is_control)
    {
        return Err("exchange must be 1 to 32 printable characters".into());
    }
    if let Some(name) = &asset.name {
        if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err("name must be at most 512 printable characters".into());
        }
    }
    if let Some(m) = asset.maintenance_margin_requirement {
        if !m.is_finite() || m < 0.0 {
            return Err(format!("maintenance_margin_requirement {m} is negative or not finite"));
        }
    }
    let decimals = [
        ("margin_requirement_long", &asset.margin_requirement_long),
        ("margin_requirement_short", &asset.margin_requirement_short),
        ("min_order_size", &asset.min_order_size),
        ("min_trade_increment", &asset.min_trade_increment),
        ("price_increment", &asset.price_increment),
    ];
    for (field, value) in decimals {
        if let Some(text) = value {
            let ok = text.parse::<f64>().is_ok_and(|v| v.is_finite() && v >= 0.0)
                && !text.contains(['e', 'E', 'i', 'n', 'N']);
            if !ok {
                return Err(format!(
                    "{field} {:?} is not a non-negative decimal",
                    text.chars().take(32).collect::<String>()
                ));
            }
        }
    }
    Ok(())
}

/// Why the bars of one symbol were refused; none of them is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, Deserialize)]
#[error("bar {} rejected: {reason}", time.map(|t| t.to_rfc3339()).unwrap_or_else(|| "?".into()))]
pub struct BarRejection {
    /// The time of the offending bar.
    pub time: Option<DateTime<Utc>>,
    /// What rule it broke.
    pub reason: String,
}

impl Classify for BarRejection {
    fn class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

/// What to do with two bars that share a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// Stocks: two bars for one minute is a lying response; reject.
    Reject,
    /// Crypto: seen in real responses; the last one wins.
    LastWins,
}

/// Checks the bars of one symbol fetched for the inclusive range
/// `[start, end]` and returns them sorted by time, duplicates resolved.
pub fn bars(
    bars: Vec<Bar>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    duplicates: Duplicates,
) -> Result<Vec<Bar>, BarRejection> {
    for bar in &bars {
        check_bar(bar, start, end).map_err(|reason| BarRejection {
            time: Some(bar.time),
            reason,
        })?;
    }
    // A stable sort keeps the API's order among equal times, so "last" below
    // is the last the API sent.
    let mut sorted = bars;
    sorted.sort_by_key(|b| b.time);
    let mut out: Vec<Bar> = Vec::with_capacity(sorted.len());
    for bar in sorted {
        match out.last_mut() {
            Some(previous) if previous.time == bar.time => match duplicates {
                Duplicates::Reject => {
                    return Err(BarRejection {
                        time: Some(bar.time),
                        reason: "two bars share this timestamp".into(),
                    });
                }
                Duplicates::LastWins => *previous = bar,
            },
            _ => out.push(bar),
        }
    }
    Ok(out)
}

/// Checks that one page's validated bars of a series continue those of the
/// pages before it, whose last bar was at `last`: pages come in time order,
/// so a bar at or before `last` is a duplicate across the page boundary
/// (kept last-wins for crypto, rejected for stocks like any duplicate).
pub fn continues(bars: &[Bar], last: Option<DateTime<Utc>>, duplicates: Duplicates) -> Result<(), BarRejection> {
    match (bars.first(), last) {
        (Some(first), Some(last)) if first.time <= last && duplicates == Duplicates::Reject => Err(BarRejection {
            time: Some(first.time),
            reason: format!(
                "repeats or precedes the last bar of the previous page ({})",
                last.to_rfc3339()
            ),
        }),
        _ => Ok(()),
    }
}

fn check_bar(bar: &Bar, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<(), String> {
    for (field, value) in [("o", bar.open), ("h", bar.high), ("l", bar.low), ("c", bar.close)] {
        if !value.is_finite() || value <= 0.0 {
            return Err(format!("price {field} = {value} is not a positive finite number"));
        }
    }
    if !bar.volume.is_finite() || bar.volume < 0.0 {
        return Err(format!("volume {} is negative or not finite", bar.volume));
    }
    if !bar.vwap.is_finite() || bar.vwap < 0.0 {
        return Err(format!("vwap {} is negative or not finite", bar.vwap));
    }
    if bar.high < bar.open || bar.high < bar.close || bar.high < bar.low {
        return Err(format!(
            "high {} is below open {}, close {} or low {}",
            bar.high, bar.open, bar.close, bar.low
        ));
    }
    if bar.low > bar.open || bar.low > bar.close {
        return Err(format!(
            "low {} is above open {} or close {}",
            bar.low, bar.open, bar.close
        ));
    }
    if bar.time < start || bar.time > end {
        return Err(format!(
            "time is outside the requested range {} to {}",
            start.to_rfc3339(),
            end.to_rfc3339()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good_asset() -> Value {
        json!({"id":"b0b6dd9d-8b9b-48a9-ba46-b9d54906e415","class":"us_equity","exchange":"NASDAQ","symbol":"AAPL",
               "name":"Apple Inc.","status":"active","tradable":true,"marginable":true,"shortable":true,
               "easy_to_borrow":true,"fractionable":true,"maintenance_margin_requirement":30,
               "margin_requirement_long":"30","margin_requirement_short":"100","attributes":["has_options"]})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = good_asset();
        v[field] = value;
        v
    }

    fn without(field: &str) -> Value {
        let mut v = good_asset();
        v.as_object_mut().unwrap().remove(field);
        v
    }

    #[test]
    fn asset_rules_each_with_a_passing_and_a_failing_case() {
        // (rule, accepted example, rejected example)
        let table: Vec<(&str, Value, Value)> = vec![
            (
                "known exchanges and unknown ones are data",
                with("exchange", json!("NEWEXCH")),
                with("exchange", json!("")),
            ),
            (
                "every real exchange",
                with("exchange", json!("NYSEARCA")),
                with("exchange", json!(42)),
            ),
            (
                "dotted symbols",
                with("symbol", json!("BRK.B")),
                with("symbol", json!("../x")),
            ),
            (
                "crypto pairs",
                with("symbol", json!("BTC/USD")),
                with("symbol", json!("A;DROP")),
            ),
            (
                "warrants",
                with("symbol", json!("ABCDW")),
                with("symbol", json!("X".repeat(10_000))),
            ),
            (
                "status is active or inactive",
                with("status", json!("inactive")),
                with("status", json!("halted")),
            ),
            (
                "class is the key, with a known value",
                with("class", json!("crypto")),
                with("class", json!("forex")),
            ),
            ("class is required under its real key", good_asset(), {
                let mut v = without("class");
                v["asset_class"] = json!("us_equity");
                v
            }),
            ("id is a UUID", good_asset(), with("id", json!("not-a-uuid"))),
            (
                "name may be empty or non-ASCII",
                with("name", json!("Société Générale ÄÖ")),
                with("name", json!("a\u{0000}b")),
            ),
            ("name may be absent", without("name"), with("name", json!(7))),
            (
                "deprecated fields may be absent",
                without("easy_to_borrow"),
                with("easy_to_borrow", json!("yes")),
            ),
            (
                "margin is non-negative",
                without("maintenance_margin_requirement"),
                with("maintenance_margin_requirement", json!(-1)),
            ),
            (
                "margin strings are decimals",
                without("margin_requirement_long"),
                with("margin_requirement_long", json!("NaN")),
            ),
            (
                "new fields are accepted",
                with("borrow_status", json!("hard_to_borrow")),
                with("tradable", json!("true")),
            ),
            (
                "unknown fields are ignored",
                with("brand_new_field", json!({"x": [1, 2]})),
                without("tradable"),
            ),
        ];
        for (rule, pass, fail) in table {
            assert!(asset(&pass).is_ok(), "{rule}: should pass: {:?}", asset(&pass));
            let rejection = asset(&fail).expect_err(rule);
            assert!(!rejection.reason.is_empty(), "{rule}");
        }
    }

    #[test]
    fn rejection_names_the_asset_without_echoing_huge_input() {
        let rejection = asset(&with("status", json!("halted"))).unwrap_err();
        assert_eq!(rejection.symbol.as_deref(), Some("AAPL"));
        assert!(rejection.to_string().contains("halted"), "{rejection}");
        let rejection = asset(&with("symbol", json!("Z".repeat(100_000)))).unwrap_err();
        assert!(rejection.to_string().len() < 400);
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn bar(time: &str, o: f64, h: f64, l: f64, c: f64, v: f64) -> Bar {
        Bar {
            time: t(time),
            open: o,
            high: h,
            low: l,
            close: c,
            volume: v,
            trade_count: 1,
            vwap: (h + l) / 2.0,
        }
    }

    #[test]
    fn bar_rules_each_with_a_passing_and_a_failing_case() {
        let (start, end) = (t("2026-11-20T00:00:00Z"), t("2026-11-21T00:00:00Z"));
        let table: Vec<(&str, Bar, Bar)> = vec![
            (
                "zero volume is real",
                bar("2026-11-20T05:00:00Z", 1.0, 1.0, 1.0, 1.0, 0.0),
                bar("2026-11-20T05:00:00Z", 1.0, 1.0, 1.0, 1.0, -1.0),
            ),
            (
                "fractional prices",
                bar("2026-11-20T05:00:00Z", 0.0012, 0.0015, 0.0011, 0.0013, 5.0),
                bar("2026-11-20T05:00:00Z", -0.1, 1.0, 0.5, 0.7, 5.0),
            ),
            (
                "high is the highest",
                bar("2026-11-20T05:00:00Z", 10.0, 12.0, 9.0, 11.0, 5.0),
                bar("2026-11-20T05:00:00Z", 10.0, 10.5, 9.0, 11.0, 5.0),
            ),
            (
                "high not below low",
                bar("2026-11-20T05:00:00Z", 10.0, 10.0, 10.0, 10.0, 5.0),
                bar("2026-11-20T05:00:00Z", 10.0, 9.0, 9.5, 9.5, 5.0),
            ),
            (
                "low is the lowest",
                bar("2026-11-20T05:00:00Z", 10.0, 12.0, 9.0, 11.0, 5.0),
                bar("2026-11-20T05:00:00Z", 10.0, 12.0, 10.5, 11.0, 5.0),
            ),
            (
                "prices are finite",
                bar("2026-11-20T05:00:00Z", 10.0, 12.0, 9.0, 11.0, 5.0),
                bar("2026-11-20T05:00:00Z", 10.0, f64::INFINITY, 9.0, 11.0, 5.0),
            ),
            (
                "volume is finite",
                bar("2026-11-20T05:00:00Z", 10.0, 12.0, 9.0, 11.0, 0.5),
                bar("2026-11-20T05:00:00Z", 10.0, 12.0, 9.0, 11.0, f64::NAN),
            ),
            (
                "range start is inclusive",
                bar("2026-11-20T00:00:00Z", 1.0, 1.0, 1.0, 1.0, 1.0),
                bar("2026-11-19T23:59:59Z", 1.0, 1.0, 1.0, 1.0, 1.0),
            ),
            (
                "range end is inclusive",
                bar("2026-11-21T00:00:00Z", 1.0, 1.0, 1.0, 1.0, 1.0),
                bar("2026-11-21T00:00:01Z", 1.0, 1.0, 1.0, 1.0, 1.0),
            ),
        ];
        for (rule, pass, fail) in table {
            assert!(
                bars(vec![pass], start, end, Duplicates::Reject).is_ok(),
                "{rule}: should pass"
            );
            assert!(
                bars(vec![pass, fail], start, end, Duplicates::Reject).is_err(),
                "{rule}: should fail"
            );
        }
    }

    #[test]
    fn duplicate_timestamps_are_rejected_for_stocks_and_last_wins_for_crypto() {
        let (start, end) = (t("2026-11-20T00:00:00Z"), t("2026-11-21T00:00:00Z"));
        let first = bar("2026-11-20T05:00:00Z", 1.0, 2.0, 1.0, 1.5, 10.0);
        let second = bar("2026-11-20T05:00:00Z", 1.0, 3.0, 1.0, 2.5, 20.0);
        let other = bar("2026-11-20T06:00:00Z", 1.0, 2.0, 1.0, 1.5, 10.0);
        assert!(bars(vec![first, second], start, end, Duplicates::Reject).is_err());
        let kept = bars(vec![other, first, second], start, end, Duplicates::LastWins).unwrap();
        assert_eq!(kept, vec![second, other]);
    }
}
