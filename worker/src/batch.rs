//! Coalescing: fetch-bars jobs that could share one multi-symbol request
//! (same timeframe, range, adjustment, feed, market and priority) wait a
//! moment for each other, then go as one batch. Each job in a batch still
//! succeeds, retries or dead-letters on its own.

use lapin::message::Delivery;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

use signal9_alpaca::BarRange;
use signal9_shared::job::{FetchBars, Job, Priority};
use signal9_shared::plan::Packing;

/// A parsed job and the delivery it came in.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The job.
    pub(crate) job: Job,
    /// Its delivery, to ack or republish.
    pub(crate) delivery: Delivery,
    /// The job's span, a child of the producer's trace when the message
    /// carries one; stable fields job_id, kind, symbol, attempt, run_id.
    pub(crate) span: tracing::Span,
    /// When it was delivered, for its duration.
    pub(crate) received: std::time::Instant,
}

impl Pending {
    /// Wraps a delivered job with its span.
    pub(crate) fn new(job: Job, delivery: Delivery) -> Self {
        let kind = job.payload.kind();
        let symbol = job.payload.symbol().map(ToString::to_string).unwrap_or_default();
        let attempt = crate::outcome::attempts(&delivery);
        let span = tracing::info_span!(
            "job",
            job_id = %job.id,
            %kind,
            %symbol,
            attempt,
            run_id = job.run_id.as_deref().unwrap_or("")
        );
        signal9_shared::telemetry::continue_trace(&span, delivery.properties.headers().as_ref());
        Pending {
            job,
            delivery,
            span,
            received: std::time::Instant::now(),
        }
    }
}

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
struct Group {
    opened: Instant,
    /// Jobs that make one well-packed request, within the batch cap.
    capacity: usize,
    items: Vec<Pending>,
}

/// Groups waiting jobs by key until a group is full or has waited long enough.
#[derive(Debug)]
pub(crate) struct Batcher {
    groups: HashMap<BatchKey, Group>,
    max: usize,
    wait: Duration,
    packing: Packing,
}

impl Batcher {
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

    /// Adds a job; returns its group if that made the group full.
    pub(crate) fn add(&mut self, key: BatchKey, item: Pending) -> Option<(BatchKey, Vec<Pending>)> {
        let (max, packing) = (self.max, self.packing);
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            opened: Instant::now(),
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
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(BatchKey, Vec<Pending>)> {
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
    pub(crate) fn drain(&mut self) -> Vec<Pending> {
        self.groups.drain().flat_map(|(_, g)| g.items).collect()
    }
}
