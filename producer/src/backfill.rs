//! `backfill`: history on demand, planned before it costs a call.
//!
//! The planner reads coverage and skips the ranges the store holds in full,
//! estimates each series' bars from the trading calendar and timeframe,
//! cuts ranges too long for one job into jobs of at most
//! `SIGNAL9_MAX_JOB_PAGES` pages, and counts the requests the workers will
//! pack them into (the same [`Packing`] the worker's coalescer uses), so it
//! can print the calls and the time the backfill will take at the budget.
//! The jobs go to the backfill lane: after the daily pipeline and any
//! interactive request.

use anyhow::Result;
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Instant;

use signal9_alpaca::{Symbol, Timeframe};
use signal9_shared::job::{Job, Payload, Priority};
use signal9_shared::plan::{self, Packing, PAGE_BARS};
use signal9_shared::settings::{BudgetSettings, PackingSettings};
use signal9_shared::store::Store;

use crate::args::{BarsSelection, PublishOptions};
use crate::publish::publish_and_watch;

/// `signal9-producer backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    bars: BarsSelection,
    /// Print the plan and publish nothing.
    #[arg(long)]
    dry_run: bool,
    /// Request packing and the largest job (the workers' settings).
    #[command(flatten)]
    packing: PackingSettings,
    /// The data budget, for the time estimate.
    #[command(flatten)]
    budget: BudgetSettings,
    #[command(flatten)]
    options: PublishOptions,
}

/// One job range: a slice of the asked range short enough for one job.
type Range = (DateTime<Utc>, DateTime<Utc>);

/// Cuts `[start, end]` into the fewest slices of whole days whose series
/// each need at most `max_pages` pages.
pub fn job_ranges(
    timeframe: Timeframe,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    crypto: bool,
    max_pages: u64,
) -> Vec<Range> {
    let fits = |s, e| plan::estimate_bars(timeframe, s, e, crypto).div_ceil(PAGE_BARS) <= max_pages;
    let days = (end - start).num_days() + 1;
    let mut pieces = plan::estimate_bars(timeframe, start, end, crypto)
        .div_ceil(PAGE_BARS * max_pages.max(1))
        .max(1);
    loop {
        let len = Duration::days((days as u64).div_ceil(pieces).max(1) as i64);
        let mut ranges = Vec::new();
        let mut from = start;
        while from <= end {
            let to = (from + len - Duration::seconds(1)).min(end);
            ranges.push((from, to));
            from += len;
        }
        if pieces >= days as u64 || ranges.iter().all(|(s, e)| fits(*s, *e)) {
            return ranges;
        }
        pieces += 1;
    }
}

/// The work of one job range for one market: the symbols still to fetch.
#[derive(Debug, Default)]
struct Group {
    symbols: Vec<Symbol>,
    per_symbol: u64,
}

/// What the planner found.
#[derive(Debug, Default)]
pub struct Plan {
    jobs: Vec<Job>,
    skipped: usize,
    requests: u64,
    bars: u64,
    calls: u64,
    minimum: u64,
    per_request: BTreeMap<usize, u64>,
}

async fn plan(args: &BackfillArgs, store: &dyn Store, symbols: Vec<Symbol>, now: DateTime<Utc>) -> Result<Plan> {
    let bars = &args.bars;
    let packing: Packing = args.packing.packing();
    let mut groups: BTreeMap<(Range, bool), Group> = BTreeMap::new();
    let mut skipped = 0;
    for crypto in [false, true] {
        let market: Vec<Symbol> = symbols
            .iter()
            .filter(|s| s.is_crypto_pair() == crypto)
            .cloned()
            .collect();
        if market.is_empty() {
            continue;
        }
        for range in job_ranges(bars.timeframe, bars.start, bars.end, crypto, packing.max_pages) {
            // A range stored in full costs nothing: only closed ranges are
            // recorded as covered, so an open one is always fetched.
            let checks: Vec<Result<(Symbol, bool)>> = futures::stream::iter(market.iter().cloned())
                .map(|symbol| async move {
                    let payload = bars.payload(symbol.clone(), range.0, range.1);
                    let series = signal9_shared::store::SeriesKey {
                        symbol: symbol.clone(),
                        timeframe: payload.range.timeframe,
                        adjustment: payload.range.adjustment,
                        feed: payload.range.feed,
                    };
                    let covered = range.1 < now && store.covers(&series, range.0, range.1).await?;
                    Ok((symbol, covered))
                })
                .buffered(16)
                .collect()
                .await;
            let group = groups.entry((range, crypto)).or_default();
            group.per_symbol = plan::estimate_bars(bars.timeframe, range.0, range.1, crypto);
            for check in checks {
                let (symbol, covered) = check?;
                if covered {
                    skipped += 1;
                } else {
                    group.symbols.push(symbol);
                }
            }
        }
    }
    let priority = args.options.priority_or(Priority::Backfill);
    let mut out = Plan {
        skipped,
        ..Plan::default()
    };
    let mut total_bars = 0u64;
    for ((range, _), group) in groups {
        for request in packing.pack(&group.symbols, group.per_symbol) {
            let request_bars = request.len() as u64 * group.per_symbol;
            out.requests += 1;
            out.calls += plan::calls_for(request_bars);
            *out.per_request.entry(request.len()).or_default() += 1;
            total_bars += request_bars;
            for symbol in request {
                out.jobs.push(Job::new(
                    uuid::Uuid::new_v4().to_string(),
                    Payload::FetchBars(bars.payload(symbol, range.0, range.1)),
                    priority,
                    None,
                ));
            }
        }
    }
    out.bars = total_bars;
    out.minimum = total_bars.div_ceil(PAGE_BARS);
    Ok(out)
}

