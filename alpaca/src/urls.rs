//! Where Alpaca's APIs live. Every default base URL is written here once;
//! configuration and secrets pick among them.

/// The paper-trading API (the default: a key for paper trading cannot
/// place a live order).
pub const PAPER_TRADING: &str = "https://paper-api.alpaca.markets";
/// The live-trading API.
pub const LIVE_TRADING: &str = "https://api.alpaca.markets";
/// The market-data API (the same for paper and live keys).
pub const DATA: &str = "https://data.alpaca.markets";

/// The trading API for a paper or a live key.
pub fn trading(paper: bool) -> &'static str {
    if paper {
        PAPER_TRADING
    } else {
        LIVE_TRADING
    }
}
