//! Ticker symbols, parsed once at the edge.
//!
//! Real symbols are more varied than a naive `^[A-Z]{1,5}$`: share classes
//! (`BRK.B`), warrants and units (`ABCDW`, `ABCDU`), crypto pairs (`BTC/USD`)
//! and option contracts (`AAPL240119C00150000`). A [`Symbol`] accepts all of
//! those and nothing that could escape a URL path, a key or a log line.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The longest symbol accepted: option contract symbols run to 21 characters.
pub(crate) const MAX_SYMBOL_LEN: usize = 21;

/// A syntactically valid ticker symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);

/// Why a string is not a valid symbol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid symbol {shown:?}: {reason}")]
pub struct SymbolError {
    /// The input, cut short and with control characters escaped by Debug.
    shown: String,
    reason: &'static str,
}

impl Symbol {
    /// Parses a symbol: 1 to 21 characters of `A-Z`, `0-9`, `.`, `/` and `-`,
    /// starting with a letter or digit, with at most one `/` and no empty
    /// part around a separator.
    pub fn parse(input: &str) -> Result<Self, SymbolError> {
        let error = |reason| SymbolError {
            shown: input.chars().take(32).collect(),
            reason,
        };
        if input.is_empty() {
            return Err(error("empty"));
        }
        if input.len() > MAX_SYMBOL_LEN {
            return Err(error("longer than 21 characters"));
        }
        if !input
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'/' | b'-'))
        {
            return Err(error("only A-Z, 0-9, '.', '/' and '-' are allowed"));
        }
        if input.matches('/').count() > 1 {
            return Err(error("more than one '/'"));
        }
        let parts_ok = input.split(['.', '/', '-']).all(|part| !part.is_empty());
        if !parts_ok {
            return Err(error("a separator must stand between two non-empty parts"));
        }
        Ok(Symbol(input.to_owned()))
    }

    /// The symbol as the API spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for crypto pairs such as `BTC/USD`.
    pub fn is_crypto_pair(&self) -> bool {
        self.0.contains('/')
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Symbol {
    type Err = SymbolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Symbol::parse(s)
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Symbol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Symbol::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_symbols_are_accepted() {
        for s in [
            "A",
            "AAPL",
            "BRK.B",
            "BF.B",
            "ABCDW",
            "ABCDU",
            "BTC/USD",
            "ETH/BTC",
            "AAPL240119C00150000",
            "SPY",
            "X",
            "GOOGL",
            "TSLA-W",
            "1INCH/USD",
        ] {
            assert!(Symbol::parse(s).is_ok(), "{s} should be accepted");
        }
    }

    #[test]
    fn hostile_and_malformed_symbols_are_rejected() {
        let long = "A".repeat(10_000);
        for s in [
            "",
            "../x",
            "A;DROP",
            "aapl",
            "AAPL ",
            " AAPL",
            "A/B/C",
            ".A",
            "A.",
            "/USD",
            "BTC/",
            "A..B",
            "A\nB",
            "A%2F",
            "A\\B",
            "ÄPPL",
            long.as_str(),
            "AAPL240119C0015000000X",
        ] {
            assert!(Symbol::parse(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn error_message_is_bounded_for_huge_input() {
        let err = Symbol::parse(&"Z".repeat(10_000)).unwrap_err().to_string();
        assert!(err.len() < 200, "{}", err.len());
    }
}
