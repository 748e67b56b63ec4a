//! Internal events, as vector does it: each thing worth telling an operator
//! is one struct whose [`Emit::emit`] writes its log line and bumps its
//! counters together, so a log line and its metric cannot drift apart and
//! label values are spelled once. Emit inside the span the event belongs to
//! (a job's, a call's), so its log line joins that trace. A log line keeps
//! the target of the part it tells of (`signal9_worker`,
//! `signal9_shared::breaker`, `signal9_shared::sync`), so `RUST_LOG` filters
//! written for those parts still select it.

use std::time::Duration;

use signal9_alpaca::class::ErrorClass;
use signal9_alpaca::Api;

use super::metrics;

const WORKER: &str = "signal9_worker";
const BREAKER: &str = "signal9_shared::breaker";
const SYNC: &str = "signal9_shared::sync";
use crate::breaker::state::BreakerState;
use crate::job::JobKind;

/// Something that happened, told once: a log line and its metrics.
pub trait Emit {
    /// Writes the log line and records the metrics.
    fn emit(self);
}

/// What became of a job, as the `outcome` label of `signal9_jobs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done, acked, replied to.
    Succeeded,
    /// Delayed without counting an attempt (the budget or the breaker held it).
    Deferred,
    /// Failed transiently; sent to a delay tier.
    Retried,
    /// Failed for good; in the dead-letter queue.
    DeadLettered,
    /// Its ack or its routing failed; the broker redelivers it.
    Unacked,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Deferred => "deferred",
            Outcome::Retried => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Unacked => "unacked",
        }
    }
}

/// How a job ended, with what its log line needs.
#[derive(Debug, Clone, Copy)]
pub enum JobEnd<'a> {
    /// Done. `quiet`: logged at debug (bar jobs come by the thousand; their
    /// batch logs one line).
    Succeeded {
        /// Log at debug rather than info.
        quiet: bool,
    },
    /// Delayed without an attempt.
    Deferred {
        /// Why it could not run now.
        reason: &'a str,
    },
    /// Failed; retried later or dead-lettered.
    Failed {
        /// Transient or permanent.
        class: ErrorClass,
        /// The error, as logged.
        error: &'a str,
        /// True when it went to the dead-letter queue.
        dead: bool,
    },
    /// Finished but its ack failed.
    AckFailed {
        /// The broker's error.
        error: &'a str,
    },
    /// Failed and its retry or dead letter could not be published.
    RouteFailed {
        /// The broker's error.
        error: &'a str,
    },
}

impl JobEnd<'_> {
    /// The outcome label this end counts under.
    pub fn outcome(&self) -> Outcome {
        match self {
            JobEnd::Succeeded { .. } => Outcome::Succeeded,
            JobEnd::Deferred { .. } => Outcome::Deferred,
            JobEnd::Failed { dead: true, .. } => Outcome::DeadLettered,
            JobEnd::Failed { dead: false, .. } => Outcome::Retried,
            JobEnd::AckFailed { .. } | JobEnd::RouteFailed { .. } => Outcome::Unacked,
        }
    }
}

/// A job ended: `signal9_jobs_total{kind, outcome}`,
/// `signal9_job_duration_seconds{kind}` and the job's last log line.
#[derive(Debug, Clone, Copy)]
pub struct JobFinished<'a> {
    /// The job's kind.
    pub kind: JobKind,
    /// How it ended.
    pub end: JobEnd<'a>,
    /// From delivery to the end.
    pub elapsed: Duration,
}

impl Emit for JobFinished<'_> {
    fn emit(self) {
        match self.end {
            JobEnd::Succeeded { quiet: true } => tracing::debug!(target: WORKER, "Job succeeded"),
            JobEnd::Succeeded { quiet: false } => tracing::info!(target: WORKER, "Job succeeded"),
            JobEnd::Deferred { reason } => tracing::info!(target: WORKER, reason, "Job delayed without an attempt"),
            JobEnd::Failed { class, error, dead } => {
                let route = if dead { "dead-letter" } else { "retry" };
                tracing::warn!(target: WORKER, error_class = %class, error, route, "Job failed");
            }
            JobEnd::AckFailed { error } => {
                tracing::warn!(target: WORKER,
                    error,
                    "Could not ack a finished job; it will be redelivered (writes are idempotent)"
                )
            }
            JobEnd::RouteFailed { error } => {
                tracing::warn!(target: WORKER, error, "Could not route a failed job; it will be redelivered")
            }
        }
        let m = metrics::get();
        let kind = self.kind.as_str();
        m.jobs.with_label_values(&[kind, self.end.outcome().as_str()]).inc();
        m.job_duration
            .with_label_values(&[kind])
            .observe(self.elapsed.as_secs_f64());
    }
}

