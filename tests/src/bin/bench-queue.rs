//! Benchmark: jobs per second through N worker processes, and API calls
//! spent per job, against the simulator with its rate limit off.
//!
//! `bench-queue --jobs 2000 --workers 3 --coalesce-max 50` publishes that
//! many daily-bar jobs (distinct symbols, one closed day) before starting
//! the workers, then times until every job has answered.

use anyhow::{ensure, Result};
use std::time::Instant;

use signal9_e2e::{active_symbols, fetch_day, flag, Stack};

#[tokio::main]
async fn main() -> Result<()> {
    let jobs = flag("--jobs", 2000);
    let workers = flag("--workers", 1);
    let coalesce = flag("--coalesce-max", 50).to_string();
    let concurrency = flag("--concurrency", 4).to_string();
    let mut stack = Stack::start(&["--limit", "0", "--assets", "40000"])?;
    let symbols = active_symbols(42, 40_000, jobs);
    ensure!(
        symbols.len() == jobs,
        "the universe has only {} active symbols",
        symbols.len()
    );
    let file = stack.symbols_file(&symbols);
    let publish = fetch_day(&file, "2026-11-20", Some("1200"));
    let waiter = stack.producer_spawn(&publish)?;
    // Let the backlog build before any worker starts, as after an outage.
    let queue = stack.topology().job_queue(
        signal9_shared::job::JobKind::FetchBars,
        signal9_shared::job::Priority::Bulk,
    );
    signal9_e2e::eventually(std::time::Duration::from_secs(120), || async {
        signal9_e2e::queue_depth(&queue).await.unwrap_or(0) as usize >= jobs
    })
    .await;
    let started = Instant::now();
    for _ in 0..workers {
        // The budget is off too: this measures the pipeline, not the API's ceiling.
        stack.start_worker(&[
            "--concurrency",
            &concurrency,
            "--coalesce-max",
            &coalesce,
            "--data-limit",
            "1000000000",
            "--trading-limit",
            "1000000000",
        ])?;
    }
    let out = waiter.wait_with_output().await?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let stats = stack.sim_stats().await?;
    let calls = stats["apis"]["data"]["accepted"].as_u64().unwrap_or(0);
    println!(
        "jobs {jobs}  workers {workers}  concurrency {concurrency}  coalesce-max {coalesce}  seconds {seconds:.2}  jobs/s {:.0}  data calls {calls}  calls per 1000 jobs {:.1}",
        jobs as f64 / seconds,
        calls as f64 * 1000.0 / jobs as f64
    );
    stack.cleanup().await;
    Ok(())
}
