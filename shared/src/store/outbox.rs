//! The outbox: events a store writes beside the changes that raise them,
//! until the relay ([`crate::outbox`]) has published them.

use async_trait::async_trait;

use super::StoreError;
use crate::events::Event;

/// Events waiting to be published, oldest first.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// About `limit` events in the outbox (more when the last item read
    /// holds several), oldest first.
    async fn pending_events(&self, limit: usize) -> Result<Vec<PendingEvent>, StoreError>;

    /// Removes published events from the outbox. An event written beside
    /// them since they were read stays (and they may be sent again with it).
    async fn events_sent(&self, sent: &[PendingEvent]) -> Result<(), StoreError>;
}

/// An event waiting in a store's outbox, with the backend's receipt for
/// removing it once published.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// The event.
    pub event: Event,
    /// Where it is kept (opaque; the backend's own).
    pub receipt: String,
}
