//! `signal9-producer check-credentials`: one `GET /v2/account` through the
//! shared budget and breaker, to learn whether the configured key pair
//! works before a deployment relies on it. It prints which API base it
//! reached, where the key came from and the account's status, never a key.

use anyhow::{Context, Result};
use clap::Args;

use crate::args::ApiAccess;
use signal9_alpaca::check_credentials;

/// Settings of `check-credentials`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    api: ApiAccess,
}

/// Checks the key; fails when it is refused or the account is not active.
pub async fn run(args: CheckArgs) -> Result<()> {
    let source = match args.api.alpaca.secret.as_deref().filter(|s| !s.is_empty()) {
        Some(name) => format!("Secrets Manager secret {name:?}"),
        None => "APCA_API_KEY_ID / APCA_API_SECRET_KEY".to_owned(),
    };
    let client = args.api.client().await?;
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
