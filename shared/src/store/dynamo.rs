//! The production store: Amazon DynamoDB.
//!
//! Five tables, named `{prefix}-{name}`, all on-demand (pay per request):
//!
//! | table | partition key | sort key | what |
//! | --- | --- | --- | --- |
//! | `assets` | `id` (S) | | one item per asset id; index `by_symbol` (`symbol`, `id`) |
//! | `bars` | `series` (S, `AAPL\|1Day\|raw\|iex`) | `t` (N, epoch ms) | one item per bar |
//! | `coverage` | `series` (S) | `start_ms` (N) | closed ranges held in full |
//! | `runs` | `run_id` (S) | | one item per sync run; index `by_start` (`kind`, `started`) |
//! | `run_pages` | `run_id` (S) | `page_id` (S) | one item per recorded page |
//!
//! No query needs `begins_with` on a partition key: a series is one
//! partition, a bar range is a `BETWEEN` on its sort key, the latest run is
//! the first item of the `by_start` index read backwards.
//!
//! Bars are written with BatchWriteItem, 25 items a request, and the items
//! DynamoDB leaves unprocessed are sent again with capped, jittered back-off.
//! Reads are strongly consistent where the contract needs it and paginate
//! to the end.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, PutRequest, ScalarAttributeType, TableStatus, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{
    classify_change, AssetChange, AssetFilter, AssetWrite, RunProgress, RunStatus, SeriesKey, Store, StoreError,
    StoredAsset, SyncRun,
};
use crate::alpaca::{Asset, AssetStatus, Bar, Symbol};

/// Items in one BatchWriteItem request (DynamoDB's limit).
pub const BATCH_WRITE_MAX: usize = 25;
/// Keys in one BatchGetItem request (DynamoDB's limit).
const BATCH_GET_MAX: usize = 100;
/// Rounds of resending unprocessed items before the write fails.
const UNPROCESSED_ROUNDS: u32 = 10;

type Item = HashMap<String, AttributeValue>;

/// Counters of the requests a store has sent, for benchmarks.
#[derive(Debug, Default)]
pub struct DynamoCounters {
    /// BatchWriteItem requests, resends included.
    pub batch_writes: AtomicU64,
    /// Items sent in BatchWriteItem requests, resends included.
    pub items_written: AtomicU64,
    /// Items DynamoDB returned unprocessed.
    pub unprocessed: AtomicU64,
    /// Single-item writes (PutItem, UpdateItem).
    pub item_writes: AtomicU64,
}

/// The DynamoDB store.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    prefix: String,
    counters: Arc<DynamoCounters>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore").field("prefix", &self.prefix).finish()
    }
}

/// A table prefix: 3-200 characters of a-z, A-Z, 0-9, `_`, `-` and `.`.
pub fn parse_table_prefix(text: &str) -> Result<String, String> {
    let ok = (3..=200).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err("expected 3-200 characters of a-z, A-Z, 0-9, '_', '-' and '.'".into())
    }
}

fn backend(error: impl std::error::Error + 'static) -> StoreError {
    StoreError::Backend(crate::aws::describe(&error))
}

/// A conditional write's result: `true` when it was applied, `false` when
/// its condition did not hold (DynamoDB's ConditionalCheckFailedException),
/// any other failure a backend error.
fn applied<T, E, R>(result: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(backend(e)),
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn ts(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(other) => Err(StoreError::Corrupt(format!("{name} is not a string: {other:?}"))),
    }
}

fn req_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    get_s(item, name)?.ok_or_else(|| StoreError::Corrupt(format!("{name} is missing")))
}

fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<Option<T>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("{name} is not a number: {v:?}"))),
        Some(other) => Err(StoreError::Corrupt(format!("{name} is not a number: {other:?}"))),
    }
}

fn req_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    get_n(item, name)?.ok_or_else(|| StoreError::Corrupt(format!("{name} is missing")))
}

fn parse_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {text:?}: {e}")))
}

fn opt_ts(item: &Item, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    get_s(item, name)?.map(parse_ts).transpose()
}

