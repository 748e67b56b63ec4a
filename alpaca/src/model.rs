//! Typed models of the Alpaca JSON that signal9 reads.
//!
//! They follow the wire format exactly (the asset class arrives as `class`,
//! bar time `t` is an RFC 3339 string, `v` may be 0 and is fractional for
//! crypto), accept fields they do not know, and accept the optional fields
//! being absent. Semantic checks live in [`crate::validate`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use super::symbol::Symbol;

/// The asset classes the trading API lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetClass {
    /// US stocks and ETFs.
    UsEquity,
    /// Crypto pairs such as `BTC/USD`.
    Crypto,
    /// US option contracts.
    UsOption,
}

impl AssetClass {
    /// Every class, in the order a full sync lists them.
    pub const ALL: [AssetClass; 3] = [AssetClass::UsEquity, AssetClass::Crypto, AssetClass::UsOption];

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetClass::UsEquity => "us_equity",
            AssetClass::Crypto => "crypto",
            AssetClass::UsOption => "us_option",
        }
    }
}

impl fmt::Display for AssetClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AssetClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AssetClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown asset class {s:?} (expected us_equity, crypto or us_option)"))
    }
}

/// Whether an asset is currently listed as active by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetStatus {
    /// Listed and (usually) tradable.
    Active,
    /// Known to the API but not active.
    Inactive,
}

impl AssetStatus {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetStatus::Active => "active",
            AssetStatus::Inactive => "inactive",
        }
    }
}

impl fmt::Display for AssetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AssetStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(AssetStatus::Active),
            "inactive" => Ok(AssetStatus::Inactive),
            _ => Err(format!("unknown asset status {s:?} (expected active or inactive)")),
        }
    }
}

/// One asset as `GET /v2/assets` returns it.
///
/// The identity of an asset is its `id`: a recycled ticker gets a new id, and
/// the same symbol can appear twice in one listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    /// Stable UUID.
    pub id: String,
    /// The key is `class` on the wire, not `asset_class`.
    pub class: AssetClass,
    /// Any exchange string is data, including ones not seen before.
    pub exchange: String,
    /// The ticker.
    pub symbol: Symbol,
    /// May be empty or absent, and may hold non-ASCII.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Active or inactive.
    pub status: AssetStatus,
    /// Whether orders are accepted.
    pub tradable: bool,
    /// Whether the asset can be bought on margin; real listings sometimes
    /// leave it out, so it may be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marginable: Option<bool>,
    /// Whether the asset can be sold short; may be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortable: Option<bool>,
    /// Deprecated by the API and may be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub easy_to_borrow: Option<bool>,
    /// Whether fractional orders are accepted; may be absent (real listings
    /// of AMD, NVDA, NFLX and PYPL have been returned without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fractionable: Option<bool>,
    /// Deprecated by the API and may be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_margin_requirement: Option<f64>,
    /// A decimal string; may be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_requirement_long: Option<String>,
    /// A decimal string; may be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_requirement_short: Option<String>,
    /// Attribute flags such as `ptp_no_exception` or `has_options`.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Crypto only: a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_order_size: Option<String>,
    /// Crypto only: a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_trade_increment: Option<String>,
    /// Crypto only: a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_increment: Option<String>,
    /// `easy_to_borrow` or `hard_to_borrow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrow_status: Option<String>,
    /// CUSIP identifier, when the API gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cusip: Option<String>,
}

/// One OHLC bar as the market-data API returns it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    /// Bar start, UTC (an RFC 3339 string on the wire).
    #[serde(rename = "t")]
    pub time: DateTime<Utc>,
    /// Open price.
    #[serde(rename = "o")]
    pub open: f64,
    /// High price.
    #[serde(rename = "h")]
    pub high: f64,
    /// Low price.
    #[serde(rename = "l")]
    pub low: f64,
    /// Close price.
    #[serde(rename = "c")]
    pub close: f64,
    /// Volume: an integer for stocks (may be 0), fractional for crypto.
    #[serde(rename = "v")]
    pub volume: f64,
    /// Trade count.
    #[serde(rename = "n", default)]
    pub trade_count: u64,
    /// Volume-weighted average price.
    #[serde(rename = "vw", default)]
    pub vwap: f64,
}

