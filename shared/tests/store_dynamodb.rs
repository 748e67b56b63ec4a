//! The store contract, run against the DynamoDB backend on a local
//! DynamoDB-API server (moto's server mode; `bash scripts/test` installs and
//! starts it and sets SIGNAL9_TEST_AWS_ENDPOINT).

use signal9_shared::aws::AwsTarget;
use signal9_shared::store::AssetStore;
use signal9_shared::store::BarStore;
use signal9_shared::store::{DynamoStore, Store};

fn endpoint() -> String {
    std::env::var("SIGNAL9_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// A store whose tables no other test shares.
async fn fresh() -> DynamoStore {
    let config = AwsTarget::local(endpoint()).load().await;
    let prefix = signal9_shared::testing::namespace();
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

/// Coverage written by a version without the `by_symbol` index: `init`
/// adds the index and gives the old items their symbol, so a corporate
/// action finds and drops their series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_gives_old_coverage_its_symbol_so_actions_find_it() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    use chrono::{DateTime, Utc};
    use signal9_alpaca::{ActionKind, CorporateAction, Symbol};
    use signal9_shared::store::SeriesKey;

    let config = AwsTarget::local(endpoint()).load().await;
    let prefix = signal9_shared::testing::namespace();
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("{prefix}-coverage");
    let attribute = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    // The old coverage table: no index, items without `symbol`.
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("series", ScalarAttributeType::S))
        .attribute_definitions(attribute("start_ms", ScalarAttributeType::N))
        .key_schema(key("series", KeyType::Hash))
        .key_schema(key("start_ms", KeyType::Range))
        .send()
        .await
        .unwrap();
    let series: SeriesKey = "OLDC|1Day|split|iex".parse().unwrap();
    let (start, end): (DateTime<Utc>, DateTime<Utc>) = (
        "2025-01-02T05:00:00Z".parse().unwrap(),
        "2025-01-31T05:00:00Z".parse().unwrap(),
    );
    client
        .put_item()
        .table_name(&table)
        .item("series", AttributeValue::S(series.to_string()))
        .item("start_ms", AttributeValue::N(start.timestamp_millis().to_string()))
        .item("end_ms", AttributeValue::N(end.timestamp_millis().to_string()))
        .send()
        .await
        .unwrap();

    let store = DynamoStore::from_config(&config, prefix);
    store.init().await.unwrap();
    assert!(store.covers(&series, start, end).await.unwrap());
    let action = CorporateAction {
        id: "old-coverage-split".into(),
        kind: ActionKind::ReverseSplit,
        symbol: Symbol::parse("OLDC").unwrap(),
        ex_date: "2025-06-02".parse().unwrap(),
        terms: "1:10".into(),
    };
    let dropped = store.apply_action(&action, Utc::now()).await.unwrap();
    assert_eq!(dropped, Some(vec![series.clone()]));
    assert!(!store.covers(&series, start, end).await.unwrap());
    store.drop_tables().await.unwrap();
}

/// On DynamoDB, writers of one chunk really race (conditional writes are
/// refused and redone), and the largest chunk, a day of crypto 1Min bars,
/// stays far below the 400 KB item limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_writers_race_through_conditional_writes_and_a_crypto_day_is_small() {
    use chrono::{DateTime, Duration, Utc};
    use signal9_alpaca::{Adjustment, Bar, Symbol, Timeframe};
    use signal9_shared::store::SeriesKey;
    use std::sync::atomic::Ordering;

    let store = fresh().await;
    store.init().await.unwrap();
    let key = SeriesKey {
        symbol: Symbol::parse("ETH/USD").unwrap(),
        timeframe: Timeframe::MINUTE,
        adjustment: Adjustment::raw(),
        feed: None,
    };
    let t0: DateTime<Utc> = "2025-11-20T00:00:00Z".parse().unwrap();
    let bar = |m: i64| Bar {
        time: t0 + Duration::minutes(m),
        open: 3_000.0 + (m as f64 * 0.1).sin(),
        high: 3_001.5,
        low: 2_999.25,
        close: 3_000.5 + (m as f64 * 0.2).cos(),
        volume: (m as f64 * 0.7).sin().abs() * 12.345_678,
        trade_count: (m % 50) as u64,
        vwap: 3_000.25,
    };
    // 16 writers of 90 minutes each: a whole day, all in one chunk.
    let writers = (0..16i64).map(|w| {
        let (store, key) = (&store, &key);
        let bars: Vec<Bar> = (w * 90..(w + 1) * 90).map(bar).collect();
        async move { store.upsert_bars(key, &bars).await }
    });
    for result in futures::future::join_all(writers).await {
        result.unwrap();
    }
    let stored = store.bars(&key, t0, t0 + Duration::minutes(1439)).await.unwrap();
    assert_eq!(stored.len(), 1440);
    let counters = store.counters();
    assert!(
        counters.chunk_conflicts.load(Ordering::Relaxed) > 0,
        "16 writers of one chunk must have collided"
    );
    let largest = counters.largest_item.load(Ordering::Relaxed);
    assert!(largest < 100_000, "a crypto day's chunk is {largest} bytes");
    store.drop_tables().await.unwrap();
}
