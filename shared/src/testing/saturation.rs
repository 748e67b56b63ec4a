//! A saturating bulk load on one budget, and interactive calls arriving in
//! the middle of it (feature `test-support`): the limiter tests (one
//! server, a cluster) and `bench-limiter` run it. Callers wait as the
//! gate's callers do: the wait they are told, plus up to 10 % (at most
//! 50 ms) of jitter. Panics on a Redis error: it is a test's tool.

use crate::limiter::{redis_pool, Acquire, Budget, BudgetSize, Share};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one saturation run saw.
#[derive(Debug)]
pub struct Saturation {
    /// How long each interactive call waited for its token.
    pub interactive_waits: Vec<Duration>,
    /// Tokens granted (every share) per window in the steady part of the
    /// run: from two windows after the first grant (a backlog that starts
    /// with a burst settles into the pace by then) to the last, on Redis's
    /// clock.
    pub steady_per_window: f64,
    /// The most tokens in any window, on Redis's clock.
    pub most_in_a_window: usize,
}

impl Saturation {
    /// What a test asks of a run with budget `limit`: never more than it in
    /// a window, no interactive wait past `longest`, and at least `share`
    /// of it per window once steady.
    pub fn check(&self, limit: u32, longest: Duration, share: f64) -> Result<(), String> {
        if self.most_in_a_window > limit as usize {
            return Err(format!("{} tokens in one window, limit {limit}", self.most_in_a_window));
        }
        if self.interactive_waits.iter().any(|w| *w > longest) {
            return Err(format!(
                "interactive waits {:?}, longest allowed {longest:?}",
                self.interactive_waits
            ));
        }
        if self.steady_per_window < f64::from(limit) * share {
            return Err(format!(
                "{:.2} tokens per window of {limit} under a bulk backlog",
                self.steady_per_window
            ));
        }
        Ok(())
    }
}

fn jitter(wait: Duration) -> Duration {
    let extra = (wait / 10).min(Duration::from_millis(50));
    wait + extra.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// Takes one token for `share`, trying again as told; returns its grant
/// time on Redis's clock (ms).
#[allow(clippy::unwrap_used)]
async fn take(budget: &Budget, share: Share) -> i64 {
    let waiter = uuid::Uuid::new_v4().simple().to_string();
    loop {
        match budget.acquire(share, &waiter, None).await.unwrap() {
            Acquire::Granted { at_ms, .. } => return at_ms,
            Acquire::Wait { wait, .. } => tokio::time::sleep(jitter(wait)).await,
        }
    }
}

/// `bulk` callers take tokens as fast as the budget (`limit` per `window`,
/// no margin) lets them for `run`; after two windows, `interactive` calls
/// arrive one after another, 0–2 intervals apart.
#[allow(clippy::unwrap_used)]
pub async fn saturate(
    url: &str,
    limit: u32,
    window: Duration,
    run: Duration,
    bulk: usize,
    interactive: usize,
) -> Saturation {
    let namespace = super::namespace();
    let size = BudgetSize {
        limit,
        window,
        margin: Duration::ZERO,
    };
    let budget = Arc::new(Budget::new(redis_pool(url).unwrap(), &namespace, "data", size));
    let started = Instant::now();
    let bulk: Vec<_> = (0..bulk)
        .map(|_| {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                let mut grants = Vec::new();
                while started.elapsed() < run {
                    grants.push(take(&budget, Share::Shared).await);
                }
                grants
            })
        })
        .collect();
    let interval = window / limit;
    tokio::time::sleep(window * 2).await;
    let mut interactive_waits = Vec::new();
    let mut all = Vec::new();
    for i in 0..interactive {
        let asked = Instant::now();
        all.push(take(&budget, Share::Full).await);
        interactive_waits.push(asked.elapsed());
        tokio::time::sleep(interval * u32::try_from(i % 3).unwrap()).await;
    }
    for task in bulk {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let window_ms = i64::try_from(window.as_millis()).unwrap();
    let most_in_a_window = (0..all.len())
        .map(|i| all[i..].iter().take_while(|t| **t < all[i] + window_ms).count())
        .max()
        .unwrap_or(0);
    let steady_from = all[0] + window_ms * 2;
    let last = *all.last().unwrap();
    let steady = all.iter().filter(|t| **t >= steady_from).count();
    #[allow(clippy::cast_precision_loss)]
    let steady_per_window = steady as f64 * window_ms as f64 / (last - steady_from) as f64;
    Saturation {
        interactive_waits,
        steady_per_window,
        most_in_a_window,
    }
}
