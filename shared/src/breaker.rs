//! A circuit breaker per API (the `failsafe` crate): after repeated API
//! failures it stops calls for a back-off, then lets a probe through, and
//! closes again on success. Its state is kept where logs, metrics and the
//! status command can read it.

use failsafe::backoff::{self, EqualJittered};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::{Config, Instrument, StateMachine};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are stopped until the back-off ends.
    Open,
    /// One probe may pass.
    HalfOpen,
}

impl BreakerState {
    /// Lowercase name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Records transitions and logs them.
#[derive(Debug, Clone)]
pub struct Observer {
    api: &'static str,
    state: Arc<AtomicU8>,
    opened: Arc<AtomicU64>,
}

impl Instrument for Observer {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        self.state.store(1, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        let metrics = crate::telemetry::metrics::get();
        metrics.breaker_state.with_label_values(&[self.api]).set(2);
        metrics.breaker_opened.with_label_values(&[self.api]).inc();
        tracing::warn!(
            api = self.api,
            breaker = "open",
            "Circuit breaker opened; calls stop until the back-off ends"
        );
    }

    fn on_half_open(&self) {
        self.state.store(2, Ordering::Relaxed);
        crate::telemetry::metrics::get()
            .breaker_state
            .with_label_values(&[self.api])
            .set(1);
        tracing::info!(
            api = self.api,
            breaker = "half_open",
            "Circuit breaker half-open; probing"
        );
    }

    fn on_closed(&self) {
        if self.state.swap(0, Ordering::Relaxed) != 0 {
            crate::telemetry::metrics::get()
                .breaker_state
                .with_label_values(&[self.api])
                .set(0);
            tracing::info!(
                api = self.api,
                breaker = "closed",
                "Circuit breaker closed; calls flow again"
            );
        }
    }
}

/// A breaker for one API.
#[derive(Debug, Clone)]
pub struct Breaker {
    machine: StateMachine<ConsecutiveFailures<EqualJittered>, Observer>,
    observer: Observer,
}

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive API failures that open it.
    pub failures: u32,
    /// First back-off (at least 2 s); it doubles up to `max_backoff`, each
    /// actual wait jittered between half and all of it.
    pub backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
}

impl Breaker {
    /// A closed breaker for `api`.
    pub fn new(api: &'static str, policy: BreakerPolicy) -> Self {
        let observer = Observer {
            api,
            state: Arc::new(AtomicU8::new(0)),
            opened: Arc::new(AtomicU64::new(0)),
        };
        crate::telemetry::metrics::get()
            .breaker_state
            .with_label_values(&[api])
            .set(0);
        // failsafe's back-off counts whole seconds and halves the first one
        // for its jitter: below 2 s it would be zero.
        let start = policy.backoff.max(Duration::from_secs(2));
        let max = policy.max_backoff.max(start);
        let policy = failure_policy::consecutive_failures(policy.failures.max(1), backoff::equal_jittered(start, max));
        let machine = Config::new()
            .failure_policy(policy)
            .instrument(observer.clone())
            .build();
        Breaker { machine, observer }
    }

    /// True when a call may be made now.
    pub fn permits(&self) -> bool {
        self.machine.is_call_permitted()
    }

    /// Reports a call the API answered properly (including 4xx).
    pub fn success(&self) {
        self.machine.on_success();
    }

    /// Reports an API failure (no answer, 5xx).
    pub fn failure(&self) {
        self.machine.on_error();
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match self.observer.state.load(Ordering::Relaxed) {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// How many times it has opened.
    pub fn times_opened(&self) -> u64 {
        self.observer.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_metric_and_log_spellings() {
        assert_eq!(BreakerState::Closed.as_str(), "closed");
        assert_eq!(BreakerState::Open.as_str(), "open");
        assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
    }

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_probe() {
        let breaker = Breaker::new(
            "data",
            BreakerPolicy {
                failures: 3,
                backoff: Duration::from_secs(2),
                max_backoff: Duration::from_secs(2),
            },
        );
        for _ in 0..3 {
            assert!(breaker.permits());
            breaker.failure();
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.permits());
        std::thread::sleep(Duration::from_millis(2_100));
        assert!(breaker.permits(), "half-open after the back-off");
        breaker.success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.times_opened(), 1);
    }
}
