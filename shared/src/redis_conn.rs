//! One Redis connection pool for the budgets, leases and heartbeats, on a
//! single server or on a Redis Cluster (ElastiCache in cluster mode).
//!
//! `SIGNAL9_REDIS_URL` picks the kind: `redis://host:port` (or `rediss://`)
//! is one server; `redis-cluster://host:port[,host:port…]` (or
//! `rediss-cluster://`) is a cluster reached through any of those nodes,
//! which the client follows through `MOVED` and `ASK` answers. Every
//! multi-key script keeps its keys in one hash slot (see [`crate::keys`]),
//! which a cluster requires.

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::{Cmd, Pipeline, RedisFuture, Value};
use deadpool_redis::{Runtime, Timeouts};
use std::time::Duration;

/// How long a pool waits to create, hand out or check a connection.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A pool of connections to one server or to a cluster. Cheap to clone.
#[derive(Clone)]
pub enum RedisPool {
    /// One server.
    Single(deadpool_redis::Pool),
    /// A Redis Cluster.
    Cluster(deadpool_redis::cluster::Pool),
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisPool::Single(_) => "RedisPool::Single",
            RedisPool::Cluster(_) => "RedisPool::Cluster",
        })
    }
}

/// A connection from a [`RedisPool`]; every command and script runs on it.
pub enum RedisConn {
    /// To one server.
    Single(deadpool_redis::Connection),
    /// To a cluster (routes each command by its keys' slot).
    Cluster(deadpool_redis::cluster::Connection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Why a pool could not be built or a connection had.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RedisError(pub String);

impl RedisPool {
    /// A pool for `url` (see the module's documentation for the forms).
    /// Connections are made on first use; waits are bounded by
    /// [`REDIS_TIMEOUT`], so an unreachable Redis is an error within
    /// seconds, not a hang.
    pub fn new(url: &str) -> Result<RedisPool, RedisError> {
        let timeouts = Timeouts {
            wait: Some(REDIS_TIMEOUT),
            create: Some(REDIS_TIMEOUT),
            recycle: Some(REDIS_TIMEOUT),
        };
        let bad = |e: &dyn std::fmt::Display| RedisError(format!("bad Redis settings (SIGNAL9_REDIS_URL): {e}"));
        if let Some((scheme, nodes)) = cluster_nodes(url) {
            let urls: Vec<String> = nodes.iter().map(|n| format!("{scheme}://{n}")).collect();
            let mut config = deadpool_redis::cluster::Config::from_urls(urls);
            let mut pool = deadpool_redis::PoolConfig::new(16);
            pool.timeouts = timeouts;
            config.pool = Some(pool);
            return config
                .create_pool(Some(Runtime::Tokio1))
                .map(RedisPool::Cluster)
                .map_err(|e| bad(&e));
        }
        let mut config = deadpool_redis::Config::from_url(url);
        let mut pool = deadpool_redis::PoolConfig::new(16);
        pool.timeouts = timeouts;
        config.pool = Some(pool);
        config
            .create_pool(Some(Runtime::Tokio1))
            .map(RedisPool::Single)
            .map_err(|e| bad(&e))
    }

    /// A connection from the pool.
    pub async fn get(&self) -> Result<RedisConn, RedisError> {
        match self {
            RedisPool::Single(pool) => pool
                .get()
                .await
                .map(RedisConn::Single)
                .map_err(|e| RedisError(e.to_string())),
            RedisPool::Cluster(pool) => pool
                .get()
                .await
                .map(RedisConn::Cluster)
                .map_err(|e| RedisError(e.to_string())),
        }
    }
}

/// For `redis-cluster://a:1,b:2` (or `rediss-cluster://`): the plain scheme
/// and each node, credentials kept on every node.
fn cluster_nodes(url: &str) -> Option<(&'static str, Vec<String>)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis-cluster://") {
        ("redis", rest)
    } else {
        ("rediss", url.strip_prefix("rediss-cluster://")?)
    };
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{auth}{h}"))
        .collect();
    Some((scheme, nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_every_node_with_its_credentials() {
        assert_eq!(
            cluster_nodes("redis-cluster://u:p@a:7001,b:7002"),
            Some(("redis", vec!["u:p@a:7001".to_owned(), "u:p@b:7002".to_owned()]))
        );
        assert_eq!(
            cluster_nodes("rediss-cluster://c:6379"),
            Some(("rediss", vec!["c:6379".to_owned()]))
        );
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379"), None);
    }

    #[test]
    fn a_debug_print_shows_no_url() {
        let pool = RedisPool::new("redis://:hunter2@127.0.0.1:6379").unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{pool:?}").contains("hunter2"));
    }
}
