//! `signal9-producer check-credentials`: one `GET /v2/account` through the
//! shared budget and breaker, to learn whether the configured key pair
//! works before a deployment relies on it. It prints which API base it
//! reached, where the key came from and the account's status, never a key.

use anyhow::{Context, Result};
use clap::Args;
use std::sync::Arc;

use signal9_alpaca::check_credentials;
use signal9_shared::config::{AlpacaSettings, BrokerSettings, BudgetSettings};

/// Settings of `check-credentials`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    alpaca: AlpacaSettings,
    #[command(flatten)]
    budget: BudgetSettings,
    /// The namespace (of the budget's Redis keys); the queue settings are unused here.
    #[command(flatten)]
    broker: BrokerSettings,
}

/// Checks the key; fails when it is refused or the account is not active.
pub async fn run(args: CheckArgs) -> Result<()> {
    let gate = Arc::new(
        args.budget
            .guard(&args.broker.namespace)
            .context("building the API budget")?,
    );
    let source = match args.alpaca.secret.as_deref().filter(|s| !s.is_empty()) {
        Some(name) => format!("Secrets Manager secret {name:?}"),
        None => "APCA_API_KEY_ID / APCA_API_SECRET_KEY".to_owned(),
    };
    let client = args.alpaca.client(gate).await.context("setting up the Alpaca client")?;
    let check = check_credentials(&client).await.with_context(|| {
        format!(
            "the key from {source} did not open an account at {}",
            client.trading_url()
        )
    })?;
    println!("key from {source}: {check}");
    anyhow::ensure!(check.is_active(), "the account is not usable for trading data: {check}");
    println!("credentials ok");
    Ok(())
}
