//! Where assets, bars and sync runs are kept.
//!
//! [`Store`] is the contract; [`sqlite::SqliteStore`] is the embedded default
//! (one file, WAL). Every write is an idempotent upsert, so a redelivered job
//! changes nothing. The same [`contract`] suite runs against every backend.

pub mod chunk;
/// The contract every backend passes; for tests only (feature `test-support`).
#[cfg(feature = "test-support")]
pub mod contract;
pub mod dynamo;
pub mod migrate;
pub mod run;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::events::Event;
use signal9_alpaca::class::{Classify, ErrorClass};
use signal9_alpaca::{Adjustment, Asset, AssetClass, AssetStatus, Bar, CorporateAction, Feed, Symbol, Timeframe};

pub use dynamo::DynamoStore;
pub(crate) use run::MAX_REJECTIONS_KEPT;
pub use run::{ClassTotals, PageRecord, RunTotals};
pub use sqlite::SqliteStore;

/// One bar series: bars of one symbol at one timeframe, adjustment and feed.
/// Bars of different timeframes never share a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// The symbol.
    pub symbol: Symbol,
    /// The bar length.
    pub timeframe: Timeframe,
    /// The corporate-action adjustment the prices carry.
    pub adjustment: Adjustment,
    /// The feed the bars came from; `None` is the API's default feed.
    pub feed: Option<Feed>,
}

impl fmt::Display for SeriesKey {
    /// `AAPL|1Day|raw|iex`: the partition key of a series.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let feed = self.feed.map_or("default", Feed::as_str);
        write!(f, "{}|{}|{}|{}", self.symbol, self.timeframe, self.adjustment, feed)
    }
}

impl std::str::FromStr for SeriesKey {
    type Err = String;

    /// Reads the partition key back: `AAPL|1Day|raw|iex` (`default` for no feed).
    fn from_str(key: &str) -> Result<Self, Self::Err> {
        let mut parts = key.rsplitn(4, '|');
        let (Some(feed), Some(adjustment), Some(timeframe), Some(symbol)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("not a series key: {key:?}"));
        };
        Ok(SeriesKey {
            symbol: Symbol::parse(symbol).map_err(|e| format!("series key {key:?}: {e}"))?,
            timeframe: timeframe.parse().map_err(|e| format!("series key {key:?}: {e}"))?,
            adjustment: adjustment.parse().map_err(|e| format!("series key {key:?}: {e}"))?,
            feed: match feed {
                "default" => None,
                other => Some(other.parse().map_err(|e| format!("series key {key:?}: {e}"))?),
            },
        })
    }
}

/// The bounds of the keys of every series of `symbol`: `[SYM|, SYM}` (`}`
/// follows `|` in ASCII), for a range read on a sorted key.
pub(crate) fn symbol_key_range(symbol: &Symbol) -> (String, String) {
    (format!("{symbol}|"), format!("{symbol}}}"))
}

/// The series among stored `keys` whose prices `action` changes (its symbol,
/// an adjustment naming the action's component), each with its
/// `bars.invalidated` event: the shared rule of every backend's
/// [`Store::apply_action`]. Keys that do not read back are skipped.
pub(crate) fn plan_action(action: &CorporateAction, keys: &[String], at: DateTime<Utc>) -> Vec<(SeriesKey, Event)> {
    let mut keys: Vec<&String> = keys.iter().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| k.parse::<SeriesKey>().ok())
        .filter(|k| k.symbol == action.symbol && action.kind.changes(&k.adjustment))
        .map(|k| {
            let event = Event::bars_invalidated(action, &k, at);
            (k, event)
        })
        .collect()
}

