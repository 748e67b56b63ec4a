//! The worker's HTTP side: `/metrics` (Prometheus text), `/healthz` (the
//! process answers) and `/readyz` (the broker session is up and Redis
//! answers), and the heartbeat it keeps in Redis for `signal9-producer
//! status`.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tracing::{info, warn};

use signal9_alpaca::Api;
use signal9_shared::gate::ApiGate;
use signal9_shared::workers::{self, Heartbeat};

/// What the health endpoints and the heartbeat read.
#[derive(Debug)]
pub(crate) struct Health {
    /// The worker's id in its heartbeat.
    pub(crate) id: String,
    /// True while a broker session consumes.
    pub(crate) broker_up: AtomicBool,
    /// Jobs finished since start.
    pub(crate) jobs_done: AtomicU64,
    /// The gate, for its breakers and its Redis pool.
    pub(crate) gate: Arc<ApiGate>,
    /// The failing dependency that holds the worker from consuming, if any.
    held_by: std::sync::Mutex<Option<&'static str>>,
    /// Wakes the heartbeat early (the broker session came or went).
    changed: tokio::sync::Notify,
    started_at: chrono::DateTime<chrono::Utc>,
}

impl Health {
    /// Health for a worker using `gate`.
    pub(crate) fn new(gate: Arc<ApiGate>) -> Self {
        Health {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            broker_up: AtomicBool::new(false),
            jobs_done: AtomicU64::new(0),
            held_by: std::sync::Mutex::new(None),
            gate,
            changed: tokio::sync::Notify::new(),
            started_at: chrono::Utc::now(),
        }
    }

    /// Records whether a broker session is up, and beats at once.
    pub(crate) fn set_broker_up(&self, up: bool) {
        if self.broker_up.swap(up, Ordering::Relaxed) != up {
            self.changed.notify_one();
        }
    }

    /// Records which failing dependency holds the worker (`None`: none),
    /// for `/readyz` and `signal9_dependency_holding`.
    pub(crate) fn set_held_by(&self, dependency: Option<&'static str>) {
        let mut held = self.held_by.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *held != dependency {
            match dependency {
                Some(d) => warn!(
                    dependency = d,
                    "A failing dependency holds the worker: consuming nothing until it answers"
                ),
                None => info!(
                    dependency = held.unwrap_or_default(),
                    "The dependency answers again: consuming"
                ),
            }
        }
        *held = dependency;
        let metrics = signal9_shared::telemetry::metrics::get();
        for name in ["store", "redis"] {
            metrics
                .dependency_holding
                .with_label_values(&[name])
                .set(i64::from(dependency == Some(name)));
        }
    }

    /// Why the worker is not ready, or `None` when it is.
    async fn not_ready(&self) -> Option<String> {
        let mut problems = Vec::new();
        if let Some(dependency) = *self.held_by.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            problems.push(format!("held by a failing dependency: {dependency}"));
        }
        if !self.broker_up.load(Ordering::Relaxed) {
            problems.push("no broker session".to_owned());
        }
        if let Err(error) = workers::ping(self.gate.budget(Api::Data).pool()).await {
            problems.push(error.to_string());
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    fn heartbeat(&self, concurrency: u16, metrics_addr: Option<String>) -> Heartbeat {
        let breakers: BTreeMap<String, String> = [Api::Trading, Api::Data]
            .into_iter()
            .map(|api| {
                (
                    api.as_str().to_owned(),
                    self.gate.breaker(api).state().as_str().to_owned(),
                )
            })
            .collect();
        Heartbeat {
            id: self.id.clone(),
            host: workers::host_name(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            concurrency,
            started_at: self.started_at,
            beat_at: chrono::Utc::now(),
            broker_connected: self.broker_up.load(Ordering::Relaxed),
            breakers,
            metrics_addr,
            jobs_done: self.jobs_done.load(Ordering::Relaxed),
        }
    }
}

/// Serves the endpoints on `addr` until `shutdown`. Returns the bound
/// address, or `None` (logged) when the address cannot be bound: the worker
/// works without them.
pub(crate) async fn serve(
    addr: std::net::SocketAddr,
    health: Arc<Health>,
    mut shutdown: signal9_shared::shutdown::Shutdown,
) -> Option<std::net::SocketAddr> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            warn!(%addr, %error, "Cannot serve /metrics, /healthz and /readyz; set SIGNAL9_METRICS_ADDR (port 0 picks a free one)");
            return None;
        }
    };
    let bound = listener.local_addr().ok()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    tokio::spawn(async move {
        let stopped = async move { shutdown.recv().await };
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
            warn!(%error, "The metrics server stopped");
        }
    });
    info!(addr = %bound, "Serving /metrics, /healthz and /readyz");
    Some(bound)
}

async fn metrics() -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        signal9_shared::telemetry::metrics::render(),
    )
}

async fn readyz(axum::extract::State(health): axum::extract::State<Arc<Health>>) -> impl IntoResponse {
    match health.not_ready().await {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

/// Renews the heartbeat every few seconds until `stop` fires, then
/// removes it.
pub(crate) async fn keep_heartbeat(
    health: Arc<Health>,
    namespace: String,
    concurrency: u16,
    metrics_addr: Option<String>,
    mut stop: signal9_shared::shutdown::Shutdown,
) {
    let pool = health.gate.budget(Api::Data).pool().clone();
    loop {
        let beat = health.heartbeat(concurrency, metrics_addr.clone());
        if let Err(error) = workers::beat(&pool, &namespace, &beat).await {
            warn!(%error, "Could not write the heartbeat");
        }
        tokio::select! {
            _ = tokio::time::sleep(workers::BEAT_EVERY) => {}
            _ = health.changed.notified() => {}
            () = stop.recv() => break,
        }
    }
    let _ = workers::forget(&pool, &namespace, &health.id).await;
}
