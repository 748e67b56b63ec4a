//! `schedule`: fires the asset sync on a cron schedule (default 04:00 UTC
//! daily). Safe to run as several replicas: a lease in Redis elects one
//! leader, and each run id fires at most once, whatever the number of
//! replicas or restarts (the run recorded in the store, and a short-lived
//! `fired` key taken before recording it). On start, the most recent
//! scheduled run is fired if it has not run (the process was down at its
//! time), unless `--no-catch-up`. Every tick, the leader heals the current
//! run if it was left behind: pages never published (the process that
//! fired it died first) or all pages done and never closed. After a run
//! completes, once: the corporate-actions check (adjusted series that an
//! action changed are dropped, see [`signal9_shared::corporate`]), then the
//! backfill of the previous trading day and the gap check. On SIGTERM or
//! Ctrl-C it finishes the tick it is in, gives its leadership up (another
//! replica leads at its next tick, not after the lease expires) and exits.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use croner::Cron;
use std::time::Duration;

use signal9_alpaca::BarRange;
use signal9_alpaca::{Adjustment, Feed, Timeframe};
use signal9_shared::calendar::{ny_date, ny_day_range, previous_trading_day};
use signal9_shared::job::{FetchBars, Job, Payload, Priority};
use signal9_shared::keys::RedisKeys;
use signal9_shared::limiter::redis_pool;
use signal9_shared::services::Services;
use signal9_shared::settings::{AlpacaSettings, BudgetSettings, PackingSettings, StoreSettings};
use signal9_shared::store::{active_equity_symbols, RunStatus};

use crate::args::PublishOptions;
use crate::publish::publish_jobs;
use crate::sync::{heal_run, start_run};

/// `schedule` settings.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// When to sync, as a cron expression in UTC (5 fields, or 6 with seconds first).
    #[arg(long, env = "SIGNAL9_SYNC_CRON", default_value = "0 4 * * *", value_parser = parse_cron)]
    cron: Cron,
    /// How a fire time becomes a run id (strftime); the default gives one run per UTC day.
    #[arg(long, env = "SIGNAL9_RUN_ID_FORMAT", default_value = "%Y-%m-%d")]
    run_id_format: String,
    /// Leadership lease in seconds; a leader that stops renewing is replaced after it.
    #[arg(long, env = "SIGNAL9_SCHEDULER_LEASE_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_secs: u64,
    /// Do not fire a run whose time passed before this process started.
    #[arg(long)]
    no_catch_up: bool,
    /// After a run completes, enqueue the previous trading day's bars of
    /// every active, tradable US equity at these timeframes (empty: none).
    #[arg(
        long,
        env = "SIGNAL9_BACKFILL_TIMEFRAMES",
        value_delimiter = ',',
        default_value = "1Day"
    )]
    backfill_timeframes: Vec<String>,
    /// The feed of the follow-on backfill.
    #[arg(long, env = "SIGNAL9_BACKFILL_FEED", default_value = "iex")]
    backfill_feed: Feed,
    /// With the follow-on backfill, look this many trading days further back
    /// for sessions no covered range holds (a job dead-lettered and never
    /// replayed) and enqueue exactly those; 0 turns the check off. Its
    /// count is exported as `signal9_gaps_missing_series_days`.
    #[arg(long, env = "SIGNAL9_HEAL_DAYS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=60))]
    heal_days: u32,
    /// After a run completes, read the corporate actions with ex-dates in
    /// this many days up to today (whole market, a call per 1,000 actions,
    /// through the budget) and drop the stored adjusted series they change;
    /// applied actions are remembered, so the overlap costs nothing but the
    /// call. 0 turns the check off (and the scheduler needs no Alpaca key).
    #[arg(long, env = "SIGNAL9_ACTIONS_LOOKBACK_DAYS", default_value_t = signal9_shared::corporate::DEFAULT_LOOKBACK_DAYS, value_parser = clap::value_parser!(u32).range(0..=60))]
    actions_days: u32,
    /// Request packing and the settle time (for the gap check).
    #[command(flatten)]
    packing: PackingSettings,
    /// Redis (home of the lease and the fired-run markers) and the API
    /// budget the corporate-actions check calls through.
    #[command(flatten)]
    budget: BudgetSettings,
    /// The Alpaca key, for the corporate-actions check.
    #[command(flatten)]
    alpaca: AlpacaSettings,
    #[command(flatten)]
    store: StoreSettings,
    #[command(flatten)]
    options: PublishOptions,
}

fn parse_cron(text: &str) -> Result<Cron, String> {
    text.parse::<Cron>()
        .map_err(|e| format!("invalid cron expression {text:?}: {e}"))
}

/// Runs the scheduler until SIGTERM or Ctrl-C.
pub async fn run(args: ScheduleArgs) -> Result<()> {
    let (_trigger, shutdown) = signal9_shared::shutdown::on_signals();
    run_until(args, shutdown).await
}