/// A page of `GET /v2/stocks/bars` or the crypto equivalent: bars by symbol.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MultiBarsPage {
    /// Symbols with no bars are absent; the API may send `null` when none have any.
    #[serde(default)]
    pub bars: Option<BTreeMap<String, Vec<Bar>>>,
    /// The token for the next page; `null` (or absent) on the last one.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// A page of `GET /v2/stocks/{symbol}/bars`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct SymbolBarsPage {
    /// `null` when there are no bars.
    #[serde(default)]
    pub bars: Option<Vec<Bar>>,
    /// The symbol asked for.
    #[serde(default)]
    pub symbol: Option<String>,
    /// The token for the next page; `null` (or absent) on the last one.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_and_status_names_round_trip_and_unknown_ones_are_refused() {
        for class in AssetClass::ALL {
            assert_eq!(class.to_string().parse::<AssetClass>(), Ok(class));
        }
        assert!("bond".parse::<AssetClass>().unwrap_err().contains("\"bond\""));
        for status in [AssetStatus::Active, AssetStatus::Inactive] {
            assert_eq!(status.to_string().parse::<AssetStatus>(), Ok(status));
        }
        assert!("halted"
            .parse::<AssetStatus>()
            .unwrap_err()
            .contains("active or inactive"));
    }

    #[test]
    fn asset_reads_the_real_shape_with_new_and_missing_fields() {
        let json = r#"{"id":"b0b6dd9d-8b9b-48a9-ba46-b9d54906e415","class":"us_equity","exchange":"NASDAQ",
            "symbol":"AAPL","name":"Apple Inc. Common Stock","status":"active","tradable":true,"marginable":true,
            "maintenance_margin_requirement":30,"margin_requirement_long":"30","margin_requirement_short":"100",
            "shortable":true,"easy_to_borrow":true,"fractionable":true,"attributes":["fractional_eh_enabled","has_options"],
            "borrow_status":"easy_to_borrow","cusip":"037833100","some_future_field":{"x":1}}"#;
        let asset: Asset = serde_json::from_str(json).unwrap();
        assert_eq!(asset.class, AssetClass::UsEquity);
        assert_eq!(asset.symbol.as_str(), "AAPL");
        assert_eq!(asset.maintenance_margin_requirement, Some(30.0));

        let minimal = r#"{"id":"x","class":"crypto","exchange":"CRYPTO","symbol":"BTC/USD","status":"inactive",
            "tradable":false,"marginable":false,"shortable":false,"fractionable":true}"#;
        let asset: Asset = serde_json::from_str(minimal).unwrap();
        assert_eq!(asset.name, None);
        assert!(asset.attributes.is_empty());
    }

    #[test]
    fn only_the_fields_an_asset_cannot_be_used_without_are_required() {
        // As the API has returned AMD: empty name, no fractionable.
        let sparse = r#"{"id":"03fb07bb-5db1-4077-8dea-5d711b272625","class":"us_equity","exchange":"NASDAQ",
            "symbol":"AMD","name":"","status":"active","tradable":true}"#;
        let asset: Asset = serde_json::from_str(sparse).unwrap();
        assert_eq!(
            (asset.fractionable, asset.marginable, asset.shortable),
            (None, None, None)
        );
        for required in ["id", "symbol", "class", "exchange", "status", "tradable"] {
            let mut value: serde_json::Value = serde_json::from_str(sparse).unwrap();
            value.as_object_mut().unwrap().remove(required);
            let error = serde_json::from_value::<Asset>(value).unwrap_err().to_string();
            assert!(error.contains(required), "{required}: {error}");
        }
    }

    #[test]
    fn bar_time_is_a_string_and_volume_may_be_zero_or_fractional() {
        let bar: Bar =
            serde_json::from_str(r#"{"t":"2026-11-20T05:00:00Z","o":1.5,"h":2,"l":1,"c":1.75,"v":0,"n":0,"vw":1.6}"#)
                .unwrap();
        assert_eq!(bar.volume, 0.0);
        let crypto: Bar =
            serde_json::from_str(r#"{"t":"2026-11-20T00:00:00Z","o":1,"h":1,"l":1,"c":1,"v":0.0123,"n":3,"vw":1}"#)
                .unwrap();
        assert!((crypto.volume - 0.0123).abs() < 1e-12);
        assert!(serde_json::from_str::<Bar>(r#"{"t":1763614800,"o":1,"h":1,"l":1,"c":1,"v":1}"#).is_err());
    }

    #[test]
    fn pages_accept_null_bars() {
        let multi: MultiBarsPage = serde_json::from_str(r#"{"bars":null,"next_page_token":null}"#).unwrap();
        assert!(multi.bars.is_none());
        let single: SymbolBarsPage =
            serde_json::from_str(r#"{"bars":null,"symbol":"AAPL","next_page_token":null}"#).unwrap();
        assert!(single.bars.is_none());
    }
}
