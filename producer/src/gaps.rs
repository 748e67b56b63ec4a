//! `gaps`: which trading sessions of a set of series the store does not
//! cover, and (with `--fill`) enqueueing exactly those.
//!
//! A session is a New York trading day from the calendar (a UTC day for
//! crypto), clipped to the asked range. A session counts as missing when
//! it has settled (see `BarsRequest::settles_at`) and no covered range of
//! the series holds it: a job that was dead-lettered and never replayed
//! leaves such a hole, which no later request of a covered range notices.
//! A series whose whole range is covered but holds no bar is reported as
//! covered-empty (the API had no bars for it), not as missing.

use anyhow::Result;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::Args;
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;

use signal9_alpaca::BarRange;
use signal9_alpaca::Symbol;
use signal9_shared::calendar;
use signal9_shared::ingest::BarsRequest;
use signal9_shared::job::{Job, Payload, Priority};
use signal9_shared::plan::{self, Packing};
use signal9_shared::settings::PackingSettings;
use signal9_shared::store::{SeriesKey, Store};

use crate::args::{BarsSelection, PublishOptions, Scope};
use crate::publish::publish_and_watch;

/// `signal9-producer gaps`.
#[derive(Debug, Args)]
pub struct GapsArgs {
    #[command(flatten)]
    bars: BarsSelection,
    /// Print one JSON object (series, their missing sessions and the
    /// ranges that would fill them, totals) instead of a table.
    #[arg(long)]
    json: bool,
    /// Enqueue one fetch-bars job per run of consecutive missing sessions
    /// of a series, on the backfill lane unless `--priority` says otherwise.
    #[arg(long)]
    fill: bool,
    /// Request packing (for the estimate of calls) and the settle time.
    #[command(flatten)]
    packing: PackingSettings,
    #[command(flatten)]
    options: PublishOptions,
}

/// One session: its day and its UTC range, clipped to the asked range.
type Session = (NaiveDate, DateTime<Utc>, DateTime<Utc>);

/// An inclusive UTC range.
type Range = (DateTime<Utc>, DateTime<Utc>);

/// The sessions of `[start, end]`: New York trading days for stocks, UTC
/// days for crypto.
pub(crate) fn sessions(start: DateTime<Utc>, end: DateTime<Utc>, crypto: bool) -> Vec<Session> {
    let day_of = |t: DateTime<Utc>| if crypto { t.date_naive() } else { calendar::ny_date(t) };
    let bounds = |d: NaiveDate| {
        if crypto {
            let from = d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
            (from, from + Duration::days(1) - Duration::seconds(1))
        } else {
            calendar::ny_day_range(d)
        }
    };
    let mut out = Vec::new();
    let mut day = day_of(start);
    while day <= day_of(end) {
        if crypto || calendar::is_trading_day(day) {
            let (from, to) = bounds(day);
            out.push((day, from.max(start), to.min(end)));
        }
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    out
}

/// Consecutive missing sessions as ranges: sessions with no session
/// between them in the list join into one range.
fn runs(all: &[Session], missing: &[NaiveDate]) -> Vec<Range> {
    let mut ranges: Vec<Range> = Vec::new();
    let mut previous: Option<usize> = None;
    for (index, (day, from, to)) in all.iter().enumerate() {
        if !missing.contains(day) {
            continue;
        }
        match (previous, ranges.last_mut()) {
            (Some(p), Some(last)) if p + 1 == index => last.1 = *to,
            _ => ranges.push((*from, *to)),
        }
        previous = Some(index);
    }
    ranges
}

/// What `gaps` found for one series.
#[derive(Debug, Serialize)]
struct SeriesGaps {
    series: String,
    symbol: String,
    missing: Vec<NaiveDate>,
    ranges: Vec<Range>,
}

/// What `gaps` found.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    series_checked: usize,
    series_with_gaps: usize,
    pub(crate) missing_sessions: usize,
    covered_empty: Vec<String>,
    estimated_calls: u64,
    jobs: usize,
    series: Vec<SeriesGaps>,
}

enum Found {
    Missing(Vec<NaiveDate>),
    CoveredEmpty,
    Complete,
}

async fn check(store: &dyn Store, series: &SeriesKey, all: &[Session], settled: &[bool]) -> Result<Found> {
    let (Some(first), Some(last)) = (all.first(), all.last()) else {
        return Ok(Found::Complete);
    };
    if store.covers(series, first.1, last.2).await? {
        let empty = store.count_bars(series, first.1, last.2).await? == 0;
        return Ok(if empty { Found::CoveredEmpty } else { Found::Complete });
    }
    let mut missing = Vec::new();
    for ((day, from, to), settled) in all.iter().zip(settled) {
        if *settled && !store.covers(series, *from, *to).await? {
            missing.push(*day);
        }
    }
    Ok(Found::Missing(missing))
}

/// Lists the gaps and, with `--fill`, enqueues the jobs that fill them.
pub async fn run(args: GapsArgs) -> Result<()> {
    let symbols = args.bars.symbols().await?;
    let store = args.bars.open_store().await?;
    let scope = args.bars.scope();
    let priority = args.options.priority_or(Priority::Backfill);
    let (report, jobs) = find(
        store.as_ref(),
        &symbols,
        &scope,
        args.packing.packing(),
        Utc::now(),
        priority,
    )
    .await?;
    print(&report, args.json)?;
    if args.fill && !jobs.is_empty() {
        publish_and_watch(&args.options, jobs, None).await?;
    }
    Ok(())
}

