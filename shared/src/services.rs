//! The services every process opens the same way: the store named by its
//! settings, the gate (the Redis budget and the breaker) before every
//! Alpaca call, and the Alpaca client behind that gate. The worker, the
//! API and the producer's commands all open them here: [`Services::open`]
//! for the store with the gate, [`gate`] and [`client`] for a command that
//! needs no store.

use anyhow::{Context, Result};
use std::sync::Arc;

use signal9_alpaca::AlpacaClient;

use crate::gate::ApiGate;
use crate::settings::{AlpacaSettings, BudgetSettings, StoreSettings};
use crate::store::Store;

/// The store and the gate of one process.
#[derive(Clone)]
pub struct Services {
    /// The store named by the settings (SQLite or DynamoDB).
    pub store: Arc<dyn Store>,
    /// The budget and breaker every Alpaca call takes a token from.
    pub gate: Arc<ApiGate>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Services {
    /// Opens the store and builds the gate in `namespace` (the Redis pool
    /// connects lazily: an unreachable Redis fails the first call, not this).
    pub async fn open(store: &StoreSettings, budget: &BudgetSettings, namespace: &str) -> Result<Services> {
        let store = store.open().await.context("opening the store")?;
        Ok(Services {
            store,
            gate: gate(budget, namespace)?,
        })
    }

    /// The Alpaca client with every call through this process's gate.
    pub async fn client(&self, alpaca: &AlpacaSettings) -> Result<AlpacaClient> {
        client(alpaca, Arc::clone(&self.gate)).await
    }
}

/// The gate alone, for a command that needs no store (`status`,
/// `check-credentials`, `backfill`'s planning): the same budget and breaker
/// as [`Services::open`] builds.
pub fn gate(budget: &BudgetSettings, namespace: &str) -> Result<Arc<ApiGate>> {
    Ok(Arc::new(
        budget.gate(namespace).context("building the API budget (Redis)")?,
    ))
}

/// The Alpaca client behind `gate`, as [`Services::client`] builds it.
pub async fn client(alpaca: &AlpacaSettings, gate: Arc<ApiGate>) -> Result<AlpacaClient> {
    alpaca.client(gate).await.context("setting up the Alpaca client")
}
