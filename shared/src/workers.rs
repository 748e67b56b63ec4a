//! Live workers: each worker keeps a heartbeat in one Redis hash,
//! `{namespace}:workers` (field: the worker's id), renewed every few
//! seconds. A heartbeat older than [`BEAT_TTL`] is a worker gone: readers
//! skip it and remove it. One key, so a Redis Cluster needs no `SCAN` of
//! every node. `signal9-producer status` lists them.

use chrono::{DateTime, Utc};
use deadpool_redis::redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::keys::RedisKeys;
use crate::limiter::LimiterError;
use crate::redis_conn::RedisPool;

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

fn redis_error(error: impl std::fmt::Display) -> LimiterError {
    LimiterError::from(format!("Redis: {error}"))
}

/// Writes (or renews) a heartbeat.
pub async fn beat(pool: &RedisPool, namespace: &str, heartbeat: &Heartbeat) -> Result<(), LimiterError> {
    let body = serde_json::to_string(heartbeat).map_err(redis_error)?;
    let key = RedisKeys::new(namespace).workers();
    let mut conn = pool.get().await.map_err(redis_error)?;
    let _: () = conn.hset(&key, &heartbeat.id, body).await.map_err(redis_error)?;
    // The hash itself goes once no worker has beaten for a while.
    let _: () = conn
        .expire(&key, i64::try_from(BEAT_TTL.as_secs() * 4).unwrap_or(60))
        .await
        .map_err(redis_error)?;
    Ok(())
}

/// Removes a heartbeat (a worker stopping cleanly).
pub async fn forget(pool: &RedisPool, namespace: &str, id: &str) -> Result<(), LimiterError> {
    let mut conn = pool.get().await.map_err(redis_error)?;
    let _: () = conn
        .hdel(RedisKeys::new(namespace).workers(), id)
        .await
        .map_err(redis_error)?;
    Ok(())
}

/// Every live worker's last heartbeat, by host then id. A heartbeat older
/// than [`BEAT_TTL`] is removed; one that does not parse is skipped.
pub async fn live(pool: &RedisPool, namespace: &str) -> Result<Vec<Heartbeat>, LimiterError> {
    let key = RedisKeys::new(namespace).workers();
    let mut conn = pool.get().await.map_err(redis_error)?;
    let all: BTreeMap<String, String> = conn.hgetall(&key).await.map_err(redis_error)?;
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(BEAT_TTL).unwrap_or(chrono::Duration::seconds(15));
    let mut beats = Vec::new();
    let mut gone = Vec::new();
    for (id, body) in all {
        match serde_json::from_str::<Heartbeat>(&body) {
            Ok(beat) if now - beat.beat_at <= ttl => beats.push(beat),
            Ok(_) => gone.push(id),
            Err(_) => {}
        }
    }
    if !gone.is_empty() {
        let _: () = conn.hdel(&key, gone).await.map_err(redis_error)?;
    }
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
pub async fn ping(pool: &RedisPool) -> Result<(), LimiterError> {
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
