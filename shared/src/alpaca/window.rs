//! An in-process sliding-window gate: at most N calls in any rolling window
//! of W seconds, waiting (never failing) when the window is full.
//!
//! It holds the budget for one process only, so it serves single-process
//! tools (the direct ingest of the quick start) until the Redis budget,
//! which holds it across every process, replaces it.

use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use super::client::{Api, CallOutcome, Gate};
use super::error::AlpacaError;

/// One budget's window.
#[derive(Debug)]
struct Window {
    limit: usize,
    length: Duration,
    admitted: Mutex<VecDeque<Instant>>,
    calls: AtomicU64,
}

impl Window {
    fn new(limit: u32, length: Duration) -> Self {
        Window {
            limit: limit.max(1) as usize,
            length,
            admitted: Mutex::new(VecDeque::new()),
            calls: AtomicU64::new(0),
        }
    }

    /// Takes a slot now, or says how long until the oldest one frees.
    fn try_take(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut admitted = self.admitted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while admitted.front().is_some_and(|t| now.duration_since(*t) >= self.length) {
            admitted.pop_front();
        }
        if admitted.len() < self.limit {
            admitted.push_back(now);
            self.calls.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let oldest = admitted.front().copied().unwrap_or(now);
        Err((oldest + self.length).saturating_duration_since(now))
    }
}

/// Separate windows for the trading and market-data budgets.
#[derive(Debug)]
pub struct ProcessWindow {
    trading: Window,
    data: Window,
}

impl ProcessWindow {
    /// A gate admitting `trading.0` calls per `trading.1` on the trading API
    /// and likewise for market data.
    pub fn new(trading: (u32, Duration), data: (u32, Duration)) -> Self {
        ProcessWindow {
            trading: Window::new(trading.0, trading.1),
            data: Window::new(data.0, data.1),
        }
    }

    fn window(&self, api: Api) -> &Window {
        match api {
            Api::Trading => &self.trading,
            Api::Data => &self.data,
        }
    }

    /// Calls admitted so far on `api`.
    pub fn calls(&self, api: Api) -> u64 {
        self.window(api).calls.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Gate for ProcessWindow {
    async fn admit(&self, api: Api) -> Result<(), AlpacaError> {
        loop {
            match self.window(api).try_take() {
                Ok(()) => return Ok(()),
                // The lock is released before sleeping; a small pad avoids
                // waking a hair before the slot frees.
                Err(wait) => tokio::time::sleep(wait + Duration::from_millis(5)).await,
            }
        }
    }

    fn observe(&self, _api: Api, _outcome: &CallOutcome) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_instead_of_exceeding_the_window() {
        let gate = ProcessWindow::new((3, Duration::from_secs(10)), (100, Duration::from_secs(10)));
        let started = tokio::time::Instant::now();
        for _ in 0..3 {
            gate.admit(Api::Trading).await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        gate.admit(Api::Trading).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(10),
            "the fourth call waits for the window"
        );
        assert_eq!(gate.calls(Api::Trading), 4);
        assert_eq!(gate.calls(Api::Data), 0);
    }
}
