//! `signal9-alpaca`: Alpaca as signal9 speaks to it. The wire models, the
//! typed query pieces, the HTTP client and the [`Gate`] every call passes,
//! the error classes, and the validation rules for what comes back.
//!
//! Its modules are private, each type has one path (`signal9_alpaca::X`),
//! but for three namespaces kept public: [`class`] (transient or
//! permanent), [`validate`] (the rules for what comes back) and [`urls`]
//! (the API bases).
//!
//! It knows nothing of queues, budgets or stores: `signal9-shared` builds
//! the system (the Redis budget and breaker behind [`Gate`], the store, the
//! broker) on top of it.

mod account;
mod actions;
pub mod class;
mod client;
mod error;
pub(crate) mod model;
mod pages;
mod priority;
mod query;
mod symbol;
mod timeframe;
pub mod urls;
pub mod validate;

pub use account::{check_credentials, AccountCheck};
pub use actions::{ActionKind, ActionsFetch, ActionsQuery, CorporateAction};
#[cfg(feature = "test-support")]
pub use client::Unmetered;
pub use client::{
    AlpacaClient, Api, ApiResponse, BarsFetch, CallOutcome, ClientConfig, CredentialSource, Credentials, Gate,
    RateLimit,
};
pub use error::AlpacaError;
pub use model::{Asset, AssetClass, AssetStatus, Bar, MultiBarsPage};
pub use pages::{PageCursor, MAX_PAGES};
pub use priority::Priority;
pub use query::{Adjustment, AssetQuery, BarRange, BarsQuery, Feed, MAX_LIMIT};
pub use symbol::Symbol;
pub use timeframe::{Timeframe, TimeframeUnit};
