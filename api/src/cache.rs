//! A small in-process cache of decoded bar ranges that the store covers
//! (so they change only by a corporate action's invalidation): the most
//! recently used `capacity` ranges, each for at most `ttl`.

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
        let off = Cache::new(0, Duration::from_secs(60));
        off.put("a".into(), Arc::new(Vec::new()));
        assert!(off.get("a").is_none());
    }
}