/// A message that is no job (bad JSON, unknown kind, hostile symbol) went
/// to the dead-letter queue: `signal9_jobs_total{kind="malformed"}`.
#[derive(Debug, Clone, Copy)]
pub struct MalformedJob<'a> {
    /// The key it arrived with.
    pub routing_key: &'a str,
    /// Why it is no job.
    pub error: &'a str,
}

impl Emit for MalformedJob<'_> {
    fn emit(self) {
        tracing::warn!(target: WORKER,
            routing_key = self.routing_key,
            error = self.error,
            "Malformed job dead-lettered"
        );
        metrics::get()
            .jobs
            .with_label_values(&["malformed", Outcome::DeadLettered.as_str()])
            .inc();
    }
}

/// A failed job was published to a delay tier or the dead-letter queue:
/// `signal9_retries_total{class}` or `signal9_dead_letters_total{class}`.
#[derive(Debug, Clone, Copy)]
pub struct FailureRouted {
    /// Transient or permanent.
    pub class: ErrorClass,
    /// True for the dead-letter queue, false for a delay tier.
    pub dead: bool,
}

impl Emit for FailureRouted {
    fn emit(self) {
        let m = metrics::get();
        let counter = if self.dead { &m.dead_letters } else { &m.retries };
        counter.with_label_values(&[self.class.as_str()]).inc();
    }
}

/// An Alpaca call was answered (or not): `signal9_api_calls_total` and
/// `signal9_api_latency_seconds`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiCalled<'a> {
    /// Which budget it spent.
    pub api: Api,
    /// `GET /v2/stocks/bars`, ...
    pub endpoint: &'a str,
    /// The HTTP status; `None` when no answer came.
    pub status: Option<u16>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Emit for ApiCalled<'_> {
    fn emit(self) {
        let m = metrics::get();
        let status = self.status.map_or_else(|| "none".to_owned(), |s| s.to_string());
        m.api_calls
            .with_label_values(&[self.api.as_str(), self.endpoint, &status])
            .inc();
        m.api_latency
            .with_label_values(&[self.api.as_str(), self.endpoint])
            .observe(self.elapsed.as_secs_f64());
    }
}

/// A caller waited for a token (granted or not): `signal9_limiter_wait_seconds`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BudgetWaited {
    /// Which budget.
    pub api: Api,
    /// From asking to the answer.
    pub waited: Duration,
}

impl Emit for BudgetWaited {
    fn emit(self) {
        metrics::get()
            .limiter_wait
            .with_label_values(&[self.api.as_str()])
            .observe(self.waited.as_secs_f64());
    }
}

/// A token was granted: `signal9_limiter_tokens_in_window`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenGranted {
    /// Which budget.
    pub api: Api,
    /// Tokens in the window, this one included.
    pub in_window: u32,
}

impl Emit for TokenGranted {
    fn emit(self) {
        metrics::get()
            .tokens_in_window
            .with_label_values(&[self.api.as_str()])
            .set(i64::from(self.in_window));
    }
}

/// This process opened the pool's breaker (or its probe failed and it
/// opened again): `signal9_breaker_opened_total`, the state gauge, a warning.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerOpened<'a> {
    /// `trading` or `data`.
    pub api: &'a str,
    /// The back-off before the next probe.
    pub back_off_ms: i64,
    /// True when a probe failed (reopened), false on the first opening.
    pub probe_failed: bool,
}

impl Emit for BreakerOpened<'_> {
    fn emit(self) {
        let m = metrics::get();
        m.breaker_opened.with_label_values(&[self.api]).inc();
        m.breaker_state
            .with_label_values(&[self.api])
            .set(BreakerState::Open.gauge());
        tracing::warn!(target: BREAKER,
            api = self.api,
            breaker = "open",
            back_off_ms = self.back_off_ms,
            probe_failed = self.probe_failed,
            "Circuit breaker opened for the whole pool; calls stop until the back-off ends"
        );
    }
}

/// A breaker was built: its state gauge starts at closed (no log line).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerCreated<'a> {
    /// `trading` or `data`.
    pub api: &'a str,
}

impl Emit for BreakerCreated<'_> {
    fn emit(self) {
        metrics::get()
            .breaker_state
            .with_label_values(&[self.api])
            .set(BreakerState::Closed.gauge());
    }
}

/// This process saw the pool's breaker change state: the state gauge and
/// an info line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerStateSeen<'a> {
    /// `trading` or `data`.
    pub api: &'a str,
    /// The state it now sees.
    pub state: BreakerState,
}

