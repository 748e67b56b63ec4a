//! `signal9-producer corporate-actions`: reads the corporate actions of a
//! window of ex-dates (the whole market, through the budget and the
//! breaker) and drops the stored adjusted series they change, as the
//! scheduler does each day after the sync. `--dry-run` only lists them.

use anyhow::Result;
use chrono::{NaiveDate, Utc};
use clap::Args;
use serde_json::json;

use crate::args::ApiAccess;
use signal9_shared::corporate::{self, ActionsCheck, DEFAULT_LOOKBACK_DAYS};
use signal9_shared::services::Services;
use signal9_shared::settings::StoreSettings;

/// Settings of `corporate-actions`.
#[derive(Debug, Args)]
pub struct ActionsArgs {
    /// First ex-date to read (YYYY-MM-DD); by default --days before --end.
    #[arg(long)]
    start: Option<NaiveDate>,
    /// Last ex-date to read (YYYY-MM-DD); by default today in New York.
    #[arg(long)]
    end: Option<NaiveDate>,
    /// Without --start: how many days up to --end to read.
    #[arg(long, default_value_t = DEFAULT_LOOKBACK_DAYS, value_parser = clap::value_parser!(u32).range(1..=366))]
    days: u32,
    /// List the actions in effect; drop nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiAccess,
    #[command(flatten)]
    store: StoreSettings,
}

/// Runs the check once and prints what it found and did.
pub async fn run(args: ActionsArgs) -> Result<()> {
    let now = Utc::now();
    let (default_start, today) = corporate::lookback(now, args.days);
    let end = args.end.unwrap_or(today);
    let start = args.start.unwrap_or(default_start - (today - end));
    anyhow::ensure!(start <= end, "--start {start} is after --end {end}");
    let services = Services::open(&args.store, &args.api.budget, &args.api.broker.namespace).await?;
    let client = services.client(&args.api.alpaca).await?;
    let store = services.store;
    let report = corporate::check(&client, store.as_ref(), start, end, !args.dry_run, now).await?;
    if args.json {
        println!("{}", to_json(&report, args.dry_run));
    } else {
        print!("{}", describe(&report, args.dry_run));
    }
    Ok(())
}

/// One line of totals, then one line per action applied.
pub(crate) fn describe(report: &ActionsCheck, dry_run: bool) -> String {
    let window = match (report.start, report.end) {
        (Some(s), Some(e)) => format!("{s}..{e}"),
        _ => "-".into(),
    };
    let verb = if dry_run { "in effect (dry run)" } else { "applied" };
    let mut out = format!(
        "corporate actions {window}: {} found in {} call(s); {} {verb}, {} adjusted series dropped, {} applied before, {} ahead, {} refused\n",
        report.found,
        report.calls,
        report.applied.len(),
        report.series_dropped(),
        report.already,
        report.ahead,
        report.rejected.len()
    );
    for (action, series) in &report.applied {
        let dropped: Vec<String> = series.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "  {} {} {} ex {}: {}\n",
            action.symbol,
            action.kind,
            action.terms,
            action.ex_date,
            if dropped.is_empty() {
                "no stored adjusted series".into()
            } else {
                format!("dropped {}", dropped.join(", "))
            }
        ));
    }
    for reason in &report.rejected {
        out.push_str(&format!("  refused: {reason}\n"));
    }
    out
}

fn to_json(report: &ActionsCheck, dry_run: bool) -> serde_json::Value {
    json!({
        "start": report.start.map(|d| d.to_string()),
        "end": report.end.map(|d| d.to_string()),
        "dry_run": dry_run,
        "calls": report.calls,
        "found": report.found,
        "applied": report.applied.iter().map(|(a, series)| json!({
            "id": a.id, "symbol": a.symbol, "type": a.kind.as_str(), "ex_date": a.ex_date.to_string(),
            "terms": a.terms, "series_dropped": series.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "already_applied": report.already,
        "ahead": report.ahead,
        "refused": report.rejected,
    })
}
