//! One handler per job kind. Handlers do the work and say how it went;
//! they never ack, retry or sleep: the worker loop owns the queue.

pub(crate) mod fetch_bars;
pub(crate) mod status_check;
pub(crate) mod sync_page;

use std::sync::Arc;

use signal9_alpaca::AlpacaClient;
use signal9_shared::store::Store;
use signal9_shared::sync::ReconcileSettings;

/// What every handler uses.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// The Alpaca client, behind the budget.
    pub(crate) client: AlpacaClient,
    /// The store.
    pub(crate) store: Arc<dyn Store>,
    /// How bar requests are packed, and the largest job.
    pub(crate) packing: signal9_shared::plan::Packing,
    /// How sync runs are closed: the guard and the snapshot window.
    pub(crate) reconcile: ReconcileSettings,
    /// Woken after a write that may have put events in the outbox, so the
    /// relay publishes them at once instead of at its next tick.
    pub(crate) outbox_written: Arc<tokio::sync::Notify>,
}

impl Context {
    /// The context for a job of the `priority` lane: its calls take from
    /// that lane's share of the budget.
    pub(crate) fn at(&self, priority: signal9_shared::job::Priority) -> Context {
        Context {
            client: self.client.with_priority(priority),
            ..self.clone()
        }
    }
}
