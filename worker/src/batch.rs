//! Coalescing: fetch-bars jobs that could share one multi-symbol request
//! (same timeframe, range, adjustment, feed, market and priority) wait a
//! moment for each other, then go as one batch. Each job in a batch still
//! succeeds, retries or dead-letters on its own.

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

use signal9_alpaca::BarRange;
use signal9_shared::job::{FetchBars, Priority};
use signal9_shared::plan::Packing;

/// What compatible jobs share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    range: BarRange,
    crypto: bool,
    /// Jobs of different priorities never share a batch.
    pub(crate) priority: Priority,
    /// The most bars one symbol's series can hold in the range (derived
    /// from the fields above, computed once).
    bars: u64,
}

impl BatchKey {
    /// The key of a fetch-bars job.
    pub(crate) fn of(payload: &FetchBars, priority: Priority) -> Self {
        let range = &payload.range;
        BatchKey {
            bars: signal9_shared::plan::estimate_bars(
                range.timeframe,
                range.start,
                range.end,
                payload.symbol.is_crypto_pair(),
            ),
            range: range.clone(),
            crypto: payload.symbol.is_crypto_pair(),
            priority,
        }
    }
}

#[derive(Debug)]
struct Group<T> {
    opened: Instant,
    /// Jobs that make one well-packed request, within the batch cap.
    capacity: usize,
    items: Vec<T>,
}

/// Groups waiting jobs (`T`: the worker's delivered jobs; anything in the
/// tests) by key until a group is full or has waited long enough. It keeps
/// no clock of its own: callers say what time it is, so it is tested
/// without a broker or a timer.
#[derive(Debug)]
pub(crate) struct Batcher<T> {
    groups: HashMap<BatchKey, Group<T>>,
    max: usize,
    wait: Duration,
    packing: Packing,
}

impl<T> Batcher<T> {
    /// Batches of at most `max` jobs, none waiting longer than `wait`; a
    /// batch also closes when it holds as many symbols as one request packed
    /// by `packing` should carry.
    pub(crate) fn new(max: usize, wait: Duration, packing: Packing) -> Self {
        Batcher {
            groups: HashMap::new(),
            max: max.max(1),
            wait,
            packing,
        }
    }

