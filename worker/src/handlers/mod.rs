//! One handler per job kind. Handlers do the work and say how it went;
//! they never ack, retry or sleep: the worker loop owns the queue.

pub mod fetch_bars;
pub mod status_check;
pub mod sync_page;

use std::sync::Arc;

use signal9_shared::alpaca::AlpacaClient;
use signal9_shared::store::Store;

/// What every handler uses.
#[derive(Debug, Clone)]
pub struct Context {
    /// The Alpaca client, behind the budget.
    pub client: AlpacaClient,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Symbols per multi-symbol request.
    pub symbols_per_call: usize,
    /// The delisting guard's threshold.
    pub max_delist_fraction: f64,
}

/// Where handlers publish events.
#[derive(Debug, Clone)]
pub struct Events {
    /// A confirm-mode channel.
    pub publisher: signal9_shared::broker::Publisher,
    /// The namespace's names.
    pub topology: signal9_shared::broker::Topology,
}

impl Events {
    /// Publishes, logging (not failing) on error: the data is stored either way.
    pub async fn emit(&self, event: signal9_shared::events::Event) {
        if let Err(error) = event.publish(&self.publisher, &self.topology).await {
            tracing::warn!(%error, event = event.kind.as_str(), "Could not publish an event");
        }
    }
}
