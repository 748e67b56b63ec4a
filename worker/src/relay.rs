//! The worker's background duties beside its jobs: relaying the store's
//! outbox to the events exchange, and reporting the sync runs' state as
//! metrics.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::warn;

use signal9_shared::broker::{Publisher, Topology};
use signal9_shared::outbox;
use signal9_shared::shutdown::Shutdown;
use signal9_shared::store::{RunStatus, Store};

/// How often the relay looks at the outbox when nothing wakes it.
const RELAY_TICK: Duration = Duration::from_secs(1);
/// How long the relay lease lasts without renewal.
const RELAY_LEASE_MS: u64 = 10_000;
/// How often the sync gauges are read from the store.
const SYNC_WATCH_TICK: Duration = Duration::from_secs(15);

/// What the relay needs.
#[derive(Debug)]
pub(crate) struct RelayContext {
    /// Where the outbox is.
    pub(crate) store: Arc<dyn Store>,
    /// A confirm-mode channel of its own.
    pub(crate) publisher: Publisher,
    /// The namespace's names.
    pub(crate) topology: Topology,
    /// Redis, home of the relay lease (one relay at a time in the pool, so
    /// two workers do not send the same events at once).
    pub(crate) redis_url: String,
    /// Woken after writes that may have added events.
    pub(crate) written: Arc<Notify>,
    /// Where every event also goes (EventBridge), if anywhere.
    pub(crate) sink: Option<Arc<dyn outbox::EventSink>>,
}

/// Relays the outbox until shutdown, then makes one last pass.
pub(crate) async fn run(ctx: RelayContext, mut shutdown: Shutdown) {
    let pool = match signal9_shared::limiter::redis_pool(&ctx.redis_url) {
        Ok(pool) => pool,
        Err(error) => {
            warn!(%error, "Outbox relay disabled: no Redis pool");
            return;
        }
    };
    let lease_key = signal9_shared::keys::RedisKeys::new(ctx.topology.namespace()).outbox_relay();
    let me = uuid::Uuid::new_v4().to_string();
    loop {
        let stopping = shutdown.is_shutdown();
        match signal9_shared::lease::hold(&pool, &lease_key, &me, RELAY_LEASE_MS).await {
            Ok(true) => {
                // Renewed between passes, so a backlog longer than one lease
                // is not sent by a second relay at the same time.
                let still_mine = || async {
                    matches!(
                        signal9_shared::lease::hold(&pool, &lease_key, &me, RELAY_LEASE_MS).await,
                        Ok(true)
                    )
                };
                if let Err(error) = outbox::drain(
                    ctx.store.as_ref(),
                    &ctx.publisher,
                    &ctx.topology,
                    ctx.sink.as_deref(),
                    still_mine,
                )
                .await
                {
                    warn!(error = %error, "Outbox relay pass failed; the events stay in the outbox");
                }
            }
            Ok(false) => {}
            Err(error) => warn!(%error, "Outbox relay: Redis unreachable; the events stay in the outbox"),
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = ctx.written.notified() => {}
            _ = tokio::time::sleep(RELAY_TICK) => {}
            () = shutdown.recv() => {}
        }
    }
}

/// Keeps `signal9_sync_last_success_timestamp_seconds` and
/// `signal9_sync_last_run_suspect` current from the store, and
/// `signal9_gaps_missing_series_days` from the scheduler's last gap check
/// in Redis, so every worker reports them and the alerts see them whichever
/// process wrote them.
pub(crate) async fn watch_sync_runs(
    store: Arc<dyn Store>,
    redis: signal9_shared::redis_conn::RedisPool,
    namespace: String,
    mut shutdown: Shutdown,
) {
    let metrics = signal9_shared::telemetry::metrics::get();
    let gaps_key = signal9_shared::keys::RedisKeys::new(&namespace).gaps_missing();
    loop {
        match read_gaps(&redis, &gaps_key).await {
            Ok(missing) => metrics.gaps_missing.set(missing.unwrap_or(-1)),
            Err(error) => warn!(%error, "Could not read the last gap check"),
        }
        match store.last_completed_run().await {
            Ok(run) => metrics
                .sync_last_success
                .set(run.and_then(|r| r.finished_at).map_or(0, |t| t.timestamp())),
            Err(error) => warn!(%error, "Could not read the last completed sync run"),
        }
        match store.latest_run().await {
            Ok(run) => metrics
                .sync_last_run_suspect
                .set(i64::from(run.is_some_and(|r| r.status == RunStatus::Suspect))),
            Err(error) => warn!(%error, "Could not read the latest sync run"),
        }
        if !shutdown.sleep(SYNC_WATCH_TICK).await {
            return;
        }
    }
}

/// The scheduler's last gap check: missing series-days, `None` if none ran.
async fn read_gaps(redis: &signal9_shared::redis_conn::RedisPool, key: &str) -> Result<Option<i64>, String> {
    let mut conn = redis.get().await.map_err(|e| e.to_string())?;
    deadpool_redis::redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())
}
