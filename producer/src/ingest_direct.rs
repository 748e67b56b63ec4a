//! `signal9-producer ingest-direct`: the whole daily ingestion in this one
//! process, with no queue: list every asset class, store the valid assets,
//! then fetch and store the recent daily bars of every active, tradable
//! US equity, coalesced into multi-symbol requests.
//!
//! Its calls go through the same Redis budget and breakers as the workers'.

use anyhow::{Context, Result};
use chrono::{Duration, DurationRound, Utc};
use clap::Args;
use std::time::Instant;

use signal9_alpaca::BarRange;
use signal9_alpaca::{Adjustment, AssetClass, AssetQuery, Feed, Timeframe};
use signal9_shared::ingest::{self, BarsRequest, SymbolOutcome};
use signal9_shared::services::Services;
use signal9_shared::settings::{AlpacaSettings, BrokerSettings, BudgetSettings, PackingSettings, StoreSettings};
use signal9_shared::store::active_equity_symbols;

/// Settings of `ingest-direct`.
#[derive(Debug, Args)]
pub struct DirectArgs {
    #[command(flatten)]
    alpaca: AlpacaSettings,
    #[command(flatten)]
    store: StoreSettings,
    #[command(flatten)]
    budget: BudgetSettings,
    /// The namespace (of the budget's Redis keys); the queue settings are unused here.
    #[command(flatten)]
    broker: BrokerSettings,
    /// Daily bars of this many past days (ending at today's 00:00 UTC).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=3650))]
    days: i64,
    /// Request packing.
    #[command(flatten)]
    packing: PackingSettings,
    /// Market-data feed.
    #[arg(long, default_value = "iex")]
    feed: Feed,
}

/// Runs the direct ingest and prints what it did.
pub async fn run(args: DirectArgs) -> Result<()> {
    let started = Instant::now();
    let services = Services::open(&args.store, &args.budget, &args.broker.namespace).await?;
    let client = services.client(&args.alpaca).await?;
    let Services { store, .. } = services;
    let now = Utc::now();

    println!("== Assets ==");
    for class in [AssetClass::UsEquity, AssetClass::Crypto] {
        let query = AssetQuery {
            class: Some(class),
            ..AssetQuery::default()
        };
        let report = signal9_shared::sync::sync_slice(&client, store.as_ref(), &query, None)
            .await
            .with_context(|| format!("listing {class}"))?;
        println!(
            "{:<10} listed {:>6}  new {:>6}  updated {:>5}  unchanged {:>6}  status changes {:>4}  rejected {:>3}",
            class.as_str(),
            report.listed,
            report.new,
            report.updated,
            report.unchanged,
            report.status_changes.len(),
            report.rejected.len()
        );
        for rejection in report.rejected.iter().take(5) {
            println!("           rejected: {rejection}");
        }
    }

    let symbols = active_equity_symbols(store.as_ref()).await?;
    let end = now.duration_trunc(Duration::days(1)).unwrap_or(now) - Duration::seconds(1);
    let start = end + Duration::seconds(1) - Duration::days(args.days);
    let request = BarsRequest {
        symbols,
        range: BarRange {
            timeframe: Timeframe::DAY,
            start,
            end,
            adjustment: Adjustment::raw(),
            feed: Some(args.feed),
        },
    };
    let report = ingest::fetch_bars(&client, store.as_ref(), &request, args.packing.packing(), now).await?;

    let (mut stored, mut cached, mut bars, mut rejected) = (0, 0, 0, Vec::new());
    for (symbol, outcome) in &report.outcomes {
        match outcome {
            SymbolOutcome::Stored { bars: n } => {
                stored += 1;
                bars += n;
            }
            SymbolOutcome::Cached { .. } => cached += 1,
            SymbolOutcome::Rejected(r) => rejected.push(format!("{symbol}: {r}")),
        }
    }
    println!("== Daily bars {} .. {} ==", start.date_naive(), end.date_naive());
    println!(
        "symbols {:>6}  fetched {:>6}  from store {:>6}  bars written {:>7}  rejected {:>3}",
        report.outcomes.len(),
        stored,
        cached,
        bars,
        rejected.len()
    );
    for line in rejected.iter().take(5) {
        println!("           rejected: {line}");
    }
    println!("== Totals ==");
    println!(
        "API calls: {} listing, {} bars  |  store: {}  |  {:.1} s",
        2,
        report.calls,
        args.store.describe(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