fn asset_item(stored: &StoredAsset) -> Result<Item, StoreError> {
    let asset = &stored.asset;
    let body = serde_json::to_string(asset).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut item: Item = HashMap::from([
        ("id".into(), s(&asset.id)),
        ("symbol".into(), s(asset.symbol.as_str())),
        ("class".into(), s(asset.class.as_str())),
        ("status".into(), s(asset.status.as_str())),
        ("body".into(), s(body)),
        ("first_seen".into(), s(ts(stored.first_seen))),
        ("updated_at".into(), s(ts(stored.updated_at))),
    ]);
    if let Some(at) = stored.delisted_at {
        item.insert("delisted_at".into(), s(ts(at)));
    }
    if let Some(status) = stored.previous_status {
        item.insert("previous_status".into(), s(status.as_str()));
    }
    if let Some(tradable) = stored.previous_tradable {
        item.insert("previous_tradable".into(), AttributeValue::Bool(tradable));
    }
    if let Some(at) = stored.status_changed_at {
        item.insert("status_changed_at".into(), s(ts(at)));
    }
    Ok(item)
}

fn decode_asset(item: &Item) -> Result<StoredAsset, StoreError> {
    let asset: Asset =
        serde_json::from_str(req_s(item, "body")?).map_err(|e| StoreError::Corrupt(format!("asset body: {e}")))?;
    let previous_status = get_s(item, "previous_status")?
        .map(|s| s.parse::<AssetStatus>().map_err(StoreError::Corrupt))
        .transpose()?;
    let previous_tradable = match item.get("previous_tradable") {
        Some(AttributeValue::Bool(b)) => Some(*b),
        None | Some(AttributeValue::Null(_)) => None,
        Some(other) => return Err(StoreError::Corrupt(format!("previous_tradable: {other:?}"))),
    };
    Ok(StoredAsset {
        asset,
        first_seen: parse_ts(req_s(item, "first_seen")?)?,
        updated_at: parse_ts(req_s(item, "updated_at")?)?,
        delisted_at: opt_ts(item, "delisted_at")?,
        previous_status,
        previous_tradable,
        status_changed_at: opt_ts(item, "status_changed_at")?,
    })
}

fn bar_item(series: &str, bar: &Bar) -> Item {
    HashMap::from([
        ("series".into(), s(series)),
        ("t".into(), n(bar.time.timestamp_millis())),
        ("o".into(), n(bar.open)),
        ("h".into(), n(bar.high)),
        ("l".into(), n(bar.low)),
        ("c".into(), n(bar.close)),
        ("v".into(), n(bar.volume)),
        ("n".into(), n(bar.trade_count)),
        ("vw".into(), n(bar.vwap)),
    ])
}

fn decode_bar(item: &Item) -> Result<Bar, StoreError> {
    let t: i64 = req_n(item, "t")?;
    Ok(Bar {
        time: DateTime::from_timestamp_millis(t).ok_or_else(|| StoreError::Corrupt(format!("bar time {t}")))?,
        open: req_n(item, "o")?,
        high: req_n(item, "h")?,
        low: req_n(item, "l")?,
        close: req_n(item, "c")?,
        volume: req_n(item, "v")?,
        trade_count: req_n(item, "n")?,
        vwap: req_n(item, "vw")?,
    })
}