    /// Adds a job at `now`; returns its group if that made the group full.
    pub(crate) fn add(&mut self, key: BatchKey, item: T, now: Instant) -> Option<(BatchKey, Vec<T>)> {
        let (max, packing) = (self.max, self.packing);
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            opened: now,
            capacity: packing.symbols_per_request(key.bars).min(max),
            items: Vec::new(),
        });
        group.items.push(item);
        // Interactive jobs go at once: their latency matters more than the
        // call that waiting for company might save.
        if group.items.len() >= group.capacity || self.wait.is_zero() || key.priority == Priority::Interactive {
            return self.groups.remove(&key).map(|g| (key, g.items));
        }
        None
    }

    /// When the oldest group is due, if any group is waiting.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.groups.values().map(|g| g.opened + self.wait).min()
    }

    /// Removes and returns every group that has waited long enough.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(BatchKey, Vec<T>)> {
        let keys: Vec<BatchKey> = self
            .groups
            .iter()
            .filter(|(_, g)| g.opened + self.wait <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.groups.remove(&k).map(|g| (k, g.items)))
            .collect()
    }

    /// Removes every waiting job (for shutdown).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.groups.drain().flat_map(|(_, g)| g.items).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use signal9_alpaca::{Adjustment, Symbol, Timeframe};

    fn key(symbol: &str, days: i64, priority: Priority) -> BatchKey {
        let end: DateTime<Utc> = "2026-11-20T00:00:00Z".parse().unwrap();
        let payload = FetchBars {
            symbol: Symbol::parse(symbol).unwrap(),
            range: BarRange {
                timeframe: Timeframe::DAY,
                start: end - chrono::Duration::days(days),
                end,
                adjustment: Adjustment::raw(),
                feed: None,
            },
        };
        BatchKey::of(&payload, priority)
    }

    #[test]
    fn compatible_jobs_share_a_batch_until_it_is_full() {
        let mut batcher = Batcher::new(3, Duration::from_secs(1), Packing::default());
        let now = Instant::now();
        assert!(batcher.add(key("AAPL", 5, Priority::Bulk), 1, now).is_none());
        assert!(batcher.add(key("MSFT", 5, Priority::Bulk), 2, now).is_none());
        let (_, full) = batcher.add(key("NVDA", 5, Priority::Bulk), 3, now).expect("full at 3");
        assert_eq!(full, vec![1, 2, 3]);
        assert_eq!(batcher.next_deadline(), None, "nothing waits");
    }

    #[test]
    fn different_ranges_or_priorities_never_share_a_batch() {
        let mut batcher = Batcher::new(10, Duration::from_secs(1), Packing::default());
        let now = Instant::now();
        batcher.add(key("AAPL", 5, Priority::Bulk), "a", now);
        batcher.add(key("MSFT", 6, Priority::Bulk), "b", now);
        batcher.add(key("NVDA", 5, Priority::Backfill), "c", now);
        let mut groups: Vec<Vec<&str>> = batcher
            .due(now + Duration::from_secs(1))
            .into_iter()
            .map(|(_, g)| g)
            .collect();
        groups.sort();
        assert_eq!(groups, vec![vec!["a"], vec!["b"], vec!["c"]]);
    }

    #[test]
    fn a_group_is_due_after_its_wait_and_interactive_jobs_go_at_once() {
        let mut batcher = Batcher::new(10, Duration::from_millis(50), Packing::default());
        let now = Instant::now();
        batcher.add(key("AAPL", 5, Priority::Bulk), 1, now);
        batcher.add(key("MSFT", 5, Priority::Bulk), 2, now + Duration::from_millis(10));
        assert_eq!(batcher.next_deadline(), Some(now + Duration::from_millis(50)));
        assert!(batcher.due(now + Duration::from_millis(49)).is_empty());
        let due = batcher.due(now + Duration::from_millis(50));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, vec![1, 2]);
        let (_, alone) = batcher
            .add(key("TSLA", 5, Priority::Interactive), 3, now)
            .expect("an interactive job is not held");
        assert_eq!(alone, vec![3]);
    }

    #[test]
    fn a_long_range_closes_its_batch_at_fewer_symbols_and_shutdown_drains_all() {
        // A year of minute bars per symbol fills a request's pages with a
        // few symbols: the group closes at that count, not at the cap.
        let packing = Packing::default();
        let end: DateTime<Utc> = "2026-11-20T00:00:00Z".parse().unwrap();
        let long = |symbol: &str| {
            let payload = FetchBars {
                symbol: Symbol::parse(symbol).unwrap(),
                range: BarRange {
                    timeframe: Timeframe::MINUTE,
                    start: end - chrono::Duration::days(365),
                    end,
                    adjustment: Adjustment::raw(),
                    feed: None,
                },
            };
            BatchKey::of(&payload, Priority::Backfill)
        };
        let fits = packing.symbols_per_request(long("AAPL").bars);
        assert!((1..50).contains(&fits), "{fits}");
        let mut batcher = Batcher::new(50, Duration::from_secs(5), packing);
        let now = Instant::now();
        for n in 1..fits {
            assert!(batcher.add(long(&format!("S{n}")), n, now).is_none());
        }
        let (_, closed) = batcher
            .add(long("LAST"), fits, now)
            .expect("closed at the count that fits");
        assert_eq!(closed.len(), fits);
        batcher.add(key("AAPL", 5, Priority::Bulk), 100, now);
        batcher.add(key("MSFT", 6, Priority::Bulk), 200, now);
        let mut drained = batcher.drain();
        drained.sort_unstable();
        assert_eq!(drained, vec![100, 200]);
        assert_eq!(batcher.next_deadline(), None);
    }
}
