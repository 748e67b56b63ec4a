//! The process's Prometheus metrics. Every part records into one registry
//! ([`get`]); the worker serves it as text on `/metrics` ([`render`]).

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::OnceLock;

/// Every metric signal9 records.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `signal9_jobs_total{kind, outcome}`: succeeded, retried, deferred, dead_lettered.
    pub jobs: IntCounterVec,
    /// `signal9_job_duration_seconds{kind}`: from delivery to ack.
    pub job_duration: HistogramVec,
    /// `signal9_api_calls_total{api, endpoint, status}`: status is the HTTP code or `none`.
    pub api_calls: IntCounterVec,
    /// `signal9_api_latency_seconds{api, endpoint}`.
    pub api_latency: HistogramVec,
    /// `signal9_limiter_wait_seconds{api}`: time from asking for a token to having one.
    pub limiter_wait: HistogramVec,
    /// `signal9_limiter_tokens_in_window{api}`: tokens in the shared window at the last grant.
    pub tokens_in_window: IntGaugeVec,
    /// `signal9_breaker_state{api}`: 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGaugeVec,
    /// `signal9_breaker_opened_total{api}`.
    pub breaker_opened: IntCounterVec,
    /// `signal9_dependency_holding{dependency}`: 1 while that failing
    /// dependency (store, redis) holds this worker from consuming.
    pub dependency_holding: IntGaugeVec,
    /// `signal9_retries_total{class}`: failures sent to a delay tier.
    pub retries: IntCounterVec,
    /// `signal9_dead_letters_total{class}`.
    pub dead_letters: IntCounterVec,
    /// `signal9_sync_pages_total{outcome}`: `listed` for each page whose
    /// listing succeeded (failures count in `signal9_jobs_total{kind="sync-page"}`).
    pub sync_pages: IntCounterVec,
    /// `signal9_sync_runs_total{status}`: completed, suspect.
    pub sync_runs: IntCounterVec,
    /// `signal9_sync_assets_total{change}`: new, updated, status_changed, delisted, rejected.
    pub sync_assets: IntCounterVec,
    /// `signal9_sync_last_success_timestamp_seconds`: when the most recent
    /// completed sync run closed (Unix seconds; 0 when none has), read from
    /// the store, so every worker reports it.
    pub sync_last_success: IntGauge,
    /// `signal9_sync_last_run_suspect`: 1 when the most recent run ended suspect.
    pub sync_last_run_suspect: IntGauge,
    /// `signal9_gaps_missing_series_days`: settled series-days the
    /// scheduler's last gap check found uncovered (-1: no check yet).
    pub gaps_missing: IntGauge,
    /// `signal9_outbox_pending`: events left in the outbox after the last relay pass.
    pub outbox_pending: IntGauge,
    /// `signal9_outbox_oldest_age_seconds`: age of the oldest event the last relay pass found.
    pub outbox_oldest_age: IntGauge,
    /// `signal9_outbox_published_total`: events published from the outbox.
    pub outbox_published: IntCounter,
    /// `signal9_secret_refresh_failures_total{reason}`: reads of the Alpaca
    /// key's secret that failed (`timeout`, `unavailable`, `missing`,
    /// `malformed`); the cached pair kept serving where one was held.
    pub secret_refresh_failures: IntCounterVec,
    /// `signal9_http_requests_total{route, status}`: requests `signal9-api` answered.
    pub http_requests: IntCounterVec,
    /// `signal9_http_request_seconds{route}`: their time to answer.
    pub http_latency: HistogramVec,
    /// `signal9_read_bars_total{source}`: bar requests `signal9-api` answered,
    /// by where the bars came from: store, fetched, mixed.
    pub read_bars: IntCounterVec,
    /// `signal9_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
}

fn plain_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

