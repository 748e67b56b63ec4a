//! Where assets, bars and sync runs are kept.
//!
//! The contract is split by domain: [`AssetStore`] (assets), [`BarStore`]
//! (bars, the ranges held in full, corporate actions, checkpoints),
//! [`LegacyStore`] (the per-bar layout before chunks, for the migration),
//! [`RunStore`] (sync runs) and [`OutboxStore`] (events beside the changes
//! that raise them). [`Store`] is all of them with `init` and `ping`: what
//! a process opens. [`SqliteStore`] is the embedded default (one file, WAL),
//! [`DynamoStore`] the production backend; each is a folder with a file per
//! domain. Every write is an idempotent upsert, so a redelivered job changes
//! nothing. The same `contract` suite (by domain too) runs against every
//! backend.

mod assets;
mod bars;
pub mod chunk;
/// The contract every backend passes; for tests only (feature `test-support`).
#[cfg(feature = "test-support")]
pub mod contract;
pub mod dynamo;
mod error;
mod legacy;
pub mod migrate;
mod outbox;
mod run;
pub mod sqlite;

use async_trait::async_trait;
use std::fmt;

pub use assets::{active_equity_symbols, AssetChange, AssetFilter, AssetStore, AssetWrite, StoredAsset};
pub(crate) use assets::{plan_asset, plan_delist};
pub(crate) use bars::{plan_action, symbol_key_range};
pub use bars::{BarStore, SeriesKey};
pub use dynamo::DynamoStore;
pub use error::StoreError;
pub use legacy::{LegacyPage, LegacyStore};
pub use outbox::{OutboxStore, PendingEvent};
pub(crate) use run::MAX_REJECTIONS_KEPT;
pub use run::{ClassTotals, PageRecord, RunProgress, RunStatus, RunStore, RunTotals, SyncRun};
pub use sqlite::SqliteStore;

/// A whole store: every domain, plus what a process does once it has
/// opened one. `Arc<dyn Store>` is what the worker, the API and the
/// producer hold; a part that needs one domain may take that trait alone.
#[async_trait]
pub trait Store: AssetStore + BarStore + LegacyStore + RunStore + OutboxStore + Send + Sync + fmt::Debug {
    /// Creates tables and indexes if they do not exist. Safe to call again.
    async fn init(&self) -> Result<(), StoreError>;

    /// Whether the store can take writes now: a worker asks before it
    /// consumes again after store failures. By default one small read.
    async fn ping(&self) -> Result<(), StoreError> {
        self.latest_run().await.map(|_| ())
    }
}
