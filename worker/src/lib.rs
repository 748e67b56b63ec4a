//! signal9's worker: consumes jobs from RabbitMQ, runs their handlers, and
//! acks, retries or dead-letters each one.
//!
//! In-flight work is bounded twice: each queue's prefetch (`basic_qos`)
//! bounds the messages held, and a semaphore per priority lane bounds the
//! jobs (or coalesced batches) running at once. Interactive queues are read
//! first, then bulk, then backfill, each with its own lane, so a request
//! never waits behind a bulk backlog and the daily pipeline never waits
//! behind a backfill (the budget ranks their calls the same way). The worker reconnects with capped, jittered back-off when the
//! broker goes away, and on shutdown stops consuming, lets in-flight jobs
//! finish within a deadline and hands everything else back to the queue.

mod batch;
mod consume;
mod dependencies;
mod dispatch;
mod handlers;
mod health;
mod outcome;
mod pending;
mod relay;
mod settings;

pub use settings::WorkerSettings;

use anyhow::{Context as _, Result};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

use signal9_shared::backoff::Backoff;
use signal9_shared::broker::Topology;
use signal9_shared::services::Services;
use signal9_shared::shutdown::Shutdown;

use crate::consume::session;
use handlers::Context;

/// Everything a session needs, built once per process.
#[derive(Debug, Clone)]
struct Shared {
    settings: WorkerSettings,
    /// The EventBridge bus every relayed event also goes to, if set.
    event_sink: Option<Arc<dyn signal9_shared::outbox::EventSink>>,
    topology: Topology,
    ctx: Context,
    health: Arc<health::Health>,
    /// This process's breakers of its store and Redis.
    deps: Arc<dependencies::Dependencies>,
}

/// Runs the worker until `shutdown` fires. Returns after a graceful stop.
pub async fn run(settings: WorkerSettings, mut shutdown: Shutdown) -> Result<()> {
    let services = Services::open(&settings.store, &settings.budget, &settings.broker.namespace).await?;
    let client = services.client(&settings.alpaca).await?;
    let Services { store, gate } = services;
    if settings.check_credentials {
        // One GET /v2/account through the budget: a refused key or a
        // blocked account stops the worker here, before it takes any job.
        let check = signal9_alpaca::check_credentials(&client)
            .await
            .context("checking the Alpaca credentials (--check-credentials)")?;
        anyhow::ensure!(
            check.is_active(),
            "checking the Alpaca credentials (--check-credentials): the account is not usable: {check}"
        );
        tracing::info!(%check, "Alpaca credentials checked");
    }
    let health = Arc::new(health::Health::new(gate));
    let metrics_addr = match settings.metrics_addr {
        settings::MetricsAddr::At(addr) => health::serve(addr, Arc::clone(&health), shutdown.clone())
            .await
            .map(|a| a.to_string()),
        settings::MetricsAddr::Off => None,
    };
    let heartbeat = tokio::spawn(health::keep_heartbeat(
        Arc::clone(&health),
        settings.broker.namespace.clone(),
        settings.concurrency,
        metrics_addr,
        shutdown.clone(),
    ));
    let ctx = Context {
        client,
        store,
        packing: settings.packing.packing(),
        reconcile: settings.reconcile(),
        outbox_written: Arc::new(tokio::sync::Notify::new()),
    };
    let sync_watch = tokio::spawn(relay::watch_sync_runs(
        Arc::clone(&ctx.store),
        health.gate.budget(signal9_alpaca::Api::Data).pool().clone(),
        settings.broker.namespace.clone(),
        shutdown.clone(),
    ));
    let event_sink: Option<Arc<dyn signal9_shared::outbox::EventSink>> = match &settings.eventbridge_bus {
        Some(bus) if !bus.is_empty() => {
            let aws = signal9_shared::aws::AwsTarget::default().load().await;
            Some(Arc::new(signal9_shared::eventbridge::EventBridgeSink::new(
                &aws,
                bus.clone(),
            )))
        }
        _ => None,
    };
    let deps = Arc::new(dependencies::Dependencies::new());
    // Redis is pinged every second by this process: three failures in a row
    // open its breaker and stop the consuming.
    let redis_watch = tokio::spawn({
        let (deps, pool, mut shutdown) = (
            Arc::clone(&deps),
            health.gate.budget(signal9_alpaca::Api::Data).pool().clone(),
            shutdown.clone(),
        );
        async move {
            while shutdown.sleep(Duration::from_secs(1)).await {
                deps.record_redis(signal9_shared::workers::ping(&pool).await.is_ok());
            }
        }
    });
    let shared = Shared {
        event_sink,
        topology: settings.broker.topology(),
        settings,
        ctx,
        health,
        deps,
    };
    let result = sessions(&shared, &mut shutdown).await;
    let _ = heartbeat.await;
    sync_watch.abort();
    redis_watch.abort();
    result
}

/// Broker sessions, one after another, until a graceful stop.
async fn sessions(shared: &Shared, shutdown: &mut Shutdown) -> Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        // Nothing is consumed (nothing spent) until the store and Redis
        // can take the results.
        let health = Arc::clone(&shared.health);
        let pool = health.gate.budget(signal9_alpaca::Api::Data).pool().clone();
        let up = shared
            .deps
            .wait_until_up(&shared.ctx.store, &pool, shutdown, |held| {
                health.set_held_by(held.map(dependencies::Dependency::as_str));
            })
            .await;
        if !up {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        let ended = session(shared, shutdown).await;
        shared.health.set_broker_up(false);
        match ended {
            Ok(()) => return Ok(()),
            Err(error) => warn!(error = %format!("{error:#}"), "Broker session ended; reconnecting"),
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        if !shutdown.sleep(backoff.next_delay()).await {
            return Ok(());
        }
    }
}