/// An asset as the store keeps it: the API's record plus our bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAsset {
    /// The API's record as last seen.
    pub asset: Asset,
    /// When signal9 first stored it.
    pub first_seen: DateTime<Utc>,
    /// When its record last changed.
    pub updated_at: DateTime<Utc>,
    /// Set when a sync stopped seeing it; never deleted.
    pub delisted_at: Option<DateTime<Utc>>,
    /// The status before the last status change.
    pub previous_status: Option<AssetStatus>,
    /// The tradable flag before the last change of it.
    pub previous_tradable: Option<bool>,
    /// When status or tradable last changed.
    pub status_changed_at: Option<DateTime<Utc>>,
    /// When a listing (or lookup) last returned it; `None` for assets stored
    /// before signal9 recorded it. Reconcile delists what a run's listings
    /// did not see: assets whose `seen_at` is older than the run's listing.
    pub seen_at: Option<DateTime<Utc>>,
}

/// What an upsert did to one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum AssetChange {
    /// Not known before.
    New,
    /// Known, and some field differs (or it was delisted and is back).
    Updated {
        /// `Some((before, after))` when the status changed.
        status: Option<(AssetStatus, AssetStatus)>,
        /// `Some((before, after))` when the tradable flag changed.
        tradable: Option<(bool, bool)>,
        /// True when a delisted asset was seen again.
        relisted: bool,
    },
    /// Exactly as stored; nothing was written.
    Unchanged,
}

/// The outcome of an upsert for one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetWrite {
    /// The asset's id.
    pub id: String,
    /// What changed.
    pub change: AssetChange,
}

/// Which assets [`Store::list_assets`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetFilter {
    /// Only this class.
    pub class: Option<AssetClass>,
    /// Only this status.
    pub status: Option<AssetStatus>,
    /// Include assets marked delisted.
    pub include_delisted: bool,
}

/// The state of a sync run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Pages are being listed.
    Running,
    /// All pages done; reconciled and closed.
    Completed,
    /// The delisting guard refused to reconcile.
    Suspect,
    /// Given up.
    Failed,
}

impl RunStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Suspect => "suspect",
            RunStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Suspect,
            RunStatus::Failed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A sync run's record.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRun {
    /// The run id (the UTC date for scheduled runs).
    pub run_id: String,
    /// When it was created.
    pub started_at: DateTime<Utc>,
    /// How many pages the run has.
    pub pages_total: u32,
    /// How many distinct pages are recorded done.
    pub pages_done: u32,
    /// Where it stands.
    pub status: RunStatus,
    /// When it was closed.
    pub finished_at: Option<DateTime<Utc>>,
    /// The run's result, once closed.
    pub result: Option<RunTotals>,
    /// When its pages were published; `None` if whoever created the run
    /// died before publishing them (the scheduler heals such a run).
    pub published_at: Option<DateTime<Utc>>,
    /// When its reconcile was last claimed, if ever.
    pub reconcile_claimed_at: Option<DateTime<Utc>>,
}

/// Progress of a run after a page was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunProgress {
    /// Distinct pages done.
    pub pages_done: u32,
    /// Pages in the run.
    pub pages_total: u32,
}

impl RunProgress {
    /// True once every page is done.
    pub fn is_complete(self) -> bool {
        self.pages_done >= self.pages_total
    }
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (busy, I/O, connection): worth a retry.
    #[error("store backend failed: {0}")]
    Backend(String),
    /// Stored data could not be read back; a retry will not help.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A reference to something that is not stored.
    #[error("not found: {0}")]
    NotFound(String),
}

impl Classify for StoreError {
    fn dependency(&self) -> Option<&'static str> {
        matches!(self, StoreError::Backend(_)).then_some("store")
    }

    fn class(&self) -> ErrorClass {
        match self {
            StoreError::Backend(_) => ErrorClass::Transient,
            StoreError::Corrupt(_) | StoreError::NotFound(_) => ErrorClass::Permanent,
        }
    }
}

