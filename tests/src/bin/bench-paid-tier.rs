//! Benchmark: the paid tier. Alpaca's Algo Trader Plus allows 10,000 data
//! calls a minute; this runs the budget at that size (10,000 per 60 s, the
//! default 250 ms margin), the simulator enforcing the same limit, and N
//! workers on this machine against a backlog, then reports what the pool
//! sustained once warm:
//!
//! - calls/s and the share of the budget used (calls in the measured span
//!   against 10,000 per 60.25 s);
//! - the most calls in any 60 s window, as the simulator counted them (≤
//!   10,000, or the run failed), and 429s;
//! - the wait for a token, p50 and p99, from the workers' own histogram
//!   (`signal9_limiter_wait_seconds`, bucket bounds);
//! - bars/s stored, and the CPU seconds each part spent per second of the
//!   span (simulator, workers, Redis, RabbitMQ), which shows the limit on
//!   two cores.
//!
//! `bench-paid-tier --timeframe 1Day` queues one-call jobs (a day of daily
//! bars per symbol: the call rate, bars do not matter);
//! `--timeframe 1Min` queues a month of minute bars per symbol (two full
//! pages of up to 10,000 bars each: the bar rate).
//! Other flags: `--workers 3 --concurrency 16 --secs 60 --warm 10`.

