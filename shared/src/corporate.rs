//! Corporate actions and the stored bars: Alpaca re-adjusts history after a
//! split, a dividend or a spin-off, so an adjusted series stored before the
//! action holds prices the API no longer serves.
//!
//! [`check`] reads the actions whose ex-date lies in a window of days (the
//! whole market, `GET /v1/corporate-actions`, 1,000 actions a call, through
//! the budget and the breaker like every call), and applies each that has
//! taken effect ([`BarStore::apply_action`](crate::store::BarStore::apply_action)): the coverage and the bars of every
//! stored series of the symbol whose adjustment the action changes are
//! dropped, and one `bars.invalidated` event per series goes out through the
//! outbox, so an interactive request or the next backfill fetches them
//! again. Raw series are never touched. The store records each applied
//! action, so checking the same window again costs its calls and changes
//! nothing: the daily check looks back a week ([`DEFAULT_LOOKBACK_DAYS`]) and
//! catches an action reported late, or a day the check did not run.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::calendar::ny_date;
use crate::store::{SeriesKey, Store};
use signal9_alpaca::{ActionsQuery, AlpacaClient, CorporateAction};

/// How many days back the daily check reads, by default.
pub const DEFAULT_LOOKBACK_DAYS: u32 = 7;

/// What one check found and did.
#[derive(Debug, Clone, Default)]
pub struct ActionsCheck {
    /// First ex-date read, inclusive.
    pub start: Option<NaiveDate>,
    /// Last ex-date read, inclusive.
    pub end: Option<NaiveDate>,
    /// API calls spent.
    pub calls: u32,
    /// Valid actions the API reported.
    pub found: usize,
    /// Actions applied now, with the series each dropped.
    pub applied: Vec<(CorporateAction, Vec<SeriesKey>)>,
    /// Actions applied by an earlier check.
    pub already: usize,
    /// Actions whose ex-date is still ahead (not applied yet).
    pub ahead: usize,
    /// Entries the API sent that failed validation, with the reason.
    pub rejected: Vec<String>,
}

impl ActionsCheck {
    /// Series dropped by the actions applied now.
    pub fn series_dropped(&self) -> usize {
        self.applied.iter().map(|(_, s)| s.len()).sum()
    }
}

/// The window a daily check reads at `now`: the `days` days up to the
/// current New York date.
pub fn lookback(now: DateTime<Utc>, days: u32) -> (NaiveDate, NaiveDate) {
    let today = ny_date(now);
    (today - Duration::days(i64::from(days.max(1)) - 1), today)
}

/// Reads the actions with ex-date in `[start, end]` and, with `apply`,
/// applies those in effect by `now` (ex-date on or before the New York
/// date of `now`) to the store.
pub async fn check(
    client: &AlpacaClient,
    store: &dyn Store,
    start: NaiveDate,
    end: NaiveDate,
    apply: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<ActionsCheck> {
    let fetch = client.corporate_actions(&ActionsQuery::market(start, end)).await?;
    let mut report = ActionsCheck {
        start: Some(start),
        end: Some(end),
        calls: fetch.calls,
        found: fetch.actions.len(),
        rejected: fetch.rejected,
        ..ActionsCheck::default()
    };
    for reason in &report.rejected {
        tracing::warn!(target: "signal9_shared::corporate", %reason, "Corporate action refused");
    }
    let today = ny_date(now);
    for action in fetch.actions {
        if action.ex_date > today {
            report.ahead += 1;
            continue;
        }
        if !apply {
            report.applied.push((action, Vec::new()));
            continue;
        }
        match store.apply_action(&action, now).await? {
            Some(dropped) => {
                tracing::info!(
                    target: "signal9_shared::corporate",
                    symbol = %action.symbol,
                    kind = %action.kind,
                    ex_date = %action.ex_date,
                    terms = %action.terms,
                    series = dropped.len(),
                    "Corporate action applied: adjusted series dropped"
                );
                report.applied.push((action, dropped));
            }
            None => report.already += 1,
        }
    }
    Ok(report)
}