/// The contract every backend meets. All writes are idempotent upserts.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Creates tables and indexes if they do not exist. Safe to call again.
    async fn init(&self) -> Result<(), StoreError>;

    /// Whether the store can take writes now: a worker asks before it
    /// consumes again after store failures. By default one small read.
    async fn ping(&self) -> Result<(), StoreError> {
        self.latest_run().await.map(|_| ())
    }

    /// Upserts assets with no run, as [`Store::upsert_assets_seen`] does.
    async fn upsert_assets(&self, assets: &[Asset], at: DateTime<Utc>) -> Result<Vec<AssetWrite>, StoreError> {
        self.upsert_assets_seen(assets, at, None).await
    }

    /// Upserts assets a listing or lookup returned at `at` (identity = `id`)
    /// and says what happened to each, in the input's order. Every asset is
    /// stamped `seen_at = at` (never moved back); a changed one is rewritten,
    /// and a delisted one seen again is relisted. The event a change raises
    /// ([`Event::for_change`]) goes into the outbox in the same transaction
    /// (SQLite) or the same single-item write (DynamoDB: the event lives in
    /// the changed item) as the change.
    async fn upsert_assets_seen(
        &self,
        assets: &[Asset],
        at: DateTime<Utc>,
        run_id: Option<&str>,
    ) -> Result<Vec<AssetWrite>, StoreError>;

    /// Stamps `seen_at = at` on stored assets a listing returned but
    /// validation refused: the API still lists them, so they are not
    /// delisted. Unknown ids are skipped. Returns how many were stamped.
    async fn mark_seen(&self, ids: &[String], at: DateTime<Utc>) -> Result<usize, StoreError>;

    /// One asset by id.
    async fn get_asset(&self, id: &str) -> Result<Option<StoredAsset>, StoreError>;

    /// Every stored asset with this symbol (a recycled ticker has several).
    async fn assets_by_symbol(&self, symbol: &Symbol) -> Result<Vec<StoredAsset>, StoreError>;

    /// Assets matching the filter, ordered by symbol then id.
    async fn list_assets(&self, filter: &AssetFilter) -> Result<Vec<StoredAsset>, StoreError>;

    /// Marks assets delisted at `at` (never deletes them or their bars),
    /// each with its `asset.delisted` event in the outbox, written together.
    /// Returns how many were not delisted before.
    async fn mark_delisted(&self, ids: &[String], at: DateTime<Utc>, run_id: Option<&str>)
        -> Result<usize, StoreError>;

    /// Upserts bars of one series (key = series + bar time). Returns how many
    /// bars were written.
    async fn upsert_bars(&self, series: &SeriesKey, bars: &[Bar]) -> Result<usize, StoreError> {
        self.upsert_bar_sets(&[(series.clone(), bars.to_vec())]).await
    }

    /// Upserts the bars of several series at once, as [`Store::upsert_bars`]
    /// does for each, packed into as few writes as the backend allows.
    /// Returns how many bars were written.
    async fn upsert_bar_sets(&self, sets: &[(SeriesKey, Vec<Bar>)]) -> Result<usize, StoreError>;

    /// The series' bars with `start <= t <= end`, ordered by time.
    async fn bars(&self, series: &SeriesKey, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Vec<Bar>, StoreError>;

    /// Records that the inclusive range `[start, end]` of a series is stored
    /// in full (every bar the API has for it). Overlapping ranges merge.
    async fn add_coverage(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.add_coverage_many(std::slice::from_ref(series), start, end).await
    }

    /// Records `[start, end]` as held in full for each of several series,
    /// as [`Store::add_coverage`] does for each, in as few writes as the
    /// backend allows.
    async fn add_coverage_many(
        &self,
        series: &[SeriesKey],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// True when one recorded range holds all of `[start, end]`.
    async fn covers(&self, series: &SeriesKey, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<bool, StoreError>;

    /// The end of the covered range holding `start`, if one does: the
    /// store answers `[start, that end]` of the series without a call.
    async fn covered_until(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// How many bars of the series lie in `[start, end]`, without reading
    /// them into memory.
    async fn count_bars(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<usize, StoreError>;

    /// Applies a corporate action to the stored bars: drops the coverage and
    /// the bars of every stored series of the action's symbol whose
    /// adjustment it changes ([`ActionKind::changes`]; raw series are never
    /// touched), so the next request fetches them newly adjusted, and
    /// records the action with one `bars.invalidated` event per dropped
    /// series in the outbox. An action applied before changes nothing and
    /// returns `None`; otherwise the series dropped.
    ///
    /// [`ActionKind::changes`]: signal9_alpaca::ActionKind::changes
    async fn apply_action(
        &self,
        action: &CorporateAction,
        at: DateTime<Utc>,
    ) -> Result<Option<Vec<SeriesKey>>, StoreError>;

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

    /// Merges bars into chunks as [`Store::upsert_bar_sets`] does, except
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

    /// The checkpoints of unfinished bar fetches among `keys` (see
    /// [`crate::ingest::Checkpoint`]): small records, by key. A key with no
    /// checkpoint is absent from the answer.
    async fn checkpoints(&self, keys: &[String]) -> Result<std::collections::HashMap<String, String>, StoreError>;

    /// Writes checkpoints, replacing any under the same key.
    async fn put_checkpoints(&self, entries: &[(String, String)]) -> Result<(), StoreError>;

    /// Removes checkpoints; a key with none is no error.
    async fn delete_checkpoints(&self, keys: &[String]) -> Result<(), StoreError>;

    /// Creates a run if it does not exist. Returns false (changing nothing)
    /// when it already exists.
    async fn create_run(&self, run_id: &str, pages_total: u32, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Records one page of a run as done; recording the same page again
    /// changes nothing (the first record stays).
    async fn record_page(&self, run_id: &str, page: &PageRecord) -> Result<RunProgress, StoreError>;

    /// Replaces a recorded page with a newer listing of it (reconcile lists
    /// a page again when its listing is too old to compare with the others).
    async fn replace_page(&self, run_id: &str, page: &PageRecord) -> Result<(), StoreError>;

    /// Every recorded page of a run, ordered by page id.
    async fn page_records(&self, run_id: &str) -> Result<Vec<PageRecord>, StoreError>;

    /// Records that the run's pages were published.
    async fn mark_published(&self, run_id: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Claims the run's reconcile at `at`. While the run is running, exactly
    /// one caller gets `true`, unless the claim is older than `stale_after`
    /// (its holder died): then one more caller may take it over. A closed
    /// run is never claimed.
    async fn claim_reconcile(
        &self,
        run_id: &str,
        at: DateTime<Utc>,
        stale_after: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Closes a run with its final status and result, and puts its
    /// `sync.completed` or `sync.suspect` event in the outbox, together.
    async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        result: &RunTotals,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// One run.
    async fn get_run(&self, run_id: &str) -> Result<Option<SyncRun>, StoreError>;

    /// The most recently started run.
    async fn latest_run(&self) -> Result<Option<SyncRun>, StoreError>;

    /// The `limit` most recently started runs, newest first.
    async fn recent_runs(&self, limit: usize) -> Result<Vec<SyncRun>, StoreError>;

    /// The most recently started run that completed.
    async fn last_completed_run(&self) -> Result<Option<SyncRun>, StoreError>;

    /// About `limit` events in the outbox (more when the last item read
    /// holds several), oldest first.
    async fn pending_events(&self, limit: usize) -> Result<Vec<PendingEvent>, StoreError>;

    /// Removes published events from the outbox. An event written beside
    /// them since they were read stays (and they may be sent again with it).
    async fn events_sent(&self, sent: &[PendingEvent]) -> Result<(), StoreError>;
}

/// A page of bars in the layout before chunks (see [`Store::legacy_bars`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegacyPage {
    /// Bars with their series key as stored.
    pub bars: Vec<(String, Bar)>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<String>,
}

/// An event waiting in a store's outbox, with the backend's receipt for
/// removing it once published.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// The event.
    pub event: Event,
    /// Where it is kept (opaque; the backend's own).
    pub receipt: String,
}

/// What an upsert writes for one asset: the record after it (`None` when
/// only the `seen_at` stamp moves) and the event it raises.
#[derive(Debug)]
pub(crate) struct AssetPlan {
    pub write: AssetWrite,
    pub after: StoredAsset,
    pub rewrite: bool,
    pub event: Option<Event>,
}

/// The event a delisting raises, or `None` when the asset is delisted
/// already (nothing to write): the shared rule of every backend's
/// [`Store::mark_delisted`]. The write sets `delisted_at` and `updated_at`
/// to `at`.
pub(crate) fn plan_delist(before: &StoredAsset, at: DateTime<Utc>, run_id: Option<&str>) -> Option<Event> {
    before
        .delisted_at
        .is_none()
        .then(|| Event::delisted(before, run_id, at))
}

/// Plans an upsert of one asset against its stored record: the shared
/// logic of every backend's [`Store::upsert_assets_seen`].
pub(crate) fn plan_asset(
    before: Option<&StoredAsset>,
    fresh: &Asset,
    at: DateTime<Utc>,
    run_id: Option<&str>,
) -> AssetPlan {
    let change = classify_change(before, fresh);
    let event = Event::for_change(before, fresh, &change, run_id, at);
    let seen_at = Some(before.and_then(|b| b.seen_at).map_or(at, |s| s.max(at)));
    let after = match (&change, before) {
        (AssetChange::Updated { status, tradable, .. }, Some(before)) => {
            let changed = status.is_some() || tradable.is_some();
            StoredAsset {
                asset: fresh.clone(),
                first_seen: before.first_seen,
                updated_at: at,
                delisted_at: None,
                previous_status: if changed {
                    Some(before.asset.status)
                } else {
                    before.previous_status
                },
                previous_tradable: if changed {
                    Some(before.asset.tradable)
                } else {
                    before.previous_tradable
                },
                status_changed_at: if changed { Some(at) } else { before.status_changed_at },
                seen_at,
            }
        }
        (AssetChange::Unchanged, Some(before)) => StoredAsset {
            seen_at,
            ..before.clone()
        },
        _ => StoredAsset {
            asset: fresh.clone(),
            first_seen: at,
            updated_at: at,
            delisted_at: None,
            previous_status: None,
            previous_tradable: None,
            status_changed_at: None,
            seen_at,
        },
    };
    AssetPlan {
        write: AssetWrite {
            id: fresh.id.clone(),
            change,
        },
        rewrite: change != AssetChange::Unchanged,
        after,
        event,
    }
}

/// The symbols of every active, tradable, not delisted US equity, sorted and
/// deduplicated: what a daily backfill fetches bars for.
pub async fn active_equity_symbols(store: &dyn Store) -> Result<Vec<Symbol>, StoreError> {
    let filter = AssetFilter {
        class: Some(AssetClass::UsEquity),
        status: Some(AssetStatus::Active),
        include_delisted: false,
    };
    let mut symbols: Vec<Symbol> = store
        .list_assets(&filter)
        .await?
        .into_iter()
        .filter(|a| a.asset.tradable)
        .map(|a| a.asset.symbol)
        .collect();
    symbols.sort();
    symbols.dedup();
    Ok(symbols)
}

/// Compares a stored asset with a fresh one from the API.
pub(crate) fn classify_change(stored: Option<&StoredAsset>, fresh: &Asset) -> AssetChange {
    let Some(stored) = stored else {
        return AssetChange::New;
    };
    let relisted = stored.delisted_at.is_some();
    if stored.asset == *fresh && !relisted {
        return AssetChange::Unchanged;
    }
    let status = (stored.asset.status != fresh.status).then_some((stored.asset.status, fresh.status));
    let tradable = (stored.asset.tradable != fresh.tradable).then_some((stored.asset.tradable, fresh.tradable));
    AssetChange::Updated {
        status,
        tradable,
        relisted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_failures_retry_and_bad_data_does_not() {
        assert_eq!(StoreError::Backend("busy".into()).class(), ErrorClass::Transient);
        assert_eq!(StoreError::Corrupt("x".into()).class(), ErrorClass::Permanent);
        assert_eq!(StoreError::NotFound("run".into()).class(), ErrorClass::Permanent);
    }

    #[test]
    fn run_statuses_read_back_as_written() {
        for status in [
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Suspect,
            RunStatus::Failed,
        ] {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("paused"), None);
    }
}
