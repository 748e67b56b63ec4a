//! The asset sync: list one slice of the universe, and close a run.
//!
//! Which assets a run saw is stamped on the assets (`seen_at`, the time of
//! the listing that returned them), never collected into one record, so
//! reconcile works for any universe size on either backend. Closing a run:
//!
//! 1. **A consistent snapshot.** A page listed longer ago than the snapshot
//!    window (say, replayed from the dead-letter queue hours after the
//!    others) is listed again first, so no page is compared with a stale one.
//! 2. **Census per class.** For each class the run listed, the assets that
//!    are known, not delisted, and were not seen since the class's oldest
//!    listing in the run are *unseen*.
//! 3. **The guard, per class** ([`DelistGuard`]): a class whose listing came
//!    back empty while active assets are known, or whose unseen assets exceed
//!    its share of the known active ones, makes the run `suspect` and nothing
//!    at all is delisted.
//! 4. Otherwise the unseen assets are marked delisted (each with its event,
//!    in the outbox) and the run is closed with its totals and event.

use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tracing::Instrument;

use crate::ingest::IngestError;
use crate::job::SyncPage;
use crate::store::{
    AssetChange, AssetFilter, ClassTotals, PageRecord, RunStatus, RunTotals, Store, MAX_REJECTIONS_KEPT,
};
use signal9_alpaca::validate::{self, AssetRejection};
use signal9_alpaca::{AlpacaClient, AssetClass, AssetQuery, AssetStatus};

/// The default share of a class's known active assets one run may delist.
pub(crate) const DEFAULT_MAX_DELIST_FRACTION: f64 = 0.05;
/// The default snapshot window: pages listed further apart are listed again.
pub(crate) const DEFAULT_SNAPSHOT_WINDOW: Duration = Duration::from_secs(30 * 60);

/// A status or tradable change found by a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// Asset id.
    pub id: String,
    /// Ticker.
    pub symbol: String,
    /// `(before, after)` when the status changed.
    pub status: Option<(AssetStatus, AssetStatus)>,
    /// `(before, after)` when the tradable flag changed.
    pub tradable: Option<(bool, bool)>,
}

/// What listing one slice did.
#[derive(Debug, Clone, Default)]
pub struct SliceReport {
    /// When the listing was answered (every asset it saw is stamped so).
    pub listed_at: DateTime<Utc>,
    /// Elements the API returned.
    pub listed: usize,
    /// Assets not known before.
    pub new: usize,
    /// Known assets whose record changed.
    pub updated: usize,
    /// Known assets exactly as stored.
    pub unchanged: usize,
    /// Status and tradable changes among the updated.
    pub status_changes: Vec<StatusChange>,
    /// Elements refused by validation, with reasons.
    pub rejected: Vec<AssetRejection>,
    /// Refused elements whose id names a stored asset: stamped as seen.
    pub rejected_seen: usize,
}

impl SliceReport {
    /// The record of this listing as a page of a run.
    pub fn record(&self, page_id: &str, slice: &SyncPage) -> PageRecord {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        PageRecord {
            page_id: page_id.to_owned(),
            slice: slice.clone(),
            listed_at: self.listed_at,
            listed: n(self.listed),
            new: n(self.new),
            updated: n(self.updated),
            unchanged: n(self.unchanged),
            status_changes: n(self.status_changes.len()),
            rejected: n(self.rejected.len()),
            rejections: self
                .rejected
                .iter()
                .take(MAX_REJECTIONS_KEPT)
                .map(ToString::to_string)
                .collect(),
        }
    }
}

/// The listing query of a slice.
pub fn slice_query(slice: &SyncPage) -> AssetQuery {
    AssetQuery {
        status: slice.status,
        class: Some(slice.asset_class),
        exchange: slice.exchange.clone(),
        attributes: vec![],
    }
}

