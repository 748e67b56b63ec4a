//! Sync runs: the run's record and state, the [`RunStore`] contract, and
//! the records of a run: one per listed page, and the run's totals.
//!
//! They are typed so that reconcile's inputs are checked by the compiler,
//! and bounded: a page record holds counts and at most
//! [`MAX_REJECTIONS_KEPT`] rejection reasons, never the ids it saw. Which
//! assets a run saw is stamped on the assets themselves (`seen_at`), so no
//! record grows with the universe.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::StoreError;
use crate::events::{Event, EventType};

use crate::job::SyncPage;
use signal9_alpaca::AssetClass;

/// Rejection reasons kept in a page record or run result; the rest are counted.
pub(crate) const MAX_REJECTIONS_KEPT: usize = 20;

/// What one listed page of a run did, as recorded in the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageRecord {
    /// The page's id within its run (`sync:{run}:{slice}`).
    pub page_id: String,
    /// The slice it lists, so reconcile can list it again.
    pub slice: SyncPage,
    /// When the listing was answered; every asset it saw carries this time
    /// as its `seen_at`.
    pub listed_at: DateTime<Utc>,
    /// Elements the API returned, valid or not.
    pub listed: u32,
    /// Assets not known before.
    pub new: u32,
    /// Known assets whose record changed.
    pub updated: u32,
    /// Known assets exactly as stored.
    pub unchanged: u32,
    /// Status or tradable changes among the updated.
    pub status_changes: u32,
    /// Elements refused by validation (they still count as seen when they
    /// carry a known id).
    pub rejected: u32,
    /// The first few rejection reasons.
    #[serde(default)]
    pub rejections: Vec<String>,
}

/// One asset class in a run's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassTotals {
    /// Active, not delisted assets of the class known before reconcile.
    pub known_active: u64,
    /// Elements the class's pages returned.
    pub listed: u64,
    /// Known, not delisted assets no page of the run saw.
    pub unseen: u64,
    /// The most assets the guard lets this class delist in one run.
    pub delist_limit: u64,
}

/// A closed run's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunTotals {
    /// Pages recorded.
    pub pages: u32,
    /// Pages listed again at reconcile because their listing was too old.
    pub relisted_pages: u32,
    /// Elements the pages returned.
    pub listed: u64,
    /// New assets.
    pub new: u64,
    /// Changed assets.
    pub updated: u64,
    /// Unchanged assets.
    pub unchanged: u64,
    /// Status or tradable changes.
    pub status_changes: u64,
    /// Elements refused by validation.
    pub rejected: u64,
    /// The first few rejection reasons.
    pub rejections: Vec<String>,
    /// Per asset class: what the guard looked at.
    pub classes: BTreeMap<AssetClass, ClassTotals>,
    /// Assets marked delisted.
    pub delisted: u64,
    /// Assets that would have been delisted, when the guard refused.
    pub would_delist: u64,
    /// Why the run is suspect; empty when it is not.
    pub suspect: Vec<String>,
}

impl RunTotals {
    /// Adds one page's counts.
    pub(crate) fn add_page(&mut self, page: &PageRecord) {
        self.pages += 1;
        self.listed += u64::from(page.listed);
        self.new += u64::from(page.new);
        self.updated += u64::from(page.updated);
        self.unchanged += u64::from(page.unchanged);
        self.status_changes += u64::from(page.status_changes);
        self.rejected += u64::from(page.rejected);
        let room = MAX_REJECTIONS_KEPT.saturating_sub(self.rejections.len());
        self.rejections.extend(page.rejections.iter().take(room).cloned());
        self.classes.entry(page.slice.asset_class).or_default().listed += u64::from(page.listed);
    }
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

    pub(crate) fn parse(s: &str) -> Option<Self> {
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

/// Sync runs: created once, a page recorded at a time, reconciled by one
/// claimant, closed with their totals.
#[async_trait]
pub trait RunStore: Send + Sync {
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
}

/// The event that closes a run.
impl Event {
    /// `sync.completed` or `sync.suspect` for a closed run.
    pub(crate) fn run_closed(run_id: &str, status: RunStatus, totals: &RunTotals, at: DateTime<Utc>) -> Self {
        let kind = if status == RunStatus::Suspect {
            EventType::SyncSuspect
        } else {
            EventType::SyncCompleted
        };
        let data = serde_json::to_value(totals).unwrap_or_default();
        Event::stable(kind, run_id, Some(run_id), data, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(class: AssetClass, listed: u32, rejections: usize) -> PageRecord {
        PageRecord {
            page_id: format!("p-{class}"),
            slice: SyncPage {
                asset_class: class,
                exchange: None,
                status: None,
            },
            listed_at: DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default(),
            listed,
            new: 1,
            updated: 2,
            unchanged: 3,
            status_changes: 1,
            rejected: u32::try_from(rejections).unwrap_or(0),
            rejections: (0..rejections).map(|i| format!("reason {i}")).collect(),
        }
    }

    #[test]
    fn totals_add_pages_per_class_and_keep_few_reasons() {
        let mut totals = RunTotals::default();
        totals.add_page(&page(AssetClass::UsEquity, 100, 15));
        totals.add_page(&page(AssetClass::Crypto, 30, 15));
        assert_eq!(
            (totals.pages, totals.listed, totals.new, totals.rejected),
            (2, 130, 2, 30)
        );
        assert_eq!(totals.rejections.len(), MAX_REJECTIONS_KEPT);
        assert_eq!(totals.classes[&AssetClass::Crypto].listed, 30);
        let json = serde_json::to_string(&totals).unwrap_or_default();
        assert!(json.contains("\"crypto\""), "{json}");
        let back: RunTotals = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, totals);
    }

    #[test]
    fn a_page_record_stays_small_whatever_the_listing_size() {
        let record = page(AssetClass::UsEquity, 4_000_000, MAX_REJECTIONS_KEPT);
        let bytes = serde_json::to_vec(&record).unwrap_or_default().len();
        assert!(bytes < 2_000, "{bytes} bytes");
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

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
