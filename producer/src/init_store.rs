//! `signal9-producer init-store`: creates the store's tables (SQLite file or
//! DynamoDB tables) and says what is there. Safe to run again.

use anyhow::{Context, Result};
use clap::Args;
use signal9_shared::settings::{StoreKind, StoreSettings};
use signal9_shared::store::Store;

/// Flags of `init-store`.
#[derive(Debug, Args)]
pub struct InitStoreArgs {
    #[command(flatten)]
    store: StoreSettings,
}

/// Creates what is missing and prints the tables.
pub async fn run(args: InitStoreArgs) -> Result<()> {
    match args.store.kind {
        StoreKind::Sqlite => {
            args.store.open().await.context("creating the SQLite store")?;
        }
        StoreKind::Dynamodb => {
            let store = args.store.dynamo().await;
            store.init().await.context("creating the DynamoDB tables")?;
            for name in signal9_shared::store::DynamoStore::TABLES {
                println!("table {} ready", store.table(name));
            }
        }
    }
    println!("store ready: {}", args.store.describe());
    Ok(())
}