/// Lists one slice (one API call), validates each asset (a bad one is
/// reported, never fatal), upserts the valid ones stamped as seen at the
/// listing's time, and stamps refused ones that name a stored asset as seen
/// too: the API still lists them, so they must not be delisted.
pub async fn sync_slice(
    client: &AlpacaClient,
    store: &dyn Store,
    query: &AssetQuery,
    run_id: Option<&str>,
) -> Result<SliceReport, IngestError> {
    let listing = client.list_assets(query).await?;
    // Stores keep milliseconds; the record and the stamps must compare equal.
    let now = Utc::now();
    let listed_at = now.duration_trunc(chrono::TimeDelta::milliseconds(1)).unwrap_or(now);
    let mut report = SliceReport {
        listed_at,
        listed: listing.body.len(),
        ..SliceReport::default()
    };
    let mut valid = Vec::with_capacity(listing.body.len());
    for raw in &listing.body {
        match validate::asset(raw) {
            Ok(asset) => valid.push(asset),
            Err(rejection) => report.rejected.push(rejection),
        }
    }
    let writes = store
        .upsert_assets_seen(&valid, listed_at, run_id)
        .instrument(tracing::info_span!("store write", assets = valid.len()))
        .await?;
    for (write, asset) in writes.into_iter().zip(&valid) {
        match write.change {
            AssetChange::New => report.new += 1,
            AssetChange::Unchanged => report.unchanged += 1,
            AssetChange::Updated { status, tradable, .. } => {
                report.updated += 1;
                if status.is_some() || tradable.is_some() {
                    report.status_changes.push(StatusChange {
                        id: write.id,
                        symbol: asset.symbol.to_string(),
                        status,
                        tradable,
                    });
                }
            }
        }
    }
    let refused_ids: Vec<String> = report.rejected.iter().filter_map(|r| r.id.clone()).collect();
    if !refused_ids.is_empty() {
        report.rejected_seen = store.mark_seen(&refused_ids, listed_at).await?;
    }
    Ok(report)
}

/// The delisting guard: per asset class, the largest share of its known
/// active assets one run may delist, and the floor (an empty listing of a
/// class with known active assets is never believed).
#[derive(Debug, Clone, PartialEq)]
pub struct DelistGuard {
    default_fraction: f64,
    per_class: BTreeMap<AssetClass, f64>,
}

impl Default for DelistGuard {
    fn default() -> Self {
        DelistGuard::new(DEFAULT_MAX_DELIST_FRACTION)
    }
}

impl DelistGuard {
    /// A guard with one fraction for every class.
    pub fn new(default_fraction: f64) -> Self {
        DelistGuard {
            default_fraction,
            per_class: BTreeMap::new(),
        }
    }

    /// The same guard with its own fraction for `class`.
    pub fn with_class(mut self, class: AssetClass, fraction: f64) -> Self {
        self.per_class.insert(class, fraction);
        self
    }

    /// Reads per-class fractions: `crypto=0.2,us_equity=0.05`.
    pub fn parse_overrides(text: &str) -> Result<Vec<(AssetClass, f64)>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (class, fraction) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{pair:?}: expected CLASS=FRACTION, e.g. crypto=0.2"))?;
                let class: AssetClass = class.trim().parse()?;
                let fraction: f64 = fraction
                    .trim()
                    .parse()
                    .ok()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or_else(|| format!("{pair:?}: the fraction must be between 0 and 1"))?;
                Ok((class, fraction))
            })
            .collect()
    }

    /// The fraction that applies to `class`.
    pub fn fraction(&self, class: AssetClass) -> f64 {
        self.per_class.get(&class).copied().unwrap_or(self.default_fraction)
    }

    /// The most assets of `class` one run may delist.
    pub fn limit(&self, class: AssetClass, known_active: u64) -> u64 {
        (known_active as f64 * self.fraction(class)).floor() as u64
    }

    /// Why the census is not to be believed; empty when it may be acted on.
    pub(crate) fn judge(&self, census: &[ClassCensus]) -> Vec<String> {
        let mut reasons = Vec::new();
        for class in census {
            let unseen = class.unseen.len() as u64;
            let limit = self.limit(class.class, class.known_active);
            if class.listed == 0 && class.known_active > 0 {
                reasons.push(format!(
                    "{}: the listing returned nothing, but {} active assets are known",
                    class.class, class.known_active
                ));
            } else if unseen > limit {
                reasons.push(format!(
                    "{}: {unseen} known assets were not listed, more than the limit of {limit} ({:.1} % of {} active)",
                    class.class,
                    self.fraction(class.class) * 100.0,
                    class.known_active
                ));
            }
        }
        reasons
    }
}

