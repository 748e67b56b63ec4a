//! The queries of the calls signal9 makes: the asset listing's filters and
//! a bars request, checked before it costs a call, and the one time format
//! both use.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use super::error::AlpacaError;
use super::model::{AssetClass, AssetStatus};
use super::symbol::Symbol;
use super::timeframe::Timeframe;

/// The API's largest `limit`.
pub const MAX_LIMIT: u32 = 10_000;

/// Corporate-action adjustment: `raw`, `split`, `dividend`, `spin-off`,
/// `all`, or a comma combination such as `split,dividend`. Kept in a
/// canonical form (sorted, deduplicated) so equal adjustments compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Adjustment(String);

impl Adjustment {
    /// No adjustment, the API's default.
    pub fn raw() -> Self {
        Adjustment("raw".into())
    }

    /// The canonical spelling.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Adjustment {
    fn default() -> Self {
        Adjustment::raw()
    }
}

impl FromStr for Adjustment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const KNOWN: [&str; 5] = ["raw", "split", "dividend", "spin-off", "all"];
        let mut parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if let Some(bad) = parts.iter().find(|p| !KNOWN.contains(p)) {
            return Err(format!(
                "invalid adjustment {:?} (expected raw, split, dividend, spin-off, all or a comma combination)",
                bad.chars().take(32).collect::<String>()
            ));
        }
        parts.sort_unstable();
        parts.dedup();
        if parts.len() > 1 && parts.iter().any(|p| *p == "raw" || *p == "all") {
            return Err(format!("invalid adjustment {s:?}: raw and all cannot be combined"));
        }
        Ok(Adjustment(parts.join(",")))
    }
}

impl TryFrom<String> for Adjustment {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Adjustment> for String {
    fn from(value: Adjustment) -> Self {
        value.0
    }
}

impl fmt::Display for Adjustment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The market-data feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feed {
    /// All US exchanges (paid plans for recent data).
    Sip,
    /// IEX only (the free plan).
    Iex,
    /// Over-the-counter.
    Otc,
    /// Blue Ocean ATS (overnight).
    Boats,
}

impl Feed {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Feed::Sip => "sip",
            Feed::Iex => "iex",
            Feed::Otc => "otc",
            Feed::Boats => "boats",
        }
    }
}

impl fmt::Display for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Feed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sip" => Ok(Feed::Sip),
            "iex" => Ok(Feed::Iex),
            "otc" => Ok(Feed::Otc),
            "boats" => Ok(Feed::Boats),
            _ => Err(format!(
                "invalid feed {:?} (expected sip, iex, otc or boats)",
                s.chars().take(32).collect::<String>()
            )),
        }
    }
}

/// One range of bars, whatever the symbols: a timeframe over an inclusive
/// `[start, end]`, with its adjustment and feed. The one shape of "which
/// bars" from the client's query ([`BarsQuery`]) through the job payload,
/// the worker's batch key and ingest to the read API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BarRange {
    /// Bar length.
    pub timeframe: Timeframe,
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Inclusive end.
    pub end: DateTime<Utc>,
    /// Corporate-action adjustment (stocks only; ignored for crypto).
    pub adjustment: Adjustment,
    /// Data feed (stocks only); the API's default when `None`.
    pub feed: Option<Feed>,
}

impl BarRange {
    /// The same bars (timeframe, adjustment, feed) over `[start, end]`.
    pub fn between(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> BarRange {
        BarRange {
            start,
            end,
            ..self.clone()
        }
    }
}

/// A bars request: symbols and one [`BarRange`] of them, with a page size.
#[derive(Debug, Clone, PartialEq)]
pub struct BarsQuery {
    /// One or more symbols, all stocks or all crypto pairs.
    pub symbols: Vec<Symbol>,
    /// The range asked for.
    pub range: BarRange,
    /// Page size; counts bars across all symbols. The API's default when `None`.
    pub limit: Option<u32>,
}

impl BarsQuery {
    /// True when the symbols are crypto pairs (they use the crypto endpoint).
    pub(crate) fn is_crypto(&self) -> bool {
        self.symbols.first().is_some_and(Symbol::is_crypto_pair)
    }

