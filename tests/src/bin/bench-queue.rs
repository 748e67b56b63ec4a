//! Benchmark: jobs per second through N worker processes, and API calls
//! spent per job, against the simulator with its rate limit off.
//!
//! `bench-queue --jobs 2000 --workers 3 --coalesce-max 50` publishes that
//! many daily-bar jobs (distinct symbols, one closed day) before starting
//! the workers, then times until every job has answered.
//!
//! `--telemetry on` runs the workers as production does: JSON logs at
//! `info`, the metrics server, and every span exported over OTLP/HTTP to a
//! collector in this process (which counts and discards them). `off` (the
//! default): `warn` logs, no metrics server, no trace export. `logs` and
//! `traces` switch on one half, to see what each costs.

use anyhow::{ensure, Result};
use std::time::Instant;

use signal9_e2e::{active_symbols, fetch_day, flag, Stack};

#[tokio::main]
async fn main() -> Result<()> {
    let jobs = flag("--jobs", 2000);
    let workers = flag("--workers", 1);
    let coalesce = flag("--coalesce-max", 50).to_string();
    let concurrency = flag("--concurrency", 4).to_string();
    let mode = flag("--telemetry", String::from("off"));
    ensure!(
        ["off", "on", "logs", "traces"].contains(&mode.as_str()),
        "--telemetry is off, on, logs or traces"
    );
    let (logs, traces) = (mode == "on" || mode == "logs", mode == "on" || mode == "traces");
    let telemetry = logs || traces;
    let mut stack = Stack::start(&["--limit", "0", "--assets", "40000"])?;
    let exported = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    if telemetry {
        let count = std::sync::Arc::clone(&exported);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                count.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                async { "" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        if traces {
            stack
                .extra_env
                .push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), endpoint.clone()));
        }
        if logs {
            stack.extra_env.extend(
                [("SIGNAL9_LOG_FORMAT", "json"), ("RUST_LOG", "info")].map(|(k, v)| (k.to_string(), v.to_string())),
            );
        } else {
            stack
                .extra_env
                .push(("SIGNAL9_METRICS_ADDR".to_string(), "off".to_string()));
        }
    } else {
        stack
            .extra_env
            .push(("SIGNAL9_METRICS_ADDR".to_string(), "off".to_string()));
    }
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
        "jobs {jobs}  workers {workers}  concurrency {concurrency}  coalesce-max {coalesce}  telemetry {}  seconds {seconds:.2}  jobs/s {:.0}  data calls {calls}  calls per 1000 jobs {:.1}",
        mode,
        jobs as f64 / seconds,
        calls as f64 * 1000.0 / jobs as f64
    );
    if traces {
        // Give the workers' exporters a moment to send their last batch.
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        println!(
            "OTLP bytes received: {}",
            exported.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    stack.cleanup().await;
    Ok(())
}
