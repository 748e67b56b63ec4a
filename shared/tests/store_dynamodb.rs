//! The store contract, run against the DynamoDB backend on a local
//! DynamoDB-API server (moto's server mode; `bash scripts/test` installs and
//! starts it and sets SIGNAL9_TEST_AWS_ENDPOINT).

use signal9_shared::aws::AwsTarget;
use signal9_shared::store::{DynamoStore, Store};

fn endpoint() -> String {
    std::env::var("SIGNAL9_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// A store whose tables no other test shares.
async fn fresh() -> DynamoStore {
    let config = AwsTarget::local(endpoint()).load().await;
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    DynamoStore::from_config(&config, prefix)
}

signal9_shared::store_contract_tests!(fresh());

#[tokio::test]
async fn init_is_idempotent_and_drop_removes_the_tables() {
    let store = fresh().await;
    store.init().await.expect("first init");
    store.init().await.expect("second init changes nothing");
    let asset = signal9_shared::store::contract::sample_asset(7, "MSFT");
    store
        .upsert_assets(std::slice::from_ref(&asset), chrono::Utc::now())
        .await
        .expect("upsert");
    store.init().await.expect("init over data");
    assert!(
        store.get_asset(&asset.id).await.expect("get").is_some(),
        "init kept the data"
    );
    store.drop_tables().await.expect("drop");
    assert!(store.get_asset(&asset.id).await.is_err(), "the tables are gone");
    store.drop_tables().await.expect("dropping again is fine");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_backend_error_naming_the_cause() {
    let config = AwsTarget::local("http://127.0.0.1:9").load().await;
    let store = DynamoStore::from_config(&config, "unreachable");
    let error = store.get_asset("x").await.expect_err("nothing listens on port 9");
    let text = error.to_string();
    assert!(text.starts_with("store backend failed"), "{text}");
    assert!(
        text.len() > "store backend failed: ".len() + 10,
        "a cause is named: {text}"
    );
}