/// Runs the scheduler until `shutdown` fires.
pub async fn run_until(args: ScheduleArgs, mut shutdown: signal9_shared::shutdown::Shutdown) -> Result<()> {
    let pool = redis_pool(&args.budget.redis_url)?;
    let namespace = args.options.namespace().to_owned();
    let services = Services::open(&args.store, &args.budget, &namespace).await?;
    let client = match args.actions_days {
        0 => None,
        _ => Some(services.client(&args.alpaca).await.context(
            "the corporate-actions check needs the Alpaca key (or SIGNAL9_ACTIONS_LOOKBACK_DAYS=0 to turn it off)",
        )?),
    };
    let store = services.store;
    let me = uuid::Uuid::new_v4().to_string();
    let lease_key = RedisKeys::new(&namespace).scheduler_leader();
    let lease_ms = args.lease_secs * 1000;
    let started = Utc::now();
    let tick = Duration::from_millis((lease_ms / 3).clamp(200, 1000));
    let mut leading = false;
    let timeframes: Vec<Timeframe> = args
        .backfill_timeframes
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().parse::<Timeframe>())
        .collect::<Result<_, _>>()
        .context("--backfill-timeframes")?;
    println!(
        "scheduler {me}: cron {:?}, lease {} s",
        args.cron.pattern.to_string(),
        args.lease_secs
    );
    loop {
        match signal9_shared::lease::hold(&pool, &lease_key, &me, lease_ms).await {
            Ok(true) => {
                if !leading {
                    println!("scheduler {me}: leading");
                    leading = true;
                }
                if let Err(error) = fire_due(&args, &pool, store.as_ref(), &namespace, started).await {
                    eprintln!("scheduler: {error:#}");
                }
                let after = after_run(&args, &pool, store.as_ref(), &namespace, &timeframes, client.as_ref());
                if let Err(error) = after.await {
                    eprintln!("scheduler: after the run: {error:#}");
                }
            }
            Ok(_) => leading = false,
            Err(error) => {
                leading = false;
                eprintln!("scheduler: Redis unreachable, not leading: {error}");
            }
        }
        if !shutdown.sleep(tick).await {
            break;
        }
    }
    let released = signal9_shared::lease::release(&pool, &lease_key, &me).await;
    match released {
        Ok(true) => println!("scheduler {me}: stopped; leadership released"),
        Ok(false) => println!("scheduler {me}: stopped"),
        Err(error) => println!("scheduler {me}: stopped; leadership not released ({error}), it expires by itself"),
    }
    Ok(())
}

/// Fires the most recent scheduled time if its run has not fired.
async fn fire_due(
    args: &ScheduleArgs,
    pool: &signal9_shared::redis_conn::RedisPool,
    store: &dyn signal9_shared::store::Store,
    namespace: &str,
    started: DateTime<Utc>,
) -> Result<()> {
    let now = Utc::now();
    let Ok(due) = args.cron.find_previous_occurrence(&now, true) else {
        return Ok(());
    };
    if args.no_catch_up && due < started {
        return Ok(());
    }
    let run_id = due.format(&args.run_id_format).to_string();
    if store.get_run(&run_id).await?.is_some() {
        // Fired before: complete it if whoever fired it left it behind.
        heal_run(store, &args.options, &run_id).await?;
        return Ok(());
    }
    // Only one replica fires a run id. The marker is short-lived: should
    // its holder die before recording the run, a later tick fires it.
    let fired_key = RedisKeys::new(namespace).scheduler_fired(&run_id);
    if !take_marker(pool, &fired_key, FIRE_MARKER_SECS).await? {
        return Ok(());
    }
    println!("scheduler: firing run {run_id} (scheduled {due})");
    if let Err(error) = start_run(store, &args.options, &run_id).await {
        // Let the next tick (or leader) try again.
        drop_marker(pool, &fired_key).await;
        return Err(error);
    }
    println!("scheduler: fired run {run_id}");
    Ok(())
}

/// What the gap check found: missing series-days and the jobs that fill them.
struct Heal {
    missing: usize,
    jobs: Vec<Job>,
}

/// Checks the `--heal-days` trading days before `day` for sessions of the
/// daily universe that no covered range holds (so one lost day heals by the
/// next morning), records the count in Redis for the workers' gauge, and
/// returns the jobs that fill exactly those sessions.
async fn heal_gaps(
    args: &ScheduleArgs,
    pool: &signal9_shared::redis_conn::RedisPool,
    store: &dyn signal9_shared::store::Store,
    namespace: &str,
    symbols: &[signal9_alpaca::Symbol],
    timeframes: &[Timeframe],
    day: chrono::NaiveDate,
) -> Result<Heal> {
    let mut heal = Heal {
        missing: 0,
        jobs: Vec::new(),
    };
    if args.heal_days == 0 {
        return Ok(heal);
    }
    let mut first = day;
    for _ in 0..args.heal_days {
        first = previous_trading_day(first);
    }
    let (start, _) = ny_day_range(first);
    let (_, end) = ny_day_range(previous_trading_day(day));
    for timeframe in timeframes {
        let scope = crate::args::Scope {
            timeframe: *timeframe,
            start,
            end,
            adjustment: Adjustment::raw(),
            feed: Some(args.backfill_feed),
        };
        let (report, jobs) = crate::gaps::find(
            store,
            symbols,
            &scope,
            args.packing.packing(),
            Utc::now(),
            Priority::Bulk,
        )
        .await?;
        heal.missing += report.missing_sessions;
        heal.jobs.extend(jobs);
    }
    let mut conn = pool.get().await.map_err(|e| anyhow::anyhow!("Redis: {e}"))?;
    let _: () = deadpool_redis::redis::cmd("SET")
        .arg(RedisKeys::new(namespace).gaps_missing())
        .arg(heal.missing)
        .query_async(&mut conn)
        .await
        .map_err(|e| anyhow::anyhow!("Redis: {e}"))?;
    Ok(heal)
}