/// Finds the gaps of `symbols` in `scope`: the report, and one fetch-bars
/// job at `priority` per run of consecutive missing sessions of a series.
pub(crate) async fn find(
    store: &dyn Store,
    symbols: &[Symbol],
    scope: &Scope,
    packing: Packing,
    now: DateTime<Utc>,
    priority: Priority,
) -> Result<(Report, Vec<Job>)> {
    let mut report = Report::default();
    let mut jobs = Vec::new();
    // Symbols to fill, by range and market: packed as the workers pack them.
    let mut groups: BTreeMap<(Range, bool), Vec<Symbol>> = BTreeMap::new();
    for crypto in [false, true] {
        let market: Vec<Symbol> = symbols
            .iter()
            .filter(|s| s.is_crypto_pair() == crypto)
            .cloned()
            .collect();
        let Some(sample) = market.first() else { continue };
        let all = sessions(scope.start, scope.end, crypto);
        let settled: Vec<bool> = all
            .iter()
            .map(|(_, from, to)| {
                let request = BarsRequest {
                    symbols: vec![sample.clone()],
                    range: BarRange {
                        timeframe: scope.timeframe,
                        start: *from,
                        end: *to,
                        adjustment: scope.adjustment.clone(),
                        feed: scope.feed,
                    },
                };
                now >= request.settles_at(packing.settle)
            })
            .collect();
        let (all, settled) = (&all, &settled);
        let found: Vec<Result<(Symbol, SeriesKey, Found)>> = futures::stream::iter(market)
            .map(|symbol| async move {
                let payload = scope.payload(symbol.clone(), scope.start, scope.end);
                let series = SeriesKey {
                    symbol: symbol.clone(),
                    timeframe: payload.range.timeframe,
                    adjustment: payload.range.adjustment,
                    feed: payload.range.feed,
                };
                let found = check(store, &series, all, settled).await?;
                Ok((symbol, series, found))
            })
            .buffered(16)
            .collect()
            .await;
        for entry in found {
            let (symbol, series, found) = entry?;
            report.series_checked += 1;
            match found {
                Found::Complete => {}
                Found::CoveredEmpty => report.covered_empty.push(series.to_string()),
                Found::Missing(missing) if missing.is_empty() => {}
                Found::Missing(missing) => {
                    let ranges = runs(all, &missing);
                    report.series_with_gaps += 1;
                    report.missing_sessions += missing.len();
                    for range in &ranges {
                        groups.entry((*range, crypto)).or_default().push(symbol.clone());
                        jobs.push(Job::new(
                            uuid::Uuid::new_v4().to_string(),
                            Payload::FetchBars(scope.payload(symbol.clone(), range.0, range.1)),
                            priority,
                            None,
                        ));
                    }
                    report.series.push(SeriesGaps {
                        series: series.to_string(),
                        symbol: symbol.to_string(),
                        missing,
                        ranges,
                    });
                }
            }
        }
    }
    for (((from, to), crypto), symbols) in &groups {
        let per_symbol = plan::estimate_bars(scope.timeframe, *from, *to, *crypto);
        for request in packing.pack(symbols, per_symbol) {
            report.estimated_calls += plan::calls_for(request.len() as u64 * per_symbol);
        }
    }
    report.jobs = jobs.len();
    Ok((report, jobs))
}

fn print(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    if !report.series.is_empty() {
        println!("{:<36} {:>8}  {:<10}  {:<10}", "SERIES", "MISSING", "FIRST", "LAST");
    }
    for gaps in &report.series {
        let first = gaps.missing.first().map(ToString::to_string).unwrap_or_default();
        let last = gaps.missing.last().map(ToString::to_string).unwrap_or_default();
        println!("{:<36} {:>8}  {first:<10}  {last:<10}", gaps.series, gaps.missing.len());
    }
    for series in &report.covered_empty {
        println!("{series:<36} covered, no bars (the API had none)");
    }
    println!(
        "series checked {}, with gaps {}, covered but empty {}; missing sessions {}; jobs to fill {}, estimated calls {}",
        report.series_checked,
        report.series_with_gaps,
        report.covered_empty.len(),
        report.missing_sessions,
        report.jobs,
        report.estimated_calls
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn sessions_are_trading_days_clipped_to_the_range() {
        // Thanksgiving week 2026: Thursday 26 is a holiday, the weekend is not traded.
        let days = sessions(t("2026-11-23T12:00:00Z"), t("2026-11-30T23:00:00Z"), false);
        let names: Vec<String> = days.iter().map(|(d, _, _)| d.to_string()).collect();
        assert_eq!(
            names,
            ["2026-11-23", "2026-11-24", "2026-11-25", "2026-11-27", "2026-11-30"]
        );
        assert_eq!(days[0].1, t("2026-11-23T12:00:00Z"), "clipped to the start");
        assert_eq!(days[1].1, t("2026-11-24T05:00:00Z"), "New York midnight");
        assert_eq!(
            sessions(t("2026-11-21T00:00:00Z"), t("2026-11-22T23:59:59Z"), true).len(),
            2,
            "crypto trades on weekends"
        );
    }

    #[test]
    fn consecutive_missing_sessions_make_one_range() {
        let all = sessions(t("2026-11-23T05:00:00Z"), t("2026-12-01T04:59:59Z"), false);
        let d = |s: &str| s.parse::<NaiveDate>().unwrap_or_default();
        // 25 and 27 are consecutive sessions (26 is a holiday), and so are
        // 27 and 30 (a weekend has none); 24 is stored, so 23 stands alone.
        let ranges = runs(
            &all,
            &[d("2026-11-23"), d("2026-11-25"), d("2026-11-27"), d("2026-11-30")],
        );
        assert_eq!(
            ranges,
            [
                (t("2026-11-23T05:00:00Z"), t("2026-11-24T04:59:59Z")),
                (t("2026-11-25T05:00:00Z"), t("2026-12-01T04:59:59Z")),
            ]
        );
    }
}
