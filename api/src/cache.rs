//! A small in-process cache of decoded bar ranges that the store covers
//! (so they change only by a corporate action's invalidation): the most
//! recently used `capacity` ranges, each for at most `ttl`. A
//! `bars.invalidated` event evicts its series' ranges ([`listen`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal9_alpaca::Bar;

#[derive(Debug)]
struct Entry {
    bars: Arc<Vec<Bar>>,
    stored: Instant,
    used: u64,
}

/// Ranges by key (`series|start|end`).
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<(HashMap<String, Entry>, u64)>,
}

impl Cache {
    /// A cache of `capacity` ranges (0: off), each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Cache {
            capacity,
            ttl,
            inner: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// The range under `key`, if cached and not expired.
    pub fn get(&self, key: &str) -> Option<Arc<Vec<Bar>>> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.1 += 1;
        let tick = inner.1;
        let fresh = match inner.0.get_mut(key) {
            Some(entry) if entry.stored.elapsed() < self.ttl => {
                entry.used = tick;
                return Some(entry.bars.clone());
            }
            Some(_) => false,
            None => return None,
        };
        if !fresh {
            inner.0.remove(key);
        }
        None
    }

    /// True when `key` is cached and not expired.
    pub fn contains(&self, key: &str) -> bool {
        self.capacity > 0
            && self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0
                .get(key)
                .is_some_and(|e| e.stored.elapsed() < self.ttl)
    }

    /// Drops every range of `series` (a key's part before its range).
    pub fn evict_series(&self, series: &str) -> usize {
        let prefix = format!("{series}|");
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = inner.0.len();
        inner.0.retain(|key, _| {
            // The series key itself holds `|`: match the whole series, then its range.
            !(key.starts_with(&prefix) && key[prefix.len()..].matches('|').count() == 1)
        });
        before - inner.0.len()
    }

    /// Drops every range.
    pub fn clear(&self) {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clear();
    }

    /// Keeps `bars` under `key`, evicting the least recently used range when full.
    pub fn put(&self, key: String, bars: Arc<Vec<Bar>>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.1 += 1;
        let tick = inner.1;
        if inner.0.len() >= self.capacity && !inner.0.contains_key(&key) {
            if let Some(oldest) = inner.0.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) {
                inner.0.remove(&oldest);
            }
        }
        inner.0.insert(
            key,
            Entry {
                bars,
                stored: Instant::now(),
                used: tick,
            },
        );
    }
}

/// Evicts the series of every `bars.invalidated` event on the namespace's
/// events exchange, for as long as the process runs: an exclusive queue
/// bound to `bars.invalidated`, reconnected after a lost connection, and
/// the whole cache dropped at each (re)connection, since events may have
/// passed unheard meanwhile.
pub async fn listen(cache: std::sync::Arc<Cache>, broker: signal9_shared::config::BrokerSettings) {
    use futures::StreamExt;
    let topology = broker.topology();
    let mut backoff = Duration::from_secs(1);
    loop {
        let attempt = async {
            let connection = signal9_shared::broker::connect(&broker.amqp_url, "signal9-api-invalidations").await?;
            let channel = connection.create_channel().await?;
            topology.declare(&channel).await?;
            let (_, consumer) = signal9_shared::broker::private_queue(
                &channel,
                Some((
                    topology.events_exchange().as_str(),
                    signal9_shared::events::EventType::BarsInvalidated.as_str(),
                )),
            )
            .await?;
            Ok::<_, anyhow::Error>((connection, channel, consumer))
        };
        match attempt.await {
            Ok((_connection, _channel, mut consumer)) => {
                backoff = Duration::from_secs(1);
                cache.clear();
                while let Some(Ok(delivery)) = consumer.next().await {
                    let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
                    if let Some(series) = event["data"]["series"].as_str() {
                        let dropped = cache.evict_series(series);
                        tracing::info!(series, dropped, "Cached ranges dropped: bars.invalidated");
                    }
                }
                tracing::warn!("The invalidation listener lost its connection; reconnecting");
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "The invalidation listener cannot reach RabbitMQ; retrying");
            }
        }
        // Whatever was missed while away must not be served.
        cache.clear();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_range_goes_first_and_none_outlives_its_ttl() {
        let cache = Cache::new(2, Duration::from_secs(60));
        cache.put("a".into(), Arc::new(Vec::new()));
        cache.put("b".into(), Arc::new(Vec::new()));
        assert!(cache.get("a").is_some());
        cache.put("c".into(), Arc::new(Vec::new()));
        assert!(cache.get("b").is_none(), "b was the least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        let expiring = Cache::new(2, Duration::ZERO);
        expiring.put("a".into(), Arc::new(Vec::new()));
        assert!(expiring.get("a").is_none());
        let series = Cache::new(8, Duration::from_secs(60));
        series.put("AAPL|1Day|split|iex|1|2".into(), Arc::new(Vec::new()));
        series.put("AAPL|1Day|split|iex|3|4".into(), Arc::new(Vec::new()));
        series.put("AAPL|1Day|raw|iex|1|2".into(), Arc::new(Vec::new()));
        assert_eq!(series.evict_series("AAPL|1Day|split|iex"), 2);
        assert!(series.contains("AAPL|1Day|raw|iex|1|2"), "another series stays");
        let off = Cache::new(0, Duration::from_secs(60));
        off.put("a".into(), Arc::new(Vec::new()));
        assert!(off.get("a").is_none());
    }
}