    /// Checks the query and renders its parameters (without a page token).
    pub fn params(&self) -> Result<Vec<(&'static str, String)>, AlpacaError> {
        if self.symbols.is_empty() {
            return Err(AlpacaError::InvalidRequest(
                "a bars query needs at least one symbol".into(),
            ));
        }
        if self.symbols.iter().any(Symbol::is_crypto_pair) != self.symbols.iter().all(Symbol::is_crypto_pair) {
            return Err(AlpacaError::InvalidRequest(
                "a bars query cannot mix crypto pairs and stocks".into(),
            ));
        }
        if self.range.end < self.range.start {
            return Err(AlpacaError::InvalidRequest(format!(
                "end {} is before start {}",
                rfc3339(self.range.end),
                rfc3339(self.range.start)
            )));
        }
        if let Some(limit) = self.limit {
            if !(1..=MAX_LIMIT).contains(&limit) {
                return Err(AlpacaError::InvalidRequest(format!(
                    "limit {limit} is outside 1..={MAX_LIMIT}"
                )));
            }
        }
        let symbols = self.symbols.iter().map(Symbol::as_str).collect::<Vec<_>>().join(",");
        let mut params = vec![
            ("symbols", symbols),
            ("timeframe", self.range.timeframe.to_string()),
            ("start", rfc3339(self.range.start)),
            ("end", rfc3339(self.range.end)),
        ];
        if let Some(limit) = self.limit {
            params.push(("limit", limit.to_string()));
        }
        if !self.is_crypto() {
            params.push(("adjustment", self.range.adjustment.to_string()));
            if let Some(feed) = self.range.feed {
                params.push(("feed", feed.to_string()));
            }
        }
        Ok(params)
    }
}

/// The query of `GET /v2/assets`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssetQuery {
    /// `active`, `inactive`, or both when `None`.
    pub status: Option<AssetStatus>,
    /// The class to list; the API defaults to `us_equity`.
    pub class: Option<AssetClass>,
    /// Only this exchange, when set.
    pub exchange: Option<String>,
    /// Only assets with any of these attributes, when non-empty.
    pub attributes: Vec<String>,
}

/// Formats a time the way the API expects in queries.
pub(crate) fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_names_round_trip_and_a_long_bad_one_is_quoted_short() {
        for feed in [Feed::Sip, Feed::Iex, Feed::Otc, Feed::Boats] {
            assert_eq!(feed.to_string().parse::<Feed>(), Ok(feed));
        }
        let error = "x".repeat(1_000).parse::<Feed>().unwrap_err();
        assert!(error.len() < 120, "{error}");
    }

    #[test]
    fn adjustments_are_canonical() {
        assert_eq!(
            "dividend,split".parse::<Adjustment>().unwrap(),
            "split,dividend".parse().unwrap()
        );
        assert_eq!("spin-off".parse::<Adjustment>().unwrap().as_str(), "spin-off");
        for bad in ["", "none", "raw,split", "all,split", "split;drop"] {
            assert!(bad.parse::<Adjustment>().is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_that_cannot_succeed_are_refused_before_a_call() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut q = BarsQuery {
            symbols: vec![Symbol::parse("AAPL").unwrap()],
            limit: None,
            range: BarRange {
                timeframe: Timeframe::DAY,
                start: t0,
                end: t0,
                adjustment: Adjustment::raw(),
                feed: Some(Feed::Iex),
            },
        };
        assert!(q.params().is_ok());
        q.range.end = t0 - chrono::Duration::seconds(1);
        assert!(q.params().is_err());
        q.range.end = t0;
        q.symbols.push(Symbol::parse("BTC/USD").unwrap());
        assert!(q.params().is_err());
        q.symbols.pop();
        q.limit = Some(10_001);
        assert!(q.params().is_err());
    }
}
