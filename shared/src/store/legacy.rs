//! The per-bar layout of versions before chunks, kept readable until
//! `migrate-store` moves it: the [`LegacyStore`] contract the migration
//! ([`super::migrate`]) uses.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{chunk, SeriesKey, StoreError};
use signal9_alpaca::Bar;

/// The migration's view of a store: the chunks alone, the old layout page
/// by page, a merge in which a chunk wins, and the drop at the end.
#[async_trait]
pub trait LegacyStore: Send + Sync {
    /// The series' bars in `[start, end]` from its chunks alone, not the
    /// per-bar layout of older versions (the migration's check).
    async fn chunked_bars(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<Bar>, StoreError>;

    /// One page of the bars older versions stored one per row or item (the
    /// layout before chunks), for `migrate-store`: up to about `limit` bars
    /// after the position `after` (one this method returned), in the
    /// backend's order, with the position to go on from (`None` after the
    /// last). `None` when the store holds no such layout.
    async fn legacy_bars(&self, after: Option<&str>, limit: usize) -> Result<Option<LegacyPage>, StoreError>;

    /// Merges bars into chunks as [`BarStore::upsert_bar_sets`] does, except
    /// that a bar already in a chunk wins over one of the same time here
    /// (the chunk's is newer than the per-bar data being migrated).
    async fn merge_legacy_bars(&self, sets: &[(SeriesKey, Vec<Bar>)]) -> Result<usize, StoreError>;

    /// Removes the per-bar layout (its table) once migrated; reads stop
    /// consulting it.
    async fn drop_legacy_bars(&self) -> Result<(), StoreError>;

    /// Writes bars in the per-bar layout of versions before chunks, for
    /// the migration's tests.
    #[cfg(feature = "test-support")]
    async fn put_legacy_bars(&self, series: &SeriesKey, bars: &[Bar]) -> Result<(), StoreError>;
}

/// A page of bars in the layout before chunks (see [`LegacyStore::legacy_bars`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegacyPage {
    /// Bars with their series key as stored.
    pub bars: Vec<(String, Bar)>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<String>,
}

/// A bar read while the per-bar layout is left to migrate: the chunked
/// bars of a range, with the per-bar ones of the same range where no chunk
/// holds a bar of that time (a chunk's bar is the newer). The one rule
/// both backends read by.
pub(crate) fn merge_legacy(chunked: Vec<Bar>, legacy: Vec<Bar>) -> Vec<Bar> {
    if legacy.is_empty() {
        chunked
    } else {
        chunk::merge(legacy, &chunked, true)
    }
}
