//! Live workers: each worker keeps a heartbeat in Redis under
//! `{namespace}:workers:{id}` that expires unless renewed, so the keys that
//! exist are the workers alive now. `signal9-producer status` lists them.

use chrono::{DateTime, Utc};
use deadpool_redis::redis::AsyncCommands;
use deadpool_redis::Pool;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::limiter::LimiterError;

/// How often a worker renews its heartbeat.
pub const BEAT_EVERY: Duration = Duration::from_secs(5);
/// How long a heartbeat lives unless renewed: three missed beats.
pub const BEAT_TTL: Duration = Duration::from_secs(15);

/// What a worker says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// A random id, new at every start.
    pub id: String,
    /// The machine's host name.
    pub host: String,
    /// The process id on that host.
    pub pid: u32,
    /// The worker's version.
    pub version: String,
    /// Jobs (or batches) at once, per priority lane.
    pub concurrency: u16,
    /// When the worker started.
    pub started_at: DateTime<Utc>,
    /// When this beat was written.
    pub beat_at: DateTime<Utc>,
    /// True while the worker holds a broker session.
    pub broker_connected: bool,
    /// Each API's breaker: closed, open or half_open.
    pub breakers: BTreeMap<String, String>,
    /// Where its metrics are served, if anywhere.
    pub metrics_addr: Option<String>,
    /// Jobs finished since start.
    pub jobs_done: u64,
}

fn key(namespace: &str, id: &str) -> String {
    format!("{namespace}:workers:{id}")
}

fn redis_error(error: impl std::fmt::Display) -> LimiterError {
    LimiterError::from(format!("Redis: {error}"))
}

/// Writes (or renews) a heartbeat.
pub async fn beat(pool: &Pool, namespace: &str, heartbeat: &Heartbeat) -> Result<(), LimiterError> {
    let body = serde_json::to_string(heartbeat).map_err(redis_error)?;
    let mut conn = pool.get().await.map_err(redis_error)?;
    let _: () = conn
        .set_ex(key(namespace, &heartbeat.id), body, BEAT_TTL.as_secs())
        .await
        .map_err(redis_error)?;
    Ok(())
}

/// Removes a heartbeat (a worker stopping cleanly).
pub async fn forget(pool: &Pool, namespace: &str, id: &str) -> Result<(), LimiterError> {
    let mut conn = pool.get().await.map_err(redis_error)?;
    let _: () = conn.del(key(namespace, id)).await.map_err(redis_error)?;
    Ok(())
}

/// Every live worker's last heartbeat, by host then id. A heartbeat that
/// does not parse is skipped.
pub async fn live(pool: &Pool, namespace: &str) -> Result<Vec<Heartbeat>, LimiterError> {
    let mut conn = pool.get().await.map_err(redis_error)?;
    let pattern = format!("{namespace}:workers:*");
    let mut keys: Vec<String> = Vec::new();
    {
        let mut iter: deadpool_redis::redis::AsyncIter<'_, String> =
            conn.scan_match(&pattern).await.map_err(redis_error)?;
        while let Some(key) = futures::StreamExt::next(&mut iter).await {
            keys.push(key.map_err(redis_error)?);
        }
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let bodies: Vec<Option<String>> = conn.mget(&keys).await.map_err(redis_error)?;
    let mut beats: Vec<Heartbeat> = bodies
        .into_iter()
        .flatten()
        .filter_map(|b| serde_json::from_str(&b).ok())
        .collect();
    beats.sort_by(|a, b| (a.host.as_str(), a.id.as_str()).cmp(&(b.host.as_str(), b.id.as_str())));
    Ok(beats)
}

/// This machine's host name.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Asks Redis for a PONG within a second.
pub async fn ping(pool: &Pool) -> Result<(), LimiterError> {
    let call = async {
        let mut conn = pool.get().await.map_err(redis_error)?;
        let pong: String = deadpool_redis::redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(redis_error(format!("unexpected answer {pong:?}")))
        }
    };
    tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .map_err(|_| redis_error("no answer within 1 s"))?
}
