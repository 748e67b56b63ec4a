//! `schedule`: fires the asset sync on a cron schedule (default 04:00 UTC
//! daily). Safe to run as several replicas: a lease in Redis elects one
//! leader, and each run id fires at most once, whatever the number of
//! replicas or restarts (a `fired` key taken before publishing). On start,
//! the most recent scheduled run is fired if it has not run (the process was
//! down at its time), unless `--no-catch-up`.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use croner::Cron;
use deadpool_redis::redis::Script;
use std::time::Duration;

use signal9_shared::config::StoreSettings;
use signal9_shared::limiter::redis_pool;

use crate::publish::PublishOptions;
use crate::sync::start_run;

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
    /// Redis, home of the lease and the fired-run markers.
    #[arg(
        long,
        env = "SIGNAL9_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,
    #[command(flatten)]
    store: StoreSettings,
    #[command(flatten)]
    options: PublishOptions,
}

fn parse_cron(text: &str) -> Result<Cron, String> {
    text.parse::<Cron>()
        .map_err(|e| format!("invalid cron expression {text:?}: {e}"))
}

const LEAD: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Runs the scheduler until the process is stopped.
pub async fn run(args: ScheduleArgs) -> Result<()> {
    let pool = redis_pool(&args.redis_url)?;
    let store = args.store.open().await.context("opening the store")?;
    let namespace = args.options.namespace().to_owned();
    let me = uuid::Uuid::new_v4().to_string();
    let lease_key = format!("{namespace}:scheduler:leader");
    let lease_ms = args.lease_secs * 1000;
    let script = Script::new(LEAD);
    let started = Utc::now();
    let tick = Duration::from_millis((lease_ms / 3).clamp(200, 1000));
    let mut leading = false;
    println!(
        "scheduler {me}: cron {:?}, lease {} s",
        args.cron.pattern.to_string(),
        args.lease_secs
    );
    loop {
        let is_leader: Result<i64, String> = async {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            script
                .key(&lease_key)
                .arg(&me)
                .arg(lease_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match is_leader {
            Ok(1) => {
                if !leading {
                    println!("scheduler {me}: leading");
                    leading = true;
                }
                if let Err(error) = fire_due(&args, &pool, store.as_ref(), &namespace, started).await {
                    eprintln!("scheduler: {error:#}");
                }
            }
            Ok(_) => leading = false,
            Err(error) => {
                leading = false;
                eprintln!("scheduler: Redis unreachable, not leading: {error}");
            }
        }
        tokio::time::sleep(tick).await;
    }
}

/// Fires the most recent scheduled time if its run has not fired.
async fn fire_due(
    args: &ScheduleArgs,
    pool: &deadpool_redis::Pool,
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
        return Ok(());
    }
    let fired_key = format!("{namespace}:scheduler:fired:{run_id}");
    let mut conn = pool.get().await.map_err(|e| anyhow::anyhow!("Redis: {e}"))?;
    let taken: Option<String> = deadpool_redis::redis::cmd("SET")
        .arg(&fired_key)
        .arg(Utc::now().to_rfc3339())
        .arg("NX")
        .arg("EX")
        .arg(8 * 24 * 3600)
        .query_async(&mut conn)
        .await
        .map_err(|e| anyhow::anyhow!("Redis: {e}"))?;
    if taken.is_none() {
        return Ok(());
    }
    println!("scheduler: firing run {run_id} (scheduled {due})");
    if let Err(error) = start_run(store, &args.options, &run_id).await {
        // Let the next tick (or leader) try again.
        let _: Result<i64, _> = deadpool_redis::redis::cmd("DEL")
            .arg(&fired_key)
            .query_async(&mut conn)
            .await;
        return Err(error);
    }
    println!("scheduler: fired run {run_id}");
    Ok(())
}
