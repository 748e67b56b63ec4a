//! The simulator's deterministic draws and price paths, shared by the
//! bars and the corporate actions: a seeded hash of a symbol, a mixing
//! function, a uniform draw, and a series' smooth price level. A leaf: the
//! bars and the actions both build on it, neither on the other's helpers.

use chrono::{DateTime, Utc};

/// Stocks trade on the NYSE calendar; crypto around the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Market {
    /// US equities.
    Stocks,
    /// Crypto pairs.
    Crypto,
}

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub(crate) fn hash_str(seed: u64, s: &str) -> u64 {
    s.bytes().fold(splitmix(seed), |h, b| splitmix(h ^ u64::from(b)))
}

pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The price level of a series at `t` before any split: the smooth path
/// its bars scatter around.
pub(crate) fn level(seed: u64, symbol: &str, market: Market, t: DateTime<Utc>) -> f64 {
    let sym = hash_str(seed, symbol);
    let base = match symbol {
        "BTC/USD" => 60_000.0,
        "ETH/USD" => 3_000.0,
        _ if market == Market::Crypto => 0.05 + 200.0 * unit(sym),
        _ => 0.5 + 500.0 * unit(sym),
    };
    let days = t.timestamp() as f64 / 86_400.0;
    base * (0.35 * (days / 37.0 + 6.0 * unit(splitmix(sym))).sin()).exp()
}

/// The sim's hash of a string under a seed, for other modules' draws.
pub(crate) fn hash(seed: u64, s: &str) -> u64 {
    hash_str(seed, s)
}

/// The sim's mixing function.
pub(crate) fn mix(x: u64) -> u64 {
    splitmix(x)
}
