//! Alpaca: the wire models, the typed query pieces and the HTTP client.

pub mod account;
pub mod client;
pub mod error;
pub mod model;
pub mod query;
pub mod symbol;
pub mod timeframe;

pub use account::{check_credentials, AccountCheck};
#[cfg(feature = "test-support")]
pub use client::Unmetered;
pub use client::{
    AlpacaClient, Api, ApiResponse, AssetQuery, BarsFetch, CallOutcome, ClientConfig, CredentialSource, Credentials,
    Gate, RateLimit,
};
pub use error::AlpacaError;
pub use model::{Asset, AssetClass, AssetStatus, Bar, MultiBarsPage, SymbolBarsPage};
pub use query::{Adjustment, BarsQuery, Feed};
pub use symbol::Symbol;
pub use timeframe::{Timeframe, TimeframeUnit};