/// One class as reconcile finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClassCensus {
    /// The class.
    pub class: AssetClass,
    /// Active, not delisted assets known.
    pub known_active: u64,
    /// Elements the run's listings of the class returned.
    pub listed: u64,
    /// Known, not delisted assets not seen since the class's snapshot.
    pub unseen: Vec<String>,
}

/// How a run is closed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileSettings {
    /// The delisting guard.
    pub guard: DelistGuard,
    /// Pages listed longer ago than this are listed again before comparing.
    pub snapshot_window: Duration,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            guard: DelistGuard::default(),
            snapshot_window: DEFAULT_SNAPSHOT_WINDOW,
        }
    }
}

/// The oldest listing time of each class among a run's pages: an asset of
/// the class not seen since then was not listed by this run.
pub(crate) fn snapshots(pages: &[PageRecord]) -> BTreeMap<AssetClass, DateTime<Utc>> {
    let mut since: BTreeMap<AssetClass, DateTime<Utc>> = BTreeMap::new();
    for page in pages {
        since
            .entry(page.slice.asset_class)
            .and_modify(|t| *t = (*t).min(page.listed_at))
            .or_insert(page.listed_at);
    }
    since
}

/// Closes a run whose pages are all recorded: lists stale pages again,
/// applies the guard, delists the unseen or marks the run suspect. Called by
/// exactly one worker (the holder of the run's reconcile claim).
pub async fn close_run(
    client: &AlpacaClient,
    store: &dyn Store,
    run_id: &str,
    settings: &ReconcileSettings,
) -> Result<(RunStatus, RunTotals), IngestError> {
    let mut pages = store.page_records(run_id).await?;
    let mut totals = RunTotals::default();
    let window = chrono::Duration::from_std(settings.snapshot_window).unwrap_or(chrono::Duration::MAX);
    for page in &mut pages {
        if Utc::now() - page.listed_at <= window {
            continue;
        }
        tracing::info!(run_id, page = %page.page_id, listed_at = %page.listed_at, "Listing a stale page again before reconcile");
        let report = sync_slice(client, store, &slice_query(&page.slice), Some(run_id)).await?;
        let fresh = report.record(&page.page_id, &page.slice);
        store.replace_page(run_id, &fresh).await?;
        *page = fresh;
        totals.relisted_pages += 1;
    }
    for page in &pages {
        totals.add_page(page);
    }
    let mut census = Vec::new();
    for (class, since) in snapshots(&pages) {
        let filter = AssetFilter {
            class: Some(class),
            status: None,
            include_delisted: false,
        };
        let stored = store.list_assets(&filter).await?;
        let known_active = stored.iter().filter(|a| a.asset.status == AssetStatus::Active).count() as u64;
        let unseen: Vec<String> = stored
            .into_iter()
            .filter(|a| a.seen_at.is_none_or(|seen| seen < since))
            .map(|a| a.asset.id)
            .collect();
        let listed = totals.classes.get(&class).map_or(0, |c| c.listed);
        census.push(ClassCensus {
            class,
            known_active,
            listed,
            unseen,
        });
    }
    for class in &census {
        let entry = totals.classes.entry(class.class).or_insert_with(ClassTotals::default);
        entry.known_active = class.known_active;
        entry.unseen = class.unseen.len() as u64;
        entry.delist_limit = settings.guard.limit(class.class, class.known_active);
    }
    let reasons = settings.guard.judge(&census);
    let now = Utc::now();
    if !reasons.is_empty() {
        totals.would_delist = census.iter().map(|c| c.unseen.len() as u64).sum();
        totals.suspect = reasons;
        tracing::error!(run_id, reasons = ?totals.suspect, would_delist = totals.would_delist,
            "Sync run is suspect: the guard refused to delist; nothing delisted");
        store.finish_run(run_id, RunStatus::Suspect, &totals, now).await?;
        return Ok((RunStatus::Suspect, totals));
    }
    let unseen: Vec<String> = census
        .into_iter()
        .flat_map(|c| c.unseen)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    totals.delisted = store.mark_delisted(&unseen, now, Some(run_id)).await? as u64;
    store.finish_run(run_id, RunStatus::Completed, &totals, now).await?;
    Ok((RunStatus::Completed, totals))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(class: AssetClass, known_active: u64, listed: u64, unseen: usize) -> ClassCensus {
        ClassCensus {
            class,
            known_active,
            listed,
            unseen: (0..unseen).map(|i| format!("id-{i}")).collect(),
        }
    }

    #[test]
    fn each_class_is_judged_against_its_own_active_assets() {
        let guard = DelistGuard::new(0.05);
        // 35 crypto assets, all unseen: tiny next to 6,000 equities, but the
        // whole class. Judged alone, it is far over its limit.
        let reasons = guard.judge(&[
            census(AssetClass::UsEquity, 6_000, 6_000, 0),
            census(AssetClass::Crypto, 35, 18, 17),
        ]);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].starts_with("crypto: 17 known assets"), "{reasons:?}");
        assert!(guard
            .judge(&[census(AssetClass::UsEquity, 6_000, 5_990, 10)])
            .is_empty());
    }

    #[test]
    fn an_empty_listing_of_a_known_class_is_never_believed() {
        let guard = DelistGuard::new(1.0);
        let reasons = guard.judge(&[census(AssetClass::Crypto, 35, 0, 35)]);
        assert!(reasons[0].contains("returned nothing"), "{reasons:?}");
        assert!(
            guard.judge(&[census(AssetClass::Crypto, 0, 0, 0)]).is_empty(),
            "an empty class that was empty is fine"
        );
    }

    #[test]
    fn per_class_fractions_override_the_default() {
        let guard = DelistGuard::new(0.05).with_class(AssetClass::Crypto, 0.5);
        assert_eq!(guard.limit(AssetClass::Crypto, 35), 17);
        assert_eq!(guard.limit(AssetClass::UsEquity, 35), 1);
        assert!(guard.judge(&[census(AssetClass::Crypto, 35, 18, 17)]).is_empty());
        let parsed = DelistGuard::parse_overrides("crypto=0.2, us_equity=0.01").unwrap_or_default();
        assert_eq!(parsed, vec![(AssetClass::Crypto, 0.2), (AssetClass::UsEquity, 0.01)]);
        for bad in ["crypto", "bond=0.1", "crypto=2", "crypto=x"] {
            assert!(DelistGuard::parse_overrides(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_class_snapshot_is_its_oldest_listing() {
        let at = |s: i64| DateTime::from_timestamp(1_764_000_000 + s, 0).unwrap_or_default();
        let page = |class: AssetClass, exchange: &str, t: i64| PageRecord {
            page_id: format!("{class}-{exchange}"),
            slice: SyncPage {
                asset_class: class,
                exchange: Some(exchange.into()),
                status: None,
            },
            listed_at: at(t),
            listed: 1,
            new: 0,
            updated: 0,
            unchanged: 1,
            status_changes: 0,
            rejected: 0,
            rejections: vec![],
        };
        let since = snapshots(&[
            page(AssetClass::UsEquity, "NYSE", 30),
            page(AssetClass::UsEquity, "NASDAQ", 10),
            page(AssetClass::Crypto, "CRYPTO", 20),
        ]);
        assert_eq!(since[&AssetClass::UsEquity], at(10));
        assert_eq!(since[&AssetClass::Crypto], at(20));
    }
}