use anyhow::{ensure, Context, Result};
use signal9_e2e::{active_symbols, fetch_day, fetch_iex_minutes, flag, Stack};
use signal9_shared::limiter::redis_pool;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const LIMIT: u64 = 10_000;
const WINDOW_SECS: f64 = 60.0;
const MARGIN_MS: u64 = 250;

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) end at ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn pids_of(name: &str) -> Vec<u32> {
    std::process::Command::new("pgrep")
        .args(["-x", name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn beam_pids() -> Vec<u32> {
    pids_of("beam.smp")
}

struct Sample {
    at: Instant,
    accepted: u64,
    bars: usize,
    cpu: BTreeMap<&'static str, f64>,
}

async fn sample(stack: &Stack) -> Result<Sample> {
    let stats = stack.sim_stats().await?;
    let mut cpu = BTreeMap::new();
    cpu.insert("simulator", cpu_secs(stack.sim.pid()));
    cpu.insert("workers", stack.worker_pids().into_iter().map(cpu_secs).sum());
    cpu.insert("redis", pids_of("redis-server").into_iter().map(cpu_secs).sum());
    cpu.insert("rabbitmq", beam_pids().into_iter().map(cpu_secs).sum());
    cpu.insert("bench (sqlite counts)", cpu_secs(std::process::id()));
    Ok(Sample {
        at: Instant::now(),
        accepted: stats["apis"]["data"]["accepted"].as_u64().unwrap_or(0),
        bars: stack.stored_bar_count(),
        cpu,
    })
}

/// The workers' token waits, summed over their `/metrics`: (le, count) per bucket.
async fn wait_buckets(stack: &Stack) -> Result<Vec<(f64, u64)>> {
    let pool = redis_pool("redis://127.0.0.1:6379").map_err(|e| anyhow::anyhow!("{e}"))?;
    let beats = signal9_shared::workers::live(&pool, &stack.namespace)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut buckets: BTreeMap<String, u64> = BTreeMap::new();
    for beat in beats {
        let Some(addr) = beat.metrics_addr else { continue };
        let text = reqwest::get(format!("http://{addr}/metrics")).await?.text().await?;
        for line in text.lines() {
            if !line.starts_with("signal9_limiter_wait_seconds_bucket{") || !line.contains("api=\"data\"") {
                continue;
            }
            let le = line
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .context("le")?;
            let count: u64 = line.rsplit(' ').next().context("count")?.parse()?;
            *buckets.entry(le.to_owned()).or_default() += count;
        }
    }
    let mut out: Vec<(f64, u64)> = buckets
        .into_iter()
        .map(|(le, n)| {
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                },
                n,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(out)
}

/// The smallest bucket bound that holds share `p` of the waits.
fn quantile(buckets: &[(f64, u64)], p: f64) -> f64 {
    let total = buckets.last().map_or(0, |b| b.1);
    let wanted = (total as f64 * p).ceil() as u64;
    buckets.iter().find(|(_, n)| *n >= wanted).map_or(f64::NAN, |b| b.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let timeframe: String = flag("--timeframe", "1Day".to_owned());
    let workers: usize = flag("--workers", 3);
    let concurrency: usize = flag("--concurrency", 16);
    let secs: f64 = flag("--secs", 60.0);
    let warm: f64 = flag("--warm", 10.0);
    let minute = timeframe == "1Min";
    let mut stack = Stack::start(&[
        "--limit",
        &LIMIT.to_string(),
        "--window",
        &WINDOW_SECS.to_string(),
        "--assets",
        "40000",
    ])?;
    for (name, value) in [
        ("SIGNAL9_DATA_LIMIT", LIMIT.to_string()),
        ("SIGNAL9_DATA_WINDOW_SECS", WINDOW_SECS.to_string()),
        ("SIGNAL9_BUDGET_MARGIN_MS", MARGIN_MS.to_string()),
        ("SIGNAL9_BUDGET_WAIT_SECS", "600".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ] {
        stack.extra_env.push((name.into(), value));
    }
    // Enough work for the whole run at the full rate, and some.
    let per_sec = LIMIT as f64 / (WINDOW_SECS + MARGIN_MS as f64 / 1000.0);
    let calls_needed = (per_sec * (warm + secs) * 1.3) as usize;
    let jobs = if minute { calls_needed / 2 } else { calls_needed };
    // One job per symbol and day (or month), over as many days (months) as
    // it takes.
    let symbols = active_symbols(42, 40_000, jobs.min(15_000));
    let file = stack.symbols_file(&symbols);
    let queued = Instant::now();
    let mut published = 0;
    for (day, month) in [
        ("2026-11-20", ("2026-10-01", "2026-10-31")),
        ("2026-11-19", ("2026-09-01", "2026-09-30")),
        ("2026-11-18", ("2026-08-01", "2026-08-31")),
        ("2026-11-17", ("2026-07-01", "2026-07-31")),
    ] {
        if published >= jobs {
            break;
        }
        let args: Vec<&str> = if minute {
            fetch_iex_minutes(&file, month.0, month.1, None)
        } else {
            fetch_day(&file, day, None)
        };
        let out = stack.producer(&args).await?;
        ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        published += symbols.len();
    }
    ensure!(published >= jobs, "not enough work queued ({published} of {jobs} jobs)");
    let jobs = published;
    println!(
        "queued {jobs} {timeframe} jobs in {:.1} s; budget {LIMIT} per {WINDOW_SECS} s (+{MARGIN_MS} ms), the simulator enforcing {LIMIT} per {WINDOW_SECS} s",
        queued.elapsed().as_secs_f64()
    );
    let c = concurrency.to_string();
    for _ in 0..workers {
        stack.start_worker(&["--concurrency", &c, "--coalesce-max", "1", "--coalesce-wait-ms", "0"])?;
    }
    tokio::time::sleep(Duration::from_secs_f64(warm)).await;
    let first = sample(&stack).await?;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let last = sample(&stack).await?;
    let span = last.at.duration_since(first.at).as_secs_f64();
    let calls = last.accepted - first.accepted;
    let bars = last.bars.saturating_sub(first.bars);
    let stats = stack.sim_stats().await?;
    let data = &stats["apis"]["data"];
    let buckets = wait_buckets(&stack).await?;
    println!(
        "{workers} workers × concurrency {concurrency}, {timeframe}: {:.0} calls/s over {span:.0} s ({:.1} % of the budget's {per_sec:.0}/s), most in any 60 s window {} (limit {LIMIT}), 429s {}, token wait p50 ≤ {} s, p99 ≤ {} s, {:.0} bars/s stored ({:.0} bars a call)",
        calls as f64 / span,
        100.0 * calls as f64 / span / per_sec,
        data["max_in_window"],
        data["rate_limited"],
        quantile(&buckets, 0.5),
        quantile(&buckets, 0.99),
        bars as f64 / span,
        if calls > 0 { bars as f64 / calls as f64 } else { 0.0 },
    );
    let cpu: Vec<String> = last
        .cpu
        .iter()
        .map(|(part, s)| format!("{part} {:.2}", (s - first.cpu.get(part).copied().unwrap_or(0.0)) / span))
        .collect();
    println!("CPU seconds per second (2 cores = 2.00): {}", cpu.join(", "));
    ensure!(
        data["max_in_window"].as_u64().unwrap_or(u64::MAX) <= LIMIT,
        "the budget was exceeded"
    );
    stack.cleanup().await;
    Ok(())
}
