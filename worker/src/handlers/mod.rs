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
}
