//! A lease in Redis: one holder at a time for a named job (the scheduler's
//! leadership, the outbox relay), renewed by its holder, taken over by
//! another once its holder stops renewing and it expires.

use deadpool_redis::redis::Script;

/// Takes the lease if free, renews it if `me` holds it; 1 when held.
const HOLD: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Gives the lease up if `me` holds it; 1 when it was released.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Takes or renews the lease `key` for `me` for `ttl_ms`. `Ok(true)` when
/// `me` holds it now; an error when Redis cannot be reached (hold nothing).
pub async fn hold(pool: &crate::redis_conn::RedisPool, key: &str, me: &str, ttl_ms: u64) -> Result<bool, String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let held: i64 = Script::new(HOLD)
        .key(key)
        .arg(me)
        .arg(ttl_ms)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(held == 1)
}

/// Gives the lease `key` up, if `me` holds it, so that another holder can
/// take it at once instead of after its expiry. `Ok(true)` when released.
pub async fn release(pool: &crate::redis_conn::RedisPool, key: &str, me: &str) -> Result<bool, String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let released: i64 = Script::new(RELEASE)
        .key(key)
        .arg(me)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(released == 1)
}
