//! Moving bars from the per-bar layout of versions before chunks into
//! chunks (`signal9-producer migrate-store`).
//!
//! The per-bar rows or items are read a page at a time in the backend's
//! order and merged into chunks with the chunk's bar winning where one of
//! the same time is stored (it was written since, by a worker of this
//! version). Each page is then **verified**: every bar time it held is read
//! back from the chunks. Only then does the position go into the store's
//! checkpoints (`migrate|bars`), so a stopped migration goes on from the
//! last verified page when run again, and merging a page twice changes
//! nothing. When the last page is verified, the per-bar table is dropped;
//! until then every read consults it, so the store answers the same
//! throughout.

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::{SeriesKey, Store, StoreError};
use signal9_alpaca::Bar;

/// The checkpoint key of a migration in progress.
pub const CHECKPOINT: &str = "migrate|bars";

/// Where a migration is, kept in the store's checkpoints between pages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The position after the last verified page.
    pub position: Option<String>,
    /// Pages merged and verified.
    pub pages: u64,
    /// Bars merged and verified.
    pub bars: u64,
    /// Rows whose series key does not read (left in place, reported).
    pub skipped: u64,
}

/// What a whole migration did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Migration {
    /// Progress at the end (counts include earlier runs of a resumed one).
    pub progress: Progress,
    /// Whether it went on from an earlier run's checkpoint.
    pub resumed: bool,
    /// Distinct series seen in this run.
    pub series: usize,
    /// Whether the per-bar table was dropped (not when rows were skipped).
    pub dropped: bool,
}

/// Migrates the store's per-bar bars into chunks, `batch` bars a page,
/// calling `on_page` after each verified page. `Ok(None)` when the store
/// has no per-bar layout.
pub async fn migrate_bars(
    store: &dyn Store,
    batch: usize,
    mut on_page: impl FnMut(&Progress),
) -> Result<Option<Migration>, StoreError> {
    let saved = store.checkpoints(&[CHECKPOINT.to_owned()]).await?;
    let resumed = saved.contains_key(CHECKPOINT);
    let mut progress: Progress = match saved.get(CHECKPOINT) {
        Some(body) => {
            serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("migration checkpoint: {e}")))?
        }
        None => Progress::default(),
    };
    let mut series_seen = BTreeSet::new();
    loop {
        let Some(page) = store.legacy_bars(progress.position.as_deref(), batch).await? else {
            if resumed || progress.pages > 0 {
                break;
            }
            return Ok(None);
        };
        let mut sets: BTreeMap<String, Vec<Bar>> = BTreeMap::new();
        for (key, bar) in page.bars {
            sets.entry(key).or_default().push(bar);
        }
        let mut typed = Vec::new();
        for (key, bars) in sets {
            match key.parse::<SeriesKey>() {
                Ok(series) => {
                    series_seen.insert(key);
                    typed.push((series, bars));
                }
                Err(reason) => {
                    tracing::warn!(%reason, rows = bars.len(), "Per-bar rows whose series does not read are left in place");
                    progress.skipped += bars.len() as u64;
                }
            }
        }
        store.merge_legacy_bars(&typed).await?;
        progress.bars += verify(store, &typed).await?;
        progress.pages += 1;
        progress.position = page.next.clone();
        let body = serde_json::to_string(&progress).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        store.put_checkpoints(&[(CHECKPOINT.to_owned(), body)]).await?;
        on_page(&progress);
        if page.next.is_none() {
            break;
        }
    }
    let dropped = progress.skipped == 0;
    if dropped {
        store.drop_legacy_bars().await?;
        store.delete_checkpoints(&[CHECKPOINT.to_owned()]).await?;
    }
    Ok(Some(Migration {
        progress,
        resumed,
        series: series_seen.len(),
        dropped,
    }))
}

/// Reads back every bar time of the page from the chunks; fails naming the
/// first series with a time missing. Returns the bars verified.
async fn verify(store: &dyn Store, sets: &[(SeriesKey, Vec<Bar>)]) -> Result<u64, StoreError> {
    let mut verified = 0;
    for (series, bars) in sets {
        let (Some(lo), Some(hi)) = (bars.iter().map(|b| b.time).min(), bars.iter().map(|b| b.time).max()) else {
            continue;
        };
        let stored: BTreeSet<i64> = store
            .chunked_bars(series, lo, hi)
            .await?
            .iter()
            .map(|b| b.time.timestamp_millis())
            .collect();
        if let Some(missing) = bars.iter().find(|b| !stored.contains(&b.time.timestamp_millis())) {
            return Err(StoreError::Corrupt(format!(
                "migration check: {series} has no bar at {} in its chunks",
                DateTime::to_rfc3339(&missing.time)
            )));
        }
        verified += bars.len() as u64;
    }
    Ok(verified)
}