impl Metrics {
    // Names and labels are constants; a failure here is a programming error
    // caught by the first test that touches metrics.
    #[allow(clippy::unwrap_used)]
    fn new() -> Self {
        let r = Registry::new();
        // 1 ms .. ~65 s
        let seconds = exponential_buckets(0.001, 2.0, 17).unwrap();
        let metrics = Metrics {
            jobs: counter(
                &r,
                "signal9_jobs_total",
                "Jobs finished, by kind and outcome",
                &["kind", "outcome"],
            ),
            job_duration: histogram(
                &r,
                "signal9_job_duration_seconds",
                "Time from a job's delivery to its ack",
                &["kind"],
                seconds.clone(),
            ),
            api_calls: counter(
                &r,
                "signal9_api_calls_total",
                "Alpaca calls made, by API, endpoint and HTTP status (none: no answer)",
                &["api", "endpoint", "status"],
            ),
            api_latency: histogram(
                &r,
                "signal9_api_latency_seconds",
                "Alpaca call latency",
                &["api", "endpoint"],
                seconds.clone(),
            ),
            limiter_wait: histogram(
                &r,
                "signal9_limiter_wait_seconds",
                "Time waited for a budget token (and an open breaker)",
                &["api"],
                seconds,
            ),
            tokens_in_window: gauge(
                &r,
                "signal9_limiter_tokens_in_window",
                "Tokens in the shared budget window at this process's last grant",
                &["api"],
            ),
            breaker_state: gauge(
                &r,
                "signal9_breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open",
                &["api"],
            ),
            breaker_opened: counter(&r, "signal9_breaker_opened_total", "Times a breaker opened", &["api"]),
            dependency_holding: gauge(
                &r,
                "signal9_dependency_holding",
                "1 while a failing dependency (store, redis) holds this worker from consuming",
                &["dependency"],
            ),
            retries: counter(
                &r,
                "signal9_retries_total",
                "Failed jobs sent to a delay tier, by error class",
                &["class"],
            ),
            dead_letters: counter(
                &r,
                "signal9_dead_letters_total",
                "Jobs dead-lettered, by error class",
                &["class"],
            ),
            sync_pages: counter(&r, "signal9_sync_pages_total", "Sync pages, by outcome", &["outcome"]),
            sync_runs: counter(
                &r,
                "signal9_sync_runs_total",
                "Sync runs closed, by status",
                &["status"],
            ),
            sync_assets: counter(
                &r,
                "signal9_sync_assets_total",
                "Assets seen by sync pages, by change",
                &["change"],
            ),
            sync_last_success: plain_gauge(
                &r,
                "signal9_sync_last_success_timestamp_seconds",
                "When the most recent completed sync run closed, in Unix seconds (0: never)",
            ),
            sync_last_run_suspect: plain_gauge(
                &r,
                "signal9_sync_last_run_suspect",
                "1 when the most recent sync run ended suspect, else 0",
            ),
            gaps_missing: plain_gauge(
                &r,
                "signal9_gaps_missing_series_days",
                "Settled series-days the scheduler's last gap check found uncovered (-1: no check recorded)",
            ),
            outbox_pending: plain_gauge(
                &r,
                "signal9_outbox_pending",
                "Events left in the outbox after the last relay pass",
            ),
            outbox_oldest_age: plain_gauge(
                &r,
                "signal9_outbox_oldest_age_seconds",
                "Age of the oldest event in the outbox at the last relay pass (0: empty)",
            ),
            outbox_published: plain_counter(&r, "signal9_outbox_published_total", "Events published from the outbox"),
            secret_refresh_failures: counter(
                &r,
                "signal9_secret_refresh_failures_total",
                "Failed reads of the Alpaca key's secret from Secrets Manager, by reason",
                &["reason"],
            ),
            http_requests: counter(
                &r,
                "signal9_http_requests_total",
                "Requests signal9-api answered, by route and HTTP status",
                &["route", "status"],
            ),
            http_latency: histogram(
                &r,
                "signal9_http_request_seconds",
                "Time signal9-api took to answer a request, by route",
                &["route"],
                exponential_buckets(0.0005, 2.0, 16).unwrap_or_default(),
            ),
            read_bars: counter(
                &r,
                "signal9_read_bars_total",
                "Bar requests signal9-api answered, by source: store, fetched, mixed",
                &["source"],
            ),
            build_info: gauge(&r, "signal9_build_info", "Always 1; the version label", &["version"]),
            registry: r,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The registry in Prometheus's text format.
pub fn render() -> String {
    let mut out = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&get().registry.gather(), &mut out) {
        return format!("# encoding failed: {error}\n");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_figures_appear_in_the_text() {
        get().jobs.with_label_values(&["fetch-bars", "succeeded"]).inc();
        get().breaker_state.with_label_values(&["data"]).set(2);
        let text = render();
        assert!(
            text.contains("signal9_jobs_total{kind=\"fetch-bars\",outcome=\"succeeded\"}"),
            "{text}"
        );
        assert!(text.contains("signal9_breaker_state{api=\"data\"} 2"), "{text}");
        assert!(text.contains("signal9_build_info{version="), "{text}");
    }
}
