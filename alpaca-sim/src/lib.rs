//! `alpaca-sim`: a faithful simulator of the Alpaca API surface signal9 uses.
//!
//! It serves the trading API's asset listing and lookup, the market-data
//! API's stock and crypto bars (multi- and single-symbol, paginated) and
//! corporate actions (whose splits its raw prices contain, see [`actions`]), checks
//! credentials, enforces a sliding-window rate limit per key with the real
//! headers and 429 body, injects faults on demand, and counts what it saw.
//! Its data is a pure function of `--seed`, `--assets` and `--now`, so tests
//! can compute the ground truth they compare against.
//!
//! It depends on nothing of signal9's: its calendar is its own, so that the
//! tests that run the system against it can catch the system's mistakes.

pub mod actions;
pub mod bars;
pub mod calendar;
mod prices;
pub mod server;
pub mod universe;

pub use server::{spawn, spawn_on, Faults, RunningSim, Sim, SimConfig};
