//! signal9's shared library: everything the producer, the worker and the
//! tests have in common.
//!
//! - [`alpaca`]: the Alpaca client, its wire models and typed query pieces;
//! - [`validate`]: what counts as real data and what is rejected;
//! - [`store`]: the `Store` trait and its embedded SQLite implementation;
//! - [`config`]: the settings every binary reads from flags and environment;
//! - [`ingest`]: the units of work: sync one slice of assets, fetch one set of bars;
//! - [`error`]: the transient/permanent split every failure carries.

pub mod alpaca;
pub mod config;
pub mod error;
pub mod ingest;
pub mod store;
pub mod validate;
