//! One handler per job kind. Handlers do the work and say how it went;
//! they never ack, retry or sleep: the worker loop owns the queue.

pub mod fetch_bars;
pub mod status_check;
pub mod sync_page;

use std::sync::Arc;

use signal9_alpaca::AlpacaClient;
use signal9_shared::store::Store;
use signal9_shared::sync::ReconcileSettings;

/// What every handler uses.
#[derive(Debug, Clone)]
pub struct Context {
    /// The Alpaca client, behind the budget.
    pub client: AlpacaClient,
    /// The store.
    pub store: Arc<dyn Store>,
    /// How bar requests are packed, and the largest job.
    pub packing: signal9_shared::plan::Packing,
    /// How sync runs are closed: the guard and the snapshot window.
    pub reconcile: ReconcileSettings,
    /// Woken after a write that may have put events in the outbox, so the
    /// relay publishes them at once instead of at its next tick.
    pub outbox_written: Arc<tokio::sync::Notify>,
}

impl Context {
    /// The context for a job of the `priority` lane: its calls take from
    /// that lane's share of the budget.
    pub fn at(&self, priority: signal9_shared::job::Priority) -> Context {
        Context {
            client: self.client.with_priority(priority),
            ..self.clone()
        }
    }
}