/// How long a fire marker keeps other replicas from firing the same run.
const FIRE_MARKER_SECS: u64 = 300;
/// How long a backfill marker keeps a completed run from being backfilled twice.
const BACKFILL_MARKER_SECS: u64 = 8 * 24 * 3600;

/// Takes a once-only marker in Redis; false when someone already has it.
async fn take_marker(pool: &signal9_shared::redis_conn::RedisPool, key: &str, ttl_secs: u64) -> Result<bool> {
    let mut conn = pool.get().await.map_err(|e| anyhow::anyhow!("Redis: {e}"))?;
    let taken: Option<String> = deadpool_redis::redis::cmd("SET")
        .arg(key)
        .arg(Utc::now().to_rfc3339())
        .arg("NX")
        .arg("EX")
        .arg(ttl_secs)
        .query_async(&mut conn)
        .await
        .map_err(|e| anyhow::anyhow!("Redis: {e}"))?;
    Ok(taken.is_some())
}

async fn drop_marker(pool: &signal9_shared::redis_conn::RedisPool, key: &str) {
    if let Ok(mut conn) = pool.get().await {
        let _: Result<i64, _> = deadpool_redis::redis::cmd("DEL").arg(key).query_async(&mut conn).await;
    }
}

/// After the latest run completes, once: the corporate-actions check, then
/// the follow-on backfill and the gap check.
async fn after_run(
    args: &ScheduleArgs,
    pool: &signal9_shared::redis_conn::RedisPool,
    store: &dyn signal9_shared::store::Store,
    namespace: &str,
    timeframes: &[Timeframe],
    client: Option<&signal9_alpaca::AlpacaClient>,
) -> Result<()> {
    if timeframes.is_empty() && client.is_none() {
        return Ok(());
    }
    let Some(run) = store.latest_run().await? else {
        return Ok(());
    };
    if run.status != RunStatus::Completed {
        return Ok(());
    }
    let key = RedisKeys::new(namespace).scheduler_backfilled(&run.run_id);
    if !take_marker(pool, &key, BACKFILL_MARKER_SECS).await? {
        return Ok(());
    }
    if let Some(client) = client {
        // A failed check must not cost the backfill; the next day's check
        // reads this window again (applied actions are remembered).
        let now = Utc::now();
        let (start, end) = signal9_shared::corporate::lookback(now, args.actions_days);
        match signal9_shared::corporate::check(client, store, start, end, true, now).await {
            Ok(report) => print!(
                "scheduler: run {}: {}",
                run.run_id,
                crate::corporate_actions::describe(&report, false)
            ),
            Err(error) => eprintln!("scheduler: corporate actions for run {}: {error:#}", run.run_id),
        }
    }
    if timeframes.is_empty() {
        return Ok(());
    }
    let day = previous_trading_day(ny_date(run.started_at));
    let (start, end) = ny_day_range(day);
    let symbols = active_equity_symbols(store).await?;
    let mut jobs: Vec<Job> = timeframes
        .iter()
        .flat_map(|tf| symbols.iter().map(move |s| (tf, s)))
        .map(|(tf, symbol)| {
            let payload = FetchBars {
                symbol: symbol.clone(),
                range: BarRange {
                    timeframe: *tf,
                    start,
                    end,
                    adjustment: Adjustment::raw(),
                    feed: Some(args.backfill_feed),
                },
            };
            Job::new(
                format!("backfill:{}:{tf}:{symbol}", run.run_id),
                Payload::FetchBars(payload),
                Priority::Bulk,
                Some(run.run_id.clone()),
            )
        })
        .collect();
    println!(
        "scheduler: backfill for run {}: {} jobs for {day}",
        run.run_id,
        jobs.len()
    );
    // A failed check must not cost the day's backfill: it is reported, and
    // the next run checks again.
    match heal_gaps(args, pool, store, namespace, &symbols, timeframes, day).await {
        Ok(heal) => {
            println!(
                "scheduler: gap check for run {}: {} missing series-days in the {} trading days before {day}; {} jobs fill them",
                run.run_id,
                heal.missing,
                args.heal_days,
                heal.jobs.len()
            );
            jobs.extend(heal.jobs);
        }
        Err(error) => eprintln!("scheduler: gap check for run {}: {error:#}", run.run_id),
    }
    if let Err(error) = publish_jobs(&args.options, jobs).await {
        drop_marker(pool, &key).await;
        return Err(error);
    }
    Ok(())
}
