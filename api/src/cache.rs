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
    bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    tick: u64,
    bytes: usize,
}

/// Ranges by key (`series|start|end`), at most `capacity` of them and
/// `max_bytes` of bars and keys together.
#[derive(Debug)]
pub(crate) struct Cache {
    capacity: usize,
    max_bytes: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

/// What an entry costs: its bars, its key and the map's own share.
fn cost(key: &str, bars: &[Bar]) -> usize {
    std::mem::size_of_val(bars) + key.len() + 96
}

impl Cache {
    /// A cache of `capacity` ranges (0: off) and `max_bytes`, each kept at most `ttl`.
    pub(crate) fn new(capacity: usize, max_bytes: usize, ttl: Duration) -> Self {
        Cache {
            capacity,
            max_bytes,
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The range under `key`, if cached and not expired.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Vec<Bar>>> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        match inner.entries.get_mut(key) {
            Some(entry) if entry.stored.elapsed() < self.ttl => {
                entry.used = tick;
                return Some(entry.bars.clone());
            }
            Some(_) => {}
            None => return None,
        }
        if let Some(old) = inner.entries.remove(key) {
            inner.bytes -= old.bytes;
        }
        None
    }

    /// True when `key` is cached and not expired.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.capacity > 0
            && self
                .lock()
                .entries
                .get(key)
                .is_some_and(|e| e.stored.elapsed() < self.ttl)
    }

    /// The bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Drops every range of `series` (a key's part before its range).
    pub(crate) fn evict_series(&self, series: &str) -> usize {
        let prefix = format!("{series}|");
        let mut inner = self.lock();
        let before = inner.entries.len();
        let mut freed = 0;
        inner.entries.retain(|key, entry| {
            // The series key itself holds `|`: match the whole series, then its range.
            let keep = !(key.starts_with(&prefix) && key[prefix.len()..].matches('|').count() == 1);
            if !keep {
                freed += entry.bytes;
            }
            keep
        });
        inner.bytes -= freed;
        before - inner.entries.len()
    }

    /// Drops every range.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.bytes = 0;
    }

    /// Keeps `bars` under `key`, evicting the least recently used ranges
    /// until both bounds hold; a range larger than the whole cache is not kept.
    pub(crate) fn put(&self, key: String, bars: Arc<Vec<Bar>>) {
        let bytes = cost(&key, &bars);
        if self.capacity == 0 || bytes > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= old.bytes;
        }
        while !inner.entries.is_empty()
            && (inner.entries.len() >= self.capacity || inner.bytes + bytes > self.max_bytes)
        {
            let Some(oldest) = inner.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes -= old.bytes;
            }
        }
        inner.bytes += bytes;
        inner.entries.insert(
            key,
            Entry {
                bars,
                stored: Instant::now(),
                used: tick,
                bytes,
            },
        );
    }
}

/// Evicts the series of every `bars.invalidated` event on the namespace's
/// events exchange, for as long as the process runs: an exclusive queue
/// bound to `bars.invalidated`, reconnected after a lost connection, and
/// the whole cache dropped at each (re)connection, since events may have
/// passed unheard meanwhile.
pub(crate) async fn listen(cache: std::sync::Arc<Cache>, broker: signal9_shared::settings::BrokerSettings) {
    use futures::StreamExt;
    let topology = broker.topology();
    let mut backoff = Duration::from_secs(1);
    loop {
        let attempt = async {
            let connection = signal9_shared::broker::connect(&broker.amqp_url, "signal9-api-invalidations").await?;
            let channel = connection.create_channel().await?;
            topology.declare_on(&connection).await?;
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
        let cache = Cache::new(2, 1 << 20, Duration::from_secs(60));
        cache.put("a".into(), Arc::new(Vec::new()));
        cache.put("b".into(), Arc::new(Vec::new()));
        assert!(cache.get("a").is_some());
        cache.put("c".into(), Arc::new(Vec::new()));
        assert!(cache.get("b").is_none(), "b was the least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        let expiring = Cache::new(2, 1 << 20, Duration::ZERO);
        expiring.put("a".into(), Arc::new(Vec::new()));
        assert!(expiring.get("a").is_none());
        let series = Cache::new(8, 1 << 20, Duration::from_secs(60));
        series.put("AAPL|1Day|split|iex|1|2".into(), Arc::new(Vec::new()));
        series.put("AAPL|1Day|split|iex|3|4".into(), Arc::new(Vec::new()));
        series.put("AAPL|1Day|raw|iex|1|2".into(), Arc::new(Vec::new()));
        assert_eq!(series.evict_series("AAPL|1Day|split|iex"), 2);
        assert!(series.contains("AAPL|1Day|raw|iex|1|2"), "another series stays");
        let off = Cache::new(0, 1 << 20, Duration::from_secs(60));
        off.put("a".into(), Arc::new(Vec::new()));
        assert!(off.get("a").is_none());
    }

    #[test]
    fn the_cache_holds_no_more_bytes_than_it_is_given() {
        let bar = Bar {
            time: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 1.0,
            trade_count: 1,
            vwap: 1.0,
        };
        let range = Arc::new(vec![bar; 1000]);
        let one = cost("k0", &range);
        let cache = Cache::new(1000, one * 3, Duration::from_secs(60));
        for i in 0..10 {
            cache.put(format!("k{i}"), range.clone());
            assert!(cache.bytes() <= one * 3, "{} bytes after {i}", cache.bytes());
        }
        assert!(cache.get("k9").is_some() && cache.get("k0").is_none());
        let huge = Arc::new(vec![bar; 100_000]);
        cache.put("huge".into(), huge);
        assert!(cache.get("huge").is_none(), "a range larger than the cache is not kept");
        assert_eq!(cache.evict_series("k9|x"), 0);
        cache.clear();
        assert_eq!(cache.bytes(), 0);
    }
}