/// An attribute of a key: its name and type.
type KeyAttr = (&'static str, ScalarAttributeType);

/// A global secondary index: its name, partition key and sort key.
type IndexSpec = (&'static str, KeyAttr, KeyAttr);

/// What recording one range of coverage writes.
#[derive(Debug)]
struct CoveragePlan {
    series: String,
    lo: i64,
    hi: i64,
    swallowed: Vec<i64>,
}

/// One table's key design.
struct TableSpec {
    name: &'static str,
    hash: KeyAttr,
    range: Option<KeyAttr>,
    index: Option<IndexSpec>,
}

fn specs() -> Vec<TableSpec> {
    use ScalarAttributeType::{N, S};
    vec![
        TableSpec {
            name: "assets",
            hash: ("id", S),
            range: None,
            index: Some(("by_symbol", ("symbol", S), ("id", S))),
        },
        TableSpec {
            name: "bars",
            hash: ("series", S),
            range: Some(("t", N)),
            index: None,
        },
        TableSpec {
            name: "coverage",
            hash: ("series", S),
            range: Some(("start_ms", N)),
            index: None,
        },
        TableSpec {
            name: "runs",
            hash: ("run_id", S),
            range: None,
            index: Some(("by_start", ("kind", S), ("started", S))),
        },
        TableSpec {
            name: "run_pages",
            hash: ("run_id", S),
            range: Some(("page_id", S)),
            index: None,
        },
    ]
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(backend)
}

fn attribute(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(backend)
}

/// A short, jittered pause before resending unprocessed items.
async fn backoff(round: u32) {
    let base = 50u64 << round.min(6);
    let jitter = rand::random_range(0..=base);
    tokio::time::sleep(Duration::from_millis((base + jitter).min(5_000))).await;
}

impl DynamoStore {
    /// A store over `client` whose tables are named `{prefix}-assets` and so on.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        DynamoStore {
            client,
            prefix: prefix.into(),
            counters: Arc::new(DynamoCounters::default()),
        }
    }

    /// Connects with an SDK configuration (see [`crate::aws::AwsTarget`]).
    pub fn from_config(config: &aws_config::SdkConfig, prefix: impl Into<String>) -> Self {
        DynamoStore::new(Client::new(config), prefix)
    }

    /// The requests sent so far.
    pub fn counters(&self) -> &DynamoCounters {
        &self.counters
    }

    /// The full name of one of the store's tables.
    pub fn table(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Deletes every table of this prefix (tests and `init-store --drop` use it).
    pub async fn drop_tables(&self) -> Result<(), StoreError> {
        for spec in specs() {
            let result = self
                .client
                .delete_table()
                .table_name(self.table(spec.name))
                .send()
                .await;
            if let Err(error) = result {
                let missing = error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception());
                if !missing {
                    return Err(backend(error));
                }
            }
        }
        Ok(())
    }

    async fn create_table(&self, spec: &TableSpec) -> Result<(), StoreError> {
        let table = self.table(spec.name);
        let mut attributes = vec![attribute(spec.hash.0, spec.hash.1.clone())?];
        let mut request = self
            .client
            .create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(spec.hash.0, KeyType::Hash)?);
        if let Some((name, kind)) = &spec.range {
            attributes.push(attribute(name, kind.clone())?);
            request = request.key_schema(key(name, KeyType::Range)?);
        }
        if let Some((index, (hash, hash_kind), (range, range_kind))) = &spec.index {
            for (name, kind) in [(hash, hash_kind), (range, range_kind)] {
                if !attributes.iter().any(|a| a.attribute_name() == *name) {
                    attributes.push(attribute(name, kind.clone())?);
                }
            }
            let gsi = GlobalSecondaryIndex::builder()
                .index_name(*index)
                .key_schema(key(hash, KeyType::Hash)?)
                .key_schema(key(range, KeyType::Range)?)
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .map_err(backend)?;
            request = request.global_secondary_indexes(gsi);
        }
        match request.set_attribute_definitions(Some(attributes)).send().await {
            Ok(_) => {}
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(error) => return Err(backend(error)),
        }
        // A new table takes a moment to become ACTIVE.
        for _ in 0..120 {
            let described = self
                .client
                .describe_table()
                .table_name(&table)
                .send()
                .await
                .map_err(backend)?;
            if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Backend(format!(
            "table {table} did not become ACTIVE within 60 s"
        )))
    }

    /// Puts items with BatchWriteItem (see [`DynamoStore::batch_write`]).
    async fn batch_put(&self, table: &str, items: Vec<Item>) -> Result<(), StoreError> {
        let mut requests = Vec::with_capacity(items.len());
        for item in items {
            let put = PutRequest::builder().set_item(Some(item)).build().map_err(backend)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        self.batch_write(table, requests).await
    }

    /// Sends write requests with BatchWriteItem, 25 a request, resending
    /// what comes back unprocessed with back-off. No two requests may name
    /// the same key.
    async fn batch_write(&self, table: &str, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for chunk in requests.chunks(BATCH_WRITE_MAX) {
            let mut pending = chunk.to_vec();
            let mut round = 0;
            while !pending.is_empty() {
                self.counters.batch_writes.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .items_written
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .map_err(backend)?;
                pending = output
                    .unprocessed_items()
                    .and_then(|u| u.get(table))
                    .cloned()
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                self.counters
                    .unprocessed
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                round += 1;
                if round > UNPROCESSED_ROUNDS {
                    return Err(StoreError::Backend(format!(
                        "{table}: {} items still unprocessed after {UNPROCESSED_ROUNDS} resends",
                        pending.len()
                    )));
                }
                backoff(round).await;
            }
        }
        Ok(())
    }

    /// Reads items by key with BatchGetItem, 100 keys a request, resending
    /// unprocessed keys; strongly consistent.
    async fn batch_get(&self, table: &str, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::new();
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build()
                    .map_err(backend)?,
            );
            let mut round = 0;
            while let Some(request) = pending.take() {
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(table, request)
                    .send()
                    .await
                    .map_err(backend)?;
                if let Some(items) = output.responses().and_then(|r| r.get(table)) {
                    found.extend(items.iter().cloned());
                }
                pending = output
                    .unprocessed_keys()
                    .and_then(|u| u.get(table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
                if pending.is_some() {
                    round += 1;
                    if round > UNPROCESSED_ROUNDS {
                        return Err(StoreError::Backend(format!("{table}: keys still unprocessed")));
                    }
                    backoff(round).await;
                }
            }
        }
        Ok(found)
    }

    async fn get_item(&self, table: &str, key: Item) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(output.item().cloned())
    }

    /// Every item of a query, page after page.
    async fn query_all(
        &self,
        request: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut stream = request.into_paginator().items().send();
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item.map_err(backend)?);
        }
        Ok(items)
    }

    /// The merged range of one series' coverage with `[lo, hi]`, and the
    /// recorded ranges it swallows.
    async fn plan_coverage(&self, series: String, lo: i64, hi: i64) -> Result<CoveragePlan, StoreError> {
        // Ranges that start at or before the new end; those that also end at
        // or after the new start overlap or touch it and merge into it.
        let request = self
            .client
            .query()
            .table_name(self.table("coverage"))
            .key_condition_expression("#series = :s AND start_ms <= :hi")
            .filter_expression("end_ms >= :lo")
            .expression_attribute_names("#series", "series")
            .expression_attribute_values(":s", s(&series))
            .expression_attribute_values(":hi", n(hi))
            .expression_attribute_values(":lo", n(lo))
            .consistent_read(true);
        let mut plan = CoveragePlan {
            series,
            lo,
            hi,
            swallowed: Vec::new(),
        };
        for item in self.query_all(request).await? {
            let (s_ms, e_ms): (i64, i64) = (req_n(&item, "start_ms")?, req_n(&item, "end_ms")?);
            plan.lo = plan.lo.min(s_ms);
            plan.hi = plan.hi.max(e_ms);
            plan.swallowed.push(s_ms);
        }
        Ok(plan)
    }

    async fn pages_done(&self, run_id: &str) -> Result<u32, StoreError> {
        let mut stream = self
            .client
            .query()
            .table_name(self.table("run_pages"))
            .key_condition_expression("run_id = :r")
            .expression_attribute_values(":r", s(run_id))
            .select(aws_sdk_dynamodb::types::Select::Count)
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut count = 0;
        while let Some(page) = stream.next().await {
            count += page.map_err(backend)?.count();
        }
        u32::try_from(count).map_err(|_| StoreError::Corrupt(format!("page count {count}")))
    }

    async fn decode_run(&self, item: &Item) -> Result<SyncRun, StoreError> {
        let run_id = req_s(item, "run_id")?.to_owned();
        let status = req_s(item, "status")?;
        let status = RunStatus::parse(status).ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?;
        let result = get_s(item, "result")?
            .map(|r| serde_json::from_str(r).map_err(|e| StoreError::Corrupt(format!("run result: {e}"))))
            .transpose()?;
        Ok(SyncRun {
            pages_done: self.pages_done(&run_id).await?,
            started_at: parse_ts(req_s(item, "started_at")?)?,
            pages_total: req_n(item, "pages_total")?,
            status,
            finished_at: opt_ts(item, "finished_at")?,
            result,
            run_id,
        })
    }

    async fn scan_assets(&self, filter: &AssetFilter) -> Result<Vec<StoredAsset>, StoreError> {
        let mut conditions = Vec::new();
        let mut request = self
            .client
            .scan()
            .table_name(self.table("assets"))
            .consistent_read(true);
        if let Some(class) = filter.class {
            conditions.push("#class = :class");
            request = request
                .expression_attribute_names("#class", "class")
                .expression_attribute_values(":class", s(class.as_str()));
        }
        if let Some(status) = filter.status {
            conditions.push("#status = :status");
            request = request
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status.as_str()));
        }
        if !filter.include_delisted {
            conditions.push("attribute_not_exists(delisted_at)");
        }
        if !conditions.is_empty() {
            request = request.filter_expression(conditions.join(" AND "));
        }
        let mut stream = request.into_paginator().items().send();
        let mut assets = Vec::new();
        while let Some(item) = stream.next().await {
            assets.push(decode_asset(&item.map_err(backend)?)?);
        }
        Ok(assets)
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn init(&self) -> Result<(), StoreError> {
        for spec in specs() {
            self.create_table(&spec).await?;
        }
        Ok(())
    }

    async fn upsert_assets(&self, assets: &[Asset], at: DateTime<Utc>) -> Result<Vec<AssetWrite>, StoreError> {
        let mut ids: Vec<&str> = assets.iter().map(|a| a.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let keys = ids
            .iter()
            .map(|id| HashMap::from([("id".to_owned(), s(*id))]))
            .collect();
        let mut stored: HashMap<String, StoredAsset> = HashMap::new();
        for item in self.batch_get(&self.table("assets"), keys).await? {
            let asset = decode_asset(&item)?;
            stored.insert(asset.asset.id.clone(), asset);
        }
        let mut writes = Vec::with_capacity(assets.len());
        // The last version of an id wins, as with one upsert after another.
        let mut items: HashMap<String, Item> = HashMap::new();
        for asset in assets {
            let before = stored.get(&asset.id);
            let change = classify_change(before, asset);
            let after = match (&change, before) {
                (AssetChange::New, _) => Some(StoredAsset {
                    asset: asset.clone(),
                    first_seen: at,
                    updated_at: at,
                    delisted_at: None,
                    previous_status: None,
                    previous_tradable: None,
                    status_changed_at: None,
                }),
                (AssetChange::Updated { status, tradable, .. }, Some(before)) => {
                    let changed = status.is_some() || tradable.is_some();
                    Some(StoredAsset {
                        asset: asset.clone(),
                        first_seen: before.first_seen,
                        updated_at: at,
                        delisted_at: None,
                        previous_status: if changed {
                            Some(before.asset.status)
                        } else {
                            before.previous_status
                        },
                        previous_tradable: if changed {
                            Some(before.asset.tradable)
                        } else {
                            before.previous_tradable
                        },
                        status_changed_at: if changed { Some(at) } else { before.status_changed_at },
                    })
                }
                _ => None,
            };
            if let Some(after) = after {
                items.insert(asset.id.clone(), asset_item(&after)?);
                stored.insert(asset.id.clone(), after);
            }
            writes.push(AssetWrite {
                id: asset.id.clone(),
                change,
            });
        }
        self.batch_put(&self.table("assets"), items.into_values().collect())
            .await?;
        Ok(writes)
    }

    async fn get_asset(&self, id: &str) -> Result<Option<StoredAsset>, StoreError> {
        let key = HashMap::from([("id".to_owned(), s(id))]);
        self.get_item(&self.table("assets"), key)
            .await?
            .as_ref()
            .map(decode_asset)
            .transpose()
    }

    async fn assets_by_symbol(&self, symbol: &Symbol) -> Result<Vec<StoredAsset>, StoreError> {
        // The index is eventually consistent; the ids it names are read again
        // from the table, strongly consistent.
        let request = self
            .client
            .query()
            .table_name(self.table("assets"))
            .index_name("by_symbol")
            .key_condition_expression("#symbol = :s")
            .expression_attribute_names("#symbol", "symbol")
            .expression_attribute_values(":s", s(symbol.as_str()));
        let keys: Vec<Item> = self
            .query_all(request)
            .await?
            .iter()
            .map(|item| req_s(item, "id").map(|id| HashMap::from([("id".to_owned(), s(id))])))
            .collect::<Result<_, _>>()?;
        let mut assets: Vec<StoredAsset> = self
            .batch_get(&self.table("assets"), keys)
            .await?
            .iter()
            .map(decode_asset)
            .collect::<Result<_, _>>()?;
        assets.retain(|a| a.asset.symbol == *symbol);
        assets.sort_by(|a, b| a.asset.id.cmp(&b.asset.id));
        Ok(assets)
    }

    async fn list_assets(&self, filter: &AssetFilter) -> Result<Vec<StoredAsset>, StoreError> {
        let mut assets = self.scan_assets(filter).await?;
        assets.sort_by(|a, b| {
            (a.asset.symbol.as_str(), a.asset.id.as_str()).cmp(&(b.asset.symbol.as_str(), b.asset.id.as_str()))
        });
        Ok(assets)
    }

    async fn mark_delisted(&self, ids: &[String], at: DateTime<Utc>) -> Result<usize, StoreError> {
        let table = self.table("assets");
        let results: Vec<Result<bool, StoreError>> = futures::stream::iter(ids.iter().cloned())
            .map(|id| {
                let table = table.clone();
                async move {
                    self.counters.item_writes.fetch_add(1, Ordering::Relaxed);
                    let result = self
                        .client
                        .update_item()
                        .table_name(table)
                        .key("id", s(id))
                        .update_expression("SET delisted_at = :at, updated_at = :at")
                        .condition_expression("attribute_exists(#id) AND attribute_not_exists(delisted_at)")
                        .expression_attribute_names("#id", "id")
                        .expression_attribute_values(":at", s(ts(at)))
                        .send()
                        .await;
                    applied(result)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut changed = 0;
        for result in results {
            changed += usize::from(result?);
        }
        Ok(changed)
    }

    async fn upsert_bar_sets(&self, sets: &[(SeriesKey, Vec<Bar>)]) -> Result<usize, StoreError> {
        // One item per (series, t): a batch may not name a key twice, and the
        // last bar of a time wins, as with one upsert after another.
        let mut items: HashMap<(String, i64), Item> = HashMap::new();
        for (series, bars) in sets {
            let key = series.to_string();
            for bar in bars {
                items.insert((key.clone(), bar.time.timestamp_millis()), bar_item(&key, bar));
            }
        }
        let written = sets.iter().map(|(_, bars)| bars.len()).sum();
        self.batch_put(&self.table("bars"), items.into_values().collect())
            .await?;
        Ok(written)
    }

    async fn bars(&self, series: &SeriesKey, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Vec<Bar>, StoreError> {
        if end < start {
            return Ok(Vec::new());
        }
        let request = self
            .client
            .query()
            .table_name(self.table("bars"))
            .key_condition_expression("#series = :s AND #t BETWEEN :a AND :b")
            .expression_attribute_names("#series", "series")
            .expression_attribute_names("#t", "t")
            .expression_attribute_values(":s", s(series.to_string()))
            .expression_attribute_values(":a", n(start.timestamp_millis()))
            .expression_attribute_values(":b", n(end.timestamp_millis()))
            .consistent_read(true);
        self.query_all(request).await?.iter().map(decode_bar).collect()
    }

    async fn add_coverage_many(
        &self,
        series: &[SeriesKey],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Each series' overlapping ranges are read (several at once), then
        // every merged range is written and every swallowed range deleted in
        // batches. A failure in between can leave a gap (a later fetch fills
        // it), never a range that is not held in full.
        let (lo, hi) = (start.timestamp_millis(), end.timestamp_millis());
        // A batch may not name a key twice.
        let keys: std::collections::BTreeSet<String> = series.iter().map(SeriesKey::to_string).collect();
        let plans: Vec<Result<CoveragePlan, StoreError>> = futures::stream::iter(keys)
            .map(|key| self.plan_coverage(key, lo, hi))
            .buffer_unordered(8)
            .collect()
            .await;
        let mut requests = Vec::new();
        for plan in plans {
            let plan = plan?;
            let item = HashMap::from([
                ("series".to_owned(), s(&plan.series)),
                ("start_ms".to_owned(), n(plan.lo)),
                ("end_ms".to_owned(), n(plan.hi)),
            ]);
            let put = PutRequest::builder().set_item(Some(item)).build().map_err(backend)?;
            requests.push(WriteRequest::builder().put_request(put).build());
            for s_ms in plan.swallowed.into_iter().filter(|s_ms| *s_ms != plan.lo) {
                let key = HashMap::from([("series".to_owned(), s(&plan.series)), ("start_ms".to_owned(), n(s_ms))]);
                let delete = DeleteRequest::builder().set_key(Some(key)).build().map_err(backend)?;
                requests.push(WriteRequest::builder().delete_request(delete).build());
            }
        }
        self.batch_write(&self.table("coverage"), requests).await
    }

    async fn covers(&self, series: &SeriesKey, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<bool, StoreError> {
        // Ranges never overlap after a merge, so the one starting last at or
        // before `start` is the only candidate.
        let output = self
            .client
            .query()
            .table_name(self.table("coverage"))
            .key_condition_expression("#series = :s AND start_ms <= :a")
            .expression_attribute_names("#series", "series")
            .expression_attribute_values(":s", s(series.to_string()))
            .expression_attribute_values(":a", n(start.timestamp_millis()))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        match output.items().first() {
            Some(item) => Ok(req_n::<i64>(item, "end_ms")? >= end.timestamp_millis()),
            None => Ok(false),
        }
    }

    async fn create_run(&self, run_id: &str, pages_total: u32, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.counters.item_writes.fetch_add(1, Ordering::Relaxed);
        let result = self
            .client
            .put_item()
            .table_name(self.table("runs"))
            .item("run_id", s(run_id))
            .item("kind", s("run"))
            .item("started", s(format!("{}|{run_id}", ts(at))))
            .item("started_at", s(ts(at)))
            .item("pages_total", n(pages_total))
            .item("status", s(RunStatus::Running.as_str()))
            .item("reconcile_claimed", n(0))
            .condition_expression("attribute_not_exists(run_id)")
            .send()
            .await;
        applied(result)
    }

    async fn record_page(
        &self,
        run_id: &str,
        page_id: &str,
        result: &serde_json::Value,
    ) -> Result<RunProgress, StoreError> {
        let run = self
            .get_item(&self.table("runs"), HashMap::from([("run_id".to_owned(), s(run_id))]))
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("sync run {run_id:?}")))?;
        let pages_total: u32 = req_n(&run, "pages_total")?;
        self.counters.item_writes.fetch_add(1, Ordering::Relaxed);
        let put = self
            .client
            .put_item()
            .table_name(self.table("run_pages"))
            .item("run_id", s(run_id))
            .item("page_id", s(page_id))
            .item("result", s(result.to_string()))
            .condition_expression("attribute_not_exists(page_id)")
            .send()
            .await;
        // Recorded before (condition failed): the first result stays.
        applied(put)?;
        Ok(RunProgress {
            pages_done: self.pages_done(run_id).await?,
            pages_total,
        })
    }

    async fn page_results(&self, run_id: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let request = self
            .client
            .query()
            .table_name(self.table("run_pages"))
            .key_condition_expression("run_id = :r")
            .expression_attribute_values(":r", s(run_id))
            .consistent_read(true);
        self.query_all(request)
            .await?
            .iter()
            .map(|item| {
                let value = serde_json::from_str(req_s(item, "result")?)
                    .map_err(|e| StoreError::Corrupt(format!("page result: {e}")))?;
                Ok((req_s(item, "page_id")?.to_owned(), value))
            })
            .collect()
    }

    async fn claim_reconcile(
        &self,
        run_id: &str,
        at: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<bool, StoreError> {
        let now = at.timestamp_millis();
        let stale = now - i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        self.counters.item_writes.fetch_add(1, Ordering::Relaxed);
        // One conditional update decides, as SQLite's single UPDATE does.
        let result = self
            .client
            .update_item()
            .table_name(self.table("runs"))
            .key("run_id", s(run_id))
            .update_expression("SET reconcile_claimed = :now")
            .condition_expression(
                "attribute_exists(run_id) AND #status = :running AND (reconcile_claimed = :zero OR reconcile_claimed < :stale)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":running", s(RunStatus::Running.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":stale", n(stale))
            .send()
            .await;
        applied(result)
    }

    async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        result: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.counters.item_writes.fetch_add(1, Ordering::Relaxed);
        let update = self
            .client
            .update_item()
            .table_name(self.table("runs"))
            .key("run_id", s(run_id))
            .update_expression("SET #status = :status, #result = :result, finished_at = :at")
            .condition_expression("attribute_exists(run_id)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#result", "result")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":result", s(result.to_string()))
            .expression_attribute_values(":at", s(ts(at)))
            .send()
            .await;
        if applied(update)? {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("sync run {run_id:?}")))
        }
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<SyncRun>, StoreError> {
        let key = HashMap::from([("run_id".to_owned(), s(run_id))]);
        match self.get_item(&self.table("runs"), key).await? {
            Some(item) => Ok(Some(self.decode_run(&item).await?)),
            None => Ok(None),
        }
    }

    async fn latest_run(&self) -> Result<Option<SyncRun>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(self.table("runs"))
            .index_name("by_start")
            .key_condition_expression("#kind = :k")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":k", s("run"))
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(backend)?;
        let Some(run_id) = output.items().first().map(|i| req_s(i, "run_id")).transpose()? else {
            return Ok(None);
        };
        self.get_run(run_id).await
    }
}
