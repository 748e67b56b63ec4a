//! Benchmark of the Redis budget itself: acquire latency and throughput
//! against the local Redis, and exactness at the window's edge; and of the
//! whole gate a call passes (the pool's breaker, then the budget), as a
//! worker meets it.
//!
//! `bench-limiter` prints one line per measurement; `--no-saturation`
//! leaves out the 40-second priority run.

use anyhow::Result;
use signal9_alpaca::{Api, Gate, Priority};
use signal9_shared::breaker::{Admission, BreakerPolicy};
use signal9_shared::gate::ApiGate;
use signal9_shared::limiter::{redis_pool, Acquire, Budget, BudgetSize, Share};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal9_shared::testing::namespace;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A budget too large ever to bind.
fn unbounded() -> BudgetSize {
    BudgetSize {
        limit: u32::MAX,
        window: Duration::from_secs(1),
        margin: Duration::ZERO,
    }
}

/// Runs `call` `per_task` times on each of `concurrency` tasks (each call
/// must succeed) and prints the rate and the latency under `label`.
async fn timed<F, Fut>(label: &str, concurrency: usize, per_task: usize, call: F) -> Result<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = Arc::clone(&call);
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let t = Instant::now();
                    assert!(call().await, "a call failed");
                    times.push(t.elapsed());
                }
                times
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    println!(
        "signal9 {label}  concurrency {concurrency:>2}  calls {:>6}  per second {:>7.0}  p50 {:>6.0} µs  p99 {:>6.0} µs",
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.5).as_secs_f64() * 1e6,
        percentile(&all, 0.99).as_secs_f64() * 1e6
    );
    Ok(())
}

/// The budget's acquire alone.
async fn latency(concurrency: usize, per_task: usize) -> Result<()> {
    let pool = redis_pool("redis://127.0.0.1:6379")?;
    let budget = Arc::new(Budget::new(pool, &namespace(), "data", unbounded()));
    timed("acquire", concurrency, per_task, move || {
        let budget = Arc::clone(&budget);
        async move { matches!(budget.try_acquire().await, Ok(Acquire::Granted { .. })) }
    })
    .await
}

/// The gate's admit: `one_trip`, as the gate does it (breaker and budget in
/// one script); otherwise as it did before (the breaker's admit, then the
/// budget's acquire: two round trips).
async fn gate(concurrency: usize, per_task: usize, one_trip: bool) -> Result<()> {
    let policy = BreakerPolicy {
        failures: 5,
        backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(60),
    };
    let pool = redis_pool("redis://127.0.0.1:6379")?;
    let (size, wait) = (unbounded(), Duration::from_secs(5));
    let gate = Arc::new(ApiGate::new(pool, &namespace(), size, size, policy, wait));
    let label = if one_trip {
        "gate admit, one script (now)     "
    } else {
        "gate admit, two round trips (before)"
    };
    timed(label, concurrency, per_task, move || {
        let gate = Arc::clone(&gate);
        async move {
            if one_trip {
                return gate.admit(Api::Data, Priority::Bulk).await.is_ok();
            }
            let admitted = gate.breaker(Api::Data).admit().await;
            let granted = gate.budget(Api::Data).try_acquire_as(Share::Shared).await;
            admitted == Ok(Admission::Go) && matches!(granted, Ok(Acquire::Granted { .. }))
        }
    })
    .await
}

/// Priority under saturation: `bulk` callers hold the budget full while
/// interactive calls arrive one after another; their waits, and how much of
/// the budget the pool used once steady.
async fn saturation(limit: u32, window: Duration, run: Duration, bulk: usize, interactive: usize) -> Result<()> {
    let seen =
        signal9_shared::testing::saturation::saturate("redis://127.0.0.1:6379", limit, window, run, bulk, interactive)
            .await;
    let mut waits = seen.interactive_waits.clone();
    waits.sort();
    let interval = window / limit;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "signal9 saturation  limit {limit} per {:.0} s (one token per {:.0} ms)  {bulk} bulk callers  {} interactive calls: wait p50 {:.0} ms  p90 {:.0} ms  p99 {:.0} ms  max {:.0} ms  ({:.0} % within one interval + 50 ms jitter)  steady use {:.1} % of N  most in any window {} of {limit}",
        window.as_secs_f64(),
        ms(interval),
        waits.len(),
        ms(percentile(&waits, 0.5)),
        ms(percentile(&waits, 0.9)),
        ms(percentile(&waits, 0.99)),
        ms(*waits.last().unwrap_or(&Duration::ZERO)),
        100.0 * waits.iter().filter(|w| **w <= interval + Duration::from_millis(50)).count() as f64 / waits.len() as f64,
        100.0 * seen.steady_per_window / f64::from(limit),
        seen.most_in_a_window,
    );
    Ok(())
}

async fn exactness(limit: u32, window: Duration, run: Duration) -> Result<()> {
    let ns = namespace();
    let size = BudgetSize {
        limit,
        window,
        margin: Duration::ZERO,
    };
    let pool = redis_pool("redis://127.0.0.1:6379")?;
    let budget = Arc::new(Budget::new(pool, &ns, "data", size));
    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                let mut grants = Vec::new();
                while started.elapsed() < run {
                    let before = started.elapsed();
                    if let Ok(Acquire::Granted { at_ms, .. }) = budget.try_acquire().await {
                        // Locally the grant happened between these two instants: take the middle.
                        let local = (before + started.elapsed()) / 2;
                        grants.push((local.as_micros() as i64, at_ms * 1000));
                    }
                }
                grants
            })
        })
        .collect();
    let mut both = Vec::new();
    for task in tasks {
        both.extend(task.await?);
    }
    let window_us = i64::try_from(window.as_micros())?;
    let most = |mut times: Vec<i64>| {
        times.sort_unstable();
        (0..times.len())
            .map(|i| times[i..].iter().take_while(|t| **t < times[i] + window_us).count())
            .max()
            .unwrap_or(0)
    };
    let local = most(both.iter().map(|(l, _)| *l).collect());
    let server = most(both.iter().map(|(_, s)| *s).collect());
    let ideal = (run.as_secs_f64() / window.as_secs_f64()).ceil() * f64::from(limit);
    println!(
        "signal9 exactness  limit {limit} per {:.1} s  4 clients hammering {:.1} s  granted {}  (at most {ideal:.0} possible)  most in any window: {server} on Redis's clock, {local} on the client's (round-trip midpoints)",
        window.as_secs_f64(),
        run.as_secs_f64(),
        both.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    for concurrency in [1, 8, 32] {
        latency(concurrency, 20_000 / concurrency).await?;
    }
    for one_trip in [false, true] {
        for concurrency in [1, 8, 32] {
            gate(concurrency, 20_000 / concurrency, one_trip).await?;
        }
    }
    exactness(50, Duration::from_secs(1), Duration::from_millis(3_500)).await?;
    if !std::env::args().any(|a| a == "--no-saturation") {
        saturation(20, Duration::from_secs(2), Duration::from_secs(40), 8, 100).await?;
    }
    Ok(())
}
