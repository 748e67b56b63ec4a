//! The chaos suite: the whole pipeline (simulator, RabbitMQ, Redis, worker
//! processes, SQLite) under one fault at a time, each scenario ended by a
//! reconciliation: every published job completed or dead-lettered (none
//! lost), the store equal to the simulator's ground truth (every bar once,
//! no invalid bar), and no window of the simulator over the budget.
//!
//! `SIGNAL9_CHAOS_JOBS` sets the jobs per scenario: 1,000 by default (CI),
//! 10,000 with `bash scripts/chaos`. Scenarios run one at a time (they
//! restart services every test shares), alone in this test binary.
#![allow(clippy::unwrap_used)]

use alpaca_sim::bars::{bar_json, bar_times, Frame, Market, Series};
use chrono::{DateTime, Utc};
use lapin::options::BasicPublishOptions;
use signal9_alpaca::{Adjustment, Feed, Symbol, Timeframe};
use signal9_e2e::{active_symbols, fetch_iex_days, queue_depth, rabbitmqctl, start_redis, Stack, SIM_NOW};
use signal9_shared::job::{JobKind, Priority};
use signal9_shared::store::BarStore;
use signal9_shared::store::{SeriesKey, SqliteStore};
use std::process::Command;
use std::time::{Duration, Instant};

