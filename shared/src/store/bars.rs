//! Bars: the series key, the [`BarStore`] contract (bars, the ranges held
//! in full, corporate actions, the checkpoints of unfinished fetches), and
//! the rules every backend shares.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

use super::StoreError;
use crate::events::{Event, EventType};
use serde_json::json;
use signal9_alpaca::{Adjustment, Bar, CorporateAction, Feed, Symbol, Timeframe};

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
/// [`BarStore::apply_action`]. Keys that do not read back are skipped.
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

/// Bar series with the ranges held in full, corporate actions applied to
/// them, and the checkpoints of unfinished fetches. Writes are idempotent
/// upserts (key = series + bar time).
#[async_trait]
pub trait BarStore: Send + Sync {
    /// Upserts bars of one series (key = series + bar time). Returns how many
    /// bars were written.
    async fn upsert_bars(&self, series: &SeriesKey, bars: &[Bar]) -> Result<usize, StoreError> {
        self.upsert_bar_sets(&[(series.clone(), bars.to_vec())]).await
    }

    /// Upserts the bars of several series at once, as [`BarStore::upsert_bars`]
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
    /// as [`BarStore::add_coverage`] does for each, in as few writes as the
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

    /// The checkpoints of unfinished bar fetches among `keys` (see
    /// [`crate::ingest::Checkpoint`]): small records, by key. A key with no
    /// checkpoint is absent from the answer.
    async fn checkpoints(&self, keys: &[String]) -> Result<std::collections::HashMap<String, String>, StoreError>;

    /// Writes checkpoints, replacing any under the same key.
    async fn put_checkpoints(&self, entries: &[(String, String)]) -> Result<(), StoreError>;

    /// Removes checkpoints; a key with none is no error.
    async fn delete_checkpoints(&self, keys: &[String]) -> Result<(), StoreError>;
}

/// The event of a series a corporate action changed.
impl Event {
    /// `bars.invalidated` for one series a corporate action changed.
    pub(crate) fn bars_invalidated(action: &CorporateAction, series: &SeriesKey, at: DateTime<Utc>) -> Self {
        let data = json!({
            "symbol": series.symbol, "series": series.to_string(), "timeframe": series.timeframe.to_string(),
            "adjustment": series.adjustment.to_string(), "feed": series.feed.map(|f| f.as_str()),
            "action": {"id": action.id, "type": action.kind.as_str(), "ex_date": action.ex_date.to_string(),
                       "terms": action.terms},
        });
        Event::stable(
            EventType::BarsInvalidated,
            &format!("{}|{series}", action.id),
            None,
            data,
            at,
        )
    }
}
