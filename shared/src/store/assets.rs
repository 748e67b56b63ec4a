//! Assets: the API's records with signal9's bookkeeping ([`StoredAsset`]),
//! the [`AssetStore`] contract, and the upsert and delisting rules every
//! backend shares ([`plan_asset`], [`plan_delist`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::events::{listed_data, Event, EventType};
use serde_json::json;
use signal9_alpaca::{Asset, AssetClass, AssetStatus, Symbol};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// Which assets [`AssetStore::list_assets`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetFilter {
    /// Only this class.
    pub class: Option<AssetClass>,
    /// Only this status.
    pub status: Option<AssetStatus>,
    /// Include assets marked delisted.
    pub include_delisted: bool,
}

/// Assets, kept by id and found by symbol. All writes are idempotent upserts.
#[async_trait]
pub trait AssetStore: Send + Sync {
    /// Upserts assets with no run, as [`AssetStore::upsert_assets_seen`] does.
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
/// [`AssetStore::mark_delisted`]. The write sets `delisted_at` and `updated_at`
/// to `at`.
pub(crate) fn plan_delist(before: &StoredAsset, at: DateTime<Utc>, run_id: Option<&str>) -> Option<Event> {
    before
        .delisted_at
        .is_none()
        .then(|| Event::delisted(before, run_id, at))
}

/// Plans an upsert of one asset against its stored record: the shared
/// logic of every backend's [`AssetStore::upsert_assets_seen`].
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

/// The events of asset changes: built here, beside the store types they
/// describe, so the event module needs no store type.
impl Event {
    /// The event an upsert's change raises, if any: `asset.listed` for a new
    /// or relisted asset, `asset.status_changed` for a status or tradable
    /// change. `before` is the stored record the change was found against.
    pub(crate) fn for_change(
        before: Option<&StoredAsset>,
        after: &Asset,
        change: &AssetChange,
        run_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Option<Self> {
        match (change, before) {
            (AssetChange::New, _) => Some(Event::listed(after, run_id, at)),
            (AssetChange::Updated { relisted: true, .. }, Some(before)) => {
                let delisted = before.delisted_at.map(|t| t.to_rfc3339()).unwrap_or_default();
                Some(Event::stable(
                    EventType::AssetListed,
                    &format!("{}|relisted|{delisted}", after.id),
                    run_id,
                    listed_data(after, true),
                    at,
                ))
            }
            (AssetChange::Updated { status, tradable, .. }, Some(before)) if status.is_some() || tradable.is_some() => {
                let data = json!({
                    "id": after.id, "symbol": after.symbol, "status": status, "tradable": tradable,
                });
                let identity = format!(
                    "{}|{}|{status:?}|{tradable:?}",
                    after.id,
                    before.updated_at.to_rfc3339()
                );
                Some(Event::stable(
                    EventType::AssetStatusChanged,
                    &identity,
                    run_id,
                    data,
                    at,
                ))
            }
            _ => None,
        }
    }

    /// `asset.delisted` for a stored asset a run stopped seeing.
    pub fn delisted(before: &StoredAsset, run_id: Option<&str>, at: DateTime<Utc>) -> Self {
        let data = json!({"asset_id": before.asset.id, "symbol": before.asset.symbol});
        let identity = format!("{}|{}", before.asset.id, before.updated_at.to_rfc3339());
        Event::stable(EventType::AssetDelisted, &identity, run_id, data, at)
    }
}