const DAY: &str = "2026-11-18";
/// The budget the workers keep and the simulator enforces: calls per second.
const BUDGET: u64 = 20;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn jobs() -> usize {
    std::env::var("SIGNAL9_CHAOS_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn range() -> (DateTime<Utc>, DateTime<Utc>) {
    (t(&format!("{DAY}T00:00:00Z")), t(&format!("{DAY}T23:59:59Z")))
}

fn series(symbol: &str) -> SeriesKey {
    SeriesKey {
        symbol: Symbol::parse(symbol).unwrap(),
        timeframe: Timeframe::DAY,
        adjustment: Adjustment::raw(),
        feed: Some(Feed::Iex),
    }
}

/// A scenario's running pipeline.
struct Run {
    stack: Stack,
    symbols: Vec<String>,
    started: Instant,
}

async fn start(name: &str) -> Run {
    start_publishing(name, jobs()).await
}

/// Starts the pipeline for `jobs()` symbols, publishing the first `now` of
/// them before the workers start (the rest are the scenario's to publish).
async fn start_publishing(name: &str, now: usize) -> Run {
    let n = jobs();
    let mut stack = Stack::start(&["--assets", "40000", "--limit", &BUDGET.to_string(), "--window", "1"]).unwrap();
    stack.retry_tiers = "1s,2s,4s".into();
    let symbols = active_symbols(42, 40_000, n);
    assert_eq!(symbols.len(), n);
    let file = stack.symbols_file(&symbols[..now]);
    let out = stack.producer(&fetch_iex_days(&file, DAY, DAY, None)).await.unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && printed.contains(&format!("published {now} of {now} jobs")),
        "{name}: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // About 200 calls whatever the size, so the run lasts ~10 s at the budget.
    let coalesce = (n / 200).max(1).to_string();
    for _ in 0..3 {
        start_worker(&mut stack, &coalesce);
    }
    Run {
        stack,
        symbols,
        started: Instant::now(),
    }
}

fn start_worker(stack: &mut Stack, coalesce: &str) -> usize {
    let budget = BUDGET.to_string();
    stack
        .start_worker(&[
            "--concurrency",
            "2",
            "--coalesce-max",
            coalesce,
            "--data-limit",
            &budget,
            "--data-window-secs",
            "1",
            "--trading-limit",
            &budget,
            "--trading-window-secs",
            "1",
            "--breaker-backoff-secs",
            "2",
        ])
        .unwrap()
}

/// Symbols whose day is stored in full (the job completed).
async fn completed(store: &SqliteStore, symbols: &[String]) -> usize {
    let (start, end) = range();
    let mut done = 0;
    for symbol in symbols {
        if store.covers(&series(symbol), start, end).await.unwrap_or(false) {
            done += 1;
        }
    }
    done
}

/// Waits until every job has completed or been dead-lettered (less the
/// `hostile` messages in the dead-letter queue), then reconciles and
/// prints the scenario's line of figures.
async fn reconcile(name: &str, mut run: Run, hostile: usize) {
    let n = run.symbols.len();
    let topology = run.stack.topology();
    let store = SqliteStore::open(run.stack.sqlite_path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut done, mut dead) = (0, 0);
    while Instant::now() < deadline {
        done = completed(&store, &run.symbols).await;
        let depth = queue_depth(&topology.dead_letter_queue()).await.unwrap_or(0) as usize;
        dead = depth.saturating_sub(hostile);
        // Done when every job is accounted for and every hostile message
        // has reached the dead-letter queue too.
        if done + dead >= n && depth >= hostile {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let seconds = run.started.elapsed().as_secs_f64();
    let dead_letters = queue_depth(&topology.dead_letter_queue()).await.unwrap_or(0) as usize;
    assert!(
        dead_letters >= hostile,
        "{name}: {dead_letters} dead letters, {hostile} hostile messages sent"
    );
    // The store against the simulator: every bar once, each one the truth.
    let (start, end) = range();
    let (mut expected, mut duplicated, mut invalid, mut stored_total) = (0, 0, 0, 0);
    for symbol in &run.symbols {
        let truth = Series {
            seed: 42,
            symbol,
            market: Market::Stocks,
            frame: Frame::Day,
        };
        let times = bar_times(truth, start, end, t(SIM_NOW));
        let stored = store.bars(&series(symbol), start, end).await.unwrap();
        stored_total += stored.len();
        if store.covers(&series(symbol), start, end).await.unwrap() {
            expected += times.len();
            duplicated += stored.len().saturating_sub(times.len());
        }
        for bar in &stored {
            let real = bar_json(truth, bar.time);
            if !times.contains(&bar.time)
                || Some(bar.close) != real["c"].as_f64()
                || Some(bar.volume) != real["v"].as_f64()
            {
                invalid += 1;
            }
        }
    }
    let stats = run.stack.sim_stats().await.unwrap();
    let max_window = ["trading", "data"]
        .iter()
        .map(|api| stats["apis"][api]["max_in_window"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let lost = n.saturating_sub(done + dead);
    println!(
        "chaos {name:<20} published {n:>6}  completed {done:>6}  dead-lettered {dead:>5}  lost {lost}  duplicated {duplicated}  invalid {invalid}  bars {stored_total}/{expected}  max calls in any 1 s window {max_window} (budget {BUDGET})  {seconds:.1} s"
    );
    assert_eq!(lost, 0, "{name}: jobs lost\n{}", run.stack.worker_logs());
    assert_eq!(duplicated, 0, "{name}: bars stored twice");
    assert_eq!(invalid, 0, "{name}: invalid bars stored");
    assert!(
        max_window <= BUDGET,
        "{name}: {max_window} calls in one window, budget {BUDGET}"
    );
    run.stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_moments() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut run = start("workers_killed").await;
    let coalesce = (jobs() / 200).max(1).to_string();
    let mut alive: Vec<usize> = (0..3).collect();
    for round in 0..4u64 {
        // A moment between 0.5 and 2 s, from the round number (reproducible).
        tokio::time::sleep(Duration::from_millis(500 + (round * 977) % 1500)).await;
        let victim = alive.remove((round as usize * 7) % alive.len());
        run.stack.signal_worker(victim, "-KILL").unwrap();
        alive.push(start_worker(&mut run.stack, &coalesce));
    }
    reconcile("workers_killed", run, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_mid_run() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Half the jobs are queued before the workers start; the producer
    // publishes the other half while the broker stops and starts, so the
    // producer reconnects as well as the workers.
    let half = jobs() / 2;
    let run = start_publishing("rabbitmq_restarted", half).await;
    let file = run.stack.symbols_file(&run.symbols[half..]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let producer = run
        .stack
        .producer_spawn(&fetch_iex_days(&file, DAY, DAY, None))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rabbitmqctl("stop_app");
    tokio::time::sleep(Duration::from_secs(3)).await;
    rabbitmqctl("start_app");
    let out = producer.wait_with_output().await.unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let rest = run.symbols.len() - half;
    assert!(
        out.status.success() && printed.contains(&format!("published {rest} of {rest} jobs")),
        "the producer publishes through the restart: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let retried = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .count();
    println!("chaos rabbitmq_restarted: the producer published {rest} jobs through the restart, {retried} reconnect attempts");
    reconcile("rabbitmq_restarted", run, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run() {
    let _one = ONE_AT_A_TIME.lock().await;
    let run = start("redis_restarted").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = Command::new("redis-cli").args(["shutdown", "nosave"]).status();
    tokio::time::sleep(Duration::from_secs(3)).await;
    start_redis();
    reconcile("redis_restarted", run, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_5xx_latency_malformed_and_429_storms() {
    let _one = ONE_AT_A_TIME.lock().await;
    let run = start("api_faults").await;
    let faults = [
        serde_json::json!({"outage_secs": 3.0}),
        serde_json::json!({"error_rate": 0.5}),
        serde_json::json!({"latency_ms": 800}),
        serde_json::json!({"malformed_rate": 0.2}),
        serde_json::json!({"rate_limit_secs": 3.0}),
    ];
    for fault in faults {
        run.stack.set_faults(fault).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    run.stack.set_faults(serde_json::json!({})).await.unwrap();
    reconcile("api_faults", run, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_hostile_messages_mixed_into_the_queues() {
    let _one = ONE_AT_A_TIME.lock().await;
    let run = start("hostile_messages").await;
    let topology = run.stack.topology();
    let connection = signal9_e2e::amqp_connection().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    // Confirmed, so none is still in the client's buffer when it closes.
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let hostile: Vec<Vec<u8>> = (0..1000)
        .map(|i| match i % 5 {
            0 => b"{not json".to_vec(),
            1 => br#"{"v":1,"id":"x","kind":"fetch-bars","payload":{"symbols":["../etc/passwd"]}}"#.to_vec(),
            2 => serde_json::json!({"v": 1, "id": format!("h{i}"), "kind": "drop-tables"})
                .to_string()
                .into_bytes(),
            3 => vec![0xff; 100],
            _ => format!(
                r#"{{"v":1,"id":"h{i}","kind":"fetch-bars","payload":{{"symbol":"{}"}}}}"#,
                "A".repeat(10_000)
            )
            .into_bytes(),
        })
        .collect();
    let mut confirms = Vec::with_capacity(hostile.len());
    for (i, body) in hostile.iter().enumerate() {
        let kind = [JobKind::FetchBars, JobKind::StatusCheck, JobKind::SyncPage][i % 3];
        let priority = if i % 2 == 0 {
            Priority::Bulk
        } else {
            Priority::Interactive
        };
        let queue = topology.job_queue(kind, priority);
        let key = queue
            .trim_start_matches(&format!("{}.", topology.namespace()))
            .to_owned();
        let confirm = channel
            .basic_publish(
                topology.jobs_exchange().as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for confirm in confirms {
        assert!(confirm.await.unwrap().is_ack(), "the broker took every hostile message");
    }
    let _ = connection.close(200, "done".into()).await;
    reconcile("hostile_messages", run, 1000).await;
    // Every hostile message was dead-lettered, none stored: reconcile counted
    // the dead-letter queue less these 1,000 as the valid jobs' dead letters.
}