impl Emit for BreakerStateSeen<'_> {
    fn emit(self) {
        metrics::get()
            .breaker_state
            .with_label_values(&[self.api])
            .set(self.state.gauge());
        let api = self.api;
        match self.state {
            BreakerState::Open => {
                tracing::info!(target: BREAKER,
                    api,
                    breaker = "open",
                    "Circuit breaker is open (shared by the pool); calls wait"
                )
            }
            BreakerState::HalfOpen => {
                tracing::info!(target: BREAKER,
                    api,
                    breaker = "half_open",
                    "Circuit breaker half-open; this process probes"
                )
            }
            BreakerState::Closed => {
                tracing::info!(target: BREAKER, api, breaker = "closed", "Circuit breaker closed; calls flow again")
            }
        }
    }
}

/// Reading the Alpaca secret failed: `signal9_secret_refresh_failures_total{reason}`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SecretRefreshFailed {
    /// `timeout`, `unavailable`, `missing` or `malformed`.
    pub reason: &'static str,
}

impl Emit for SecretRefreshFailed {
    fn emit(self) {
        metrics::get()
            .secret_refresh_failures
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// A sync page was listed and stored: `signal9_sync_pages_total{outcome="listed"}`
/// and `signal9_sync_assets_total{change}`.
#[derive(Debug, Clone, Copy)]
pub struct SyncPageListed {
    /// Assets new to the store.
    pub new: usize,
    /// Assets whose fields changed.
    pub updated: usize,
    /// Assets as stored.
    pub unchanged: usize,
    /// Assets whose status or tradability changed.
    pub status_changed: usize,
    /// Listed assets that failed validation.
    pub rejected: usize,
}

impl Emit for SyncPageListed {
    fn emit(self) {
        let m = metrics::get();
        m.sync_pages.with_label_values(&["listed"]).inc();
        for (change, n) in [
            ("new", self.new),
            ("updated", self.updated),
            ("unchanged", self.unchanged),
            ("status_changed", self.status_changed),
            ("rejected", self.rejected),
        ] {
            m.sync_assets.with_label_values(&[change]).inc_by(n as u64);
        }
    }
}

/// A sync run closed: `signal9_sync_runs_total{status}`,
/// `signal9_sync_assets_total{change="delisted"}` and an info line.
#[derive(Debug, Clone, Copy)]
pub struct SyncRunClosed<'a> {
    /// The run.
    pub run_id: &'a str,
    /// `completed` or `suspect`.
    pub status: &'a str,
    /// Assets it delisted.
    pub delisted: u64,
    /// Pages listed again before reconcile (their listing had grown stale).
    pub relisted_pages: u64,
}

impl Emit for SyncRunClosed<'_> {
    fn emit(self) {
        let m = metrics::get();
        m.sync_runs.with_label_values(&[self.status]).inc();
        m.sync_assets.with_label_values(&["delisted"]).inc_by(self.delisted);
        tracing::info!(target: SYNC,
            run_id = self.run_id,
            status = self.status,
            delisted = self.delisted,
            relisted_pages = self.relisted_pages,
            "Sync run closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(kind: &str, outcome: &str) -> u64 {
        metrics::get().jobs.with_label_values(&[kind, outcome]).get()
    }

    #[test]
    fn a_finished_job_counts_under_the_label_of_its_end() {
        let before = jobs("status-check", "dead_lettered");
        let retried = jobs("status-check", "retried");
        JobFinished {
            kind: JobKind::StatusCheck,
            end: JobEnd::Failed {
                class: ErrorClass::Permanent,
                error: "asset not found",
                dead: true,
            },
            elapsed: Duration::from_millis(5),
        }
        .emit();
        assert_eq!(jobs("status-check", "dead_lettered"), before + 1);
        assert_eq!(jobs("status-check", "retried"), retried, "only its own label");
        assert_eq!(JobEnd::AckFailed { error: "x" }.outcome(), Outcome::Unacked);
        assert_eq!(JobEnd::Deferred { reason: "x" }.outcome().as_str(), "deferred");
    }

    #[test]
    fn an_opened_breaker_counts_and_sets_the_gauge() {
        let m = metrics::get();
        let before = m.breaker_opened.with_label_values(&["test-api"]).get();
        BreakerOpened {
            api: "test-api",
            back_off_ms: 1_000,
            probe_failed: false,
        }
        .emit();
        assert_eq!(m.breaker_opened.with_label_values(&["test-api"]).get(), before + 1);
        assert_eq!(
            m.breaker_state.with_label_values(&["test-api"]).get(),
            BreakerState::Open.gauge()
        );
        BreakerStateSeen {
            api: "test-api",
            state: BreakerState::Closed,
        }
        .emit();
        assert_eq!(m.breaker_state.with_label_values(&["test-api"]).get(), 0);
    }
}