fn duration_text(secs: f64) -> String {
    let secs = secs.ceil() as u64;
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs.div_ceil(60)),
        _ => format!("{:.1} h", secs as f64 / 3600.0),
    }
}

/// Plans, prints the plan, and (unless --dry-run) publishes the jobs.
pub async fn run(args: BackfillArgs) -> Result<()> {
    let started = Instant::now();
    let symbols = args.bars.symbols().await?;
    let store = args.bars.open_store().await?;
    let plan = plan(&args, store.as_ref(), symbols.clone(), Utc::now()).await?;
    let budget = &args.budget;
    let share = 1.0 - budget.interactive_reserve;
    let per_sec = f64::from(budget.data_limit) * share / budget.data_window_secs;
    let packing = args.packing.packing();
    println!(
        "backfill plan: {} symbols, {} bars from {} to {}",
        symbols.len(),
        args.bars.timeframe,
        args.bars.start.to_rfc3339(),
        args.bars.end.to_rfc3339()
    );
    println!("  already stored: {} symbol ranges skipped", plan.skipped);
    println!(
        "  jobs: {} (one symbol and range each, at most {} pages a job)",
        plan.jobs.len(),
        packing.max_pages
    );
    let sizes: Vec<String> = plan
        .per_request
        .iter()
        .rev()
        .map(|(size, n)| format!("{n} × {size}"))
        .collect();
    println!(
        "  requests: {} (symbols per request: {})",
        plan.requests,
        if sizes.is_empty() {
            "none".into()
        } else {
            sizes.join(", ")
        }
    );
    println!(
        "  estimated bars: at most {}; estimated calls: {} (at least {} for that many bars)",
        plan.bars, plan.calls, plan.minimum
    );
    println!(
        "  duration at the data budget ({} calls per {} s, {:.0} % of it for non-interactive work): about {}",
        budget.data_limit,
        budget.data_window_secs,
        share * 100.0,
        duration_text(plan.calls as f64 / per_sec.max(f64::MIN_POSITIVE))
    );
    if args.dry_run {
        println!("dry run: nothing published");
        return Ok(());
    }
    if plan.jobs.is_empty() {
        println!("nothing to fetch: the store holds every range");
        return Ok(());
    }
    let total = plan.jobs.len() as u64;
    let progress = args.options.wait().map(|_| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} jobs, {msg} [{elapsed_precise}, ETA {eta}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let outcomes = publish_and_watch(&args.options, plan.jobs, progress.as_ref()).await?;
    if progress.is_some() {
        println!(
            "backfill done: {} jobs, {} bars stored, {} calls (planned {}), {} jobs went on from a checkpoint, in {}",
            outcomes.succeeded,
            outcomes.bars,
            outcomes.calls,
            plan.calls,
            outcomes.resumed,
            duration_text(started.elapsed().as_secs_f64())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_range_too_long_for_one_job_is_cut_into_jobs_under_the_page_limit() {
        let (start, end) = (t("2020-01-01T00:00:00Z"), t("2025-12-31T23:59:59Z"));
        // Six years of minute bars: about 1.45 M bars a symbol, 145 pages.
        let ranges = job_ranges(Timeframe::MINUTE, start, end, false, 100);
        assert!(ranges.len() >= 2, "{ranges:?}");
        assert_eq!(ranges.first().unwrap().0, start);
        assert_eq!(ranges.last().unwrap().1, end);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].1 + Duration::seconds(1), pair[1].0, "no gap, no overlap");
        }
        for (s, e) in &ranges {
            assert!(plan::estimate_bars(Timeframe::MINUTE, *s, *e, false) <= 100 * PAGE_BARS);
        }
        // A year of daily bars is one job range.
        let year = job_ranges(
            Timeframe::DAY,
            t("2025-01-01T00:00:00Z"),
            t("2025-12-31T23:59:59Z"),
            false,
            100,
        );
        assert_eq!(year.len(), 1);
    }
}
