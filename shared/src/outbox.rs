//! The outbox relay: publishes the events the store wrote beside the changes
//! they describe, and removes each from the outbox once the broker has
//! confirmed it.
//!
//! A change and its event are written together (one SQLite transaction; on
//! DynamoDB, one single-item write of the changed item, which holds its
//! events: see `store::dynamo`), so an event cannot be lost between the
//! store write and the publish: a crash or a broker outage there leaves it
//! in the outbox, and the next relay pass (on any worker) sends it. An event
//! is removed only after its confirm, so it may be sent twice (a crash
//! between confirm and removal, or two relays at once): delivery is
//! at-least-once, and consumers drop duplicates by the event's stable `id`.

use chrono::Utc;
use std::time::Duration;

use crate::broker::{BrokerError, Publisher, Topology};
use crate::events::Event;
use crate::store::{Store, StoreError};

/// Events read from the outbox per pass.
pub const RELAY_BATCH: usize = 500;
/// Publishes awaiting their confirm at once.
const IN_FLIGHT: usize = 64;

/// A failed relay pass; what was not confirmed stays in the outbox.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or clearing the outbox failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Publishing failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The extra sink (EventBridge) failed.
    #[error("event sink failed: {0}")]
    Sink(String),
}

/// Somewhere else every event goes too (EventBridge), before it leaves the outbox.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Delivers a batch of events; an error keeps them all in the outbox.
    async fn put(&self, events: &[Event]) -> Result<(), String>;
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RelayPass {
    /// Events published and removed.
    pub sent: usize,
    /// Age of the oldest event found, zero when the outbox was empty.
    pub oldest_age: Duration,
}

/// Publishes up to [`RELAY_BATCH`] events from the outbox, oldest first,
/// with publisher confirms, and removes the confirmed ones.
pub(crate) async fn relay_once(
    store: &dyn Store,
    publisher: &Publisher,
    topology: &Topology,
    sink: Option<&dyn EventSink>,
) -> Result<RelayPass, RelayError> {
    let pending = store.pending_events(RELAY_BATCH).await?;
    let events: Vec<Event> = pending.iter().map(|p| p.event.clone()).collect();
    let metrics = crate::telemetry::metrics::get();
    let oldest_age = events
        .iter()
        .map(|e| e.occurred_at)
        .min()
        .map_or(Duration::ZERO, |t| (Utc::now() - t).to_std().unwrap_or_default());
    metrics.outbox_oldest_age.set(oldest_age.as_secs() as i64);
    if events.is_empty() {
        metrics.outbox_pending.set(0);
        return Ok(RelayPass::default());
    }
    if let Some(sink) = sink {
        sink.put(&events).await.map_err(RelayError::Sink)?;
    }
    let mut confirmed = Vec::with_capacity(events.len());
    let mut failure = None;
    for group in pending.chunks(IN_FLIGHT) {
        // Publishes pipeline on the channel; their confirms are awaited together.
        let results = futures::future::join_all(group.iter().map(|p| p.event.publish(publisher, topology))).await;
        for (sent, result) in group.iter().zip(results) {
            match result {
                Ok(()) => confirmed.push(sent.clone()),
                Err(error) => failure = Some(error),
            }
        }
    }
    // An item's events leave together: keep only receipts all of whose
    // events were confirmed.
    let failed: std::collections::HashSet<&str> = pending
        .iter()
        .filter(|p| !confirmed.iter().any(|c| c.event.id == p.event.id))
        .map(|p| p.receipt.as_str())
        .collect();
    confirmed.retain(|c| !failed.contains(c.receipt.as_str()));
    store.events_sent(&confirmed).await?;
    metrics.outbox_published.inc_by(confirmed.len() as u64);
    metrics
        .outbox_pending
        .set(i64::try_from(events.len() - confirmed.len()).unwrap_or(i64::MAX));
    if let Some(error) = failure {
        return Err(error.into());
    }
    Ok(RelayPass {
        sent: confirmed.len(),
        oldest_age,
    })
}

/// Relays until the outbox is empty or a pass fails; returns how many were
/// sent. Before each pass after the first, `still_mine` is asked whether
/// this relay may go on (renewing its lease): a long backlog outlasts a
/// lease, and two relays sending the same events would double them.
pub async fn drain<F, Fut>(
    store: &dyn Store,
    publisher: &Publisher,
    topology: &Topology,
    sink: Option<&dyn EventSink>,
    mut still_mine: F,
) -> Result<usize, RelayError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut sent = 0;
    loop {
        let pass = relay_once(store, publisher, topology, sink).await?;
        sent += pass.sent;
        if pass.sent == 0 || pass.sent < RELAY_BATCH || !still_mine().await {
            return Ok(sent);
        }
    }
}
