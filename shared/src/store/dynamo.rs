//! The production store: Amazon DynamoDB.
//!
//! Six tables, named `{prefix}-{name}`, all on-demand (pay per request):
//!
//! | table | partition key | sort key | what |
//! | --- | --- | --- | --- |
//! | `assets` | `id` (S) | | one item per asset id; indexes `by_symbol` (`symbol`, `id`) and `outbox` |
//! | `bars` | `series` (S, `AAPL\|1Day\|raw\|iex`) | `t` (N, epoch ms) | one item per bar |
//! | `coverage` | `series` (S) | `start_ms` (N) | closed ranges held in full |
//! | `runs` | `run_id` (S) | | one item per sync run; indexes `by_start` (`kind`, `started`) and `outbox` |
//! | `run_pages` | `run_id` (S) | `page_id` (S) | one item per recorded page (counts, never ids) |
//! | `checkpoints` | `id` (S) | | one small item per unfinished bar fetch and series (see [`crate::ingest`]) |
//!
//! Nothing grows with the universe in one item: which assets a sync saw is
//! the `seen_at` stamp on each asset item, and a page record holds counts.
//!
//! **The outbox lives in the changed item.** An event is written into the
//! very item whose change it describes (the asset, or the run), in the same
//! single-item write: attribute `outbox` (a list of event JSON), `outbox_n`
//! (its length), and the keys of the sparse index `outbox`: `outbox_shard`
//! (`0`-`7`, spread so a first sync of a whole universe does not heat one
//! partition) and `outbox_key` (`{oldest occurred_at}|{event id}`). A
//! single-item write is atomic, so no TransactWriteItems is needed: the
//! change and its event land together or not at all. The relay reads the
//! index, publishes, and removes the attributes with a conditional update
//! (`outbox_n` unchanged), so an event appended meanwhile stays.
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
    plan_asset, AssetFilter, AssetWrite, PageRecord, PendingEvent, RunProgress, RunStatus, RunTotals, SeriesKey, Store,
    StoreError, StoredAsset, SyncRun,
};
use crate::alpaca::{Asset, AssetStatus, Bar, Symbol};
use crate::events::Event;

/// Items in one BatchWriteItem request (DynamoDB's limit).
pub const BATCH_WRITE_MAX: usize = 25;
/// Keys in one BatchGetItem request (DynamoDB's limit).
const BATCH_GET_MAX: usize = 100;
/// Rounds of resending unprocessed items before the write fails.
const UNPROCESSED_ROUNDS: u32 = 10;
/// Partitions the outbox index is spread over.
const OUTBOX_SHARDS: u32 = 8;
/// The sparse index of items with events waiting.
const OUTBOX_INDEX: &str = "outbox";

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
    /// Write units as AWS bills them: per item written, its size rounded up
    /// to 1 KB (1 for an update whose item size is not known here). Index
    /// writes are not counted.
    pub write_units: AtomicU64,
    /// The largest item written, in bytes as AWS counts them.
    pub largest_item: AtomicU64,
    /// Read requests (GetItem, BatchGetItem, each page of a Query or Scan);
    /// counted where the store reads assets, runs and pages, not bars.
    pub reads: AtomicU64,
}

impl DynamoCounters {
    /// One single-item write request of `units` write units (an update whose
    /// item size is not at hand: small bookkeeping items, 1 KB or less).
    fn single_write(&self, units: u64) {
        self.item_writes.fetch_add(1, Ordering::Relaxed);
        self.write_units.fetch_add(units, Ordering::Relaxed);
    }

    fn wrote(&self, item: &Item) {
        let size = item_size(item) as u64;
        let units = size.div_ceil(1024).max(1);
        self.write_units.fetch_add(units, Ordering::Relaxed);
        self.largest_item.fetch_max(size, Ordering::Relaxed);
    }
}

/// An item's size as DynamoDB counts it: each attribute's name plus its
/// value (strings and binaries by length, numbers about a byte per two
/// digits plus one, booleans and nulls one byte, lists and maps 3 bytes
/// plus their elements).
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(v) => v.len(),
        AttributeValue::N(v) => v.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(v) => v.as_ref().len(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(v) => 3 + v.iter().map(|(k, e)| 1 + k.len() + value_size(e)).sum::<usize>(),
        _ => 1,
    }
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
    if let Some(at) = stored.seen_at {
        item.insert("seen_at".into(), s(ts(at)));
    }
    Ok(item)
}

/// Runs one conditional write per id, 16 at a time, and counts those applied.
async fn count_applied<F, Fut>(ids: &[String], write: F) -> Result<usize, StoreError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<bool, StoreError>>,
{
    let results: Vec<Result<bool, StoreError>> = futures::stream::iter(ids.iter().cloned())
        .map(write)
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().try_fold(0, |n, r| Ok(n + usize::from(r?)))
}

/// The outbox partition of an item, by its key.
fn outbox_shard(key: &str) -> String {
    let hash = key
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (hash % OUTBOX_SHARDS).to_string()
}

fn outbox_key(event: &Event) -> String {
    format!("{}|{}", ts(event.occurred_at), event.id)
}

/// The events waiting in an item, as JSON, oldest first.
fn pending_in(item: &Item) -> Vec<String> {
    match item.get("outbox") {
        Some(AttributeValue::L(list)) => list.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
        _ => Vec::new(),
    }
}

/// Adds events to an item about to be written whole, keeping those already
/// waiting in it (`waiting`, read before).
fn attach_events(item: &mut Item, key: &str, waiting: Vec<String>, events: &[Event]) {
    let mut first_key = None;
    let mut list: Vec<AttributeValue> = waiting.into_iter().map(AttributeValue::S).collect();
    if let (Some(event), true) = (events.first(), list.is_empty()) {
        first_key = Some(outbox_key(event));
    }
    list.extend(events.iter().map(|e| AttributeValue::S(e.to_json())));
    if list.is_empty() {
        return;
    }
    item.insert("outbox_n".into(), n(list.len()));
    item.insert("outbox".into(), AttributeValue::L(list));
    item.insert("outbox_shard".into(), s(outbox_shard(key)));
    if let Some(k) = first_key {
        item.insert("outbox_key".into(), s(k));
    }
}

/// The update-expression part that appends `event` to an item's outbox.
const APPEND_EVENT: &str = "outbox = list_append(if_not_exists(outbox, :no_events), :event), \
     outbox_shard = if_not_exists(outbox_shard, :shard), outbox_key = if_not_exists(outbox_key, :okey) \
     ADD outbox_n :one";

fn append_values(key: &str, event: &Event) -> [(&'static str, AttributeValue); 5] {
    [
        (":no_events", AttributeValue::L(vec![])),
        (":event", AttributeValue::L(vec![AttributeValue::S(event.to_json())])),
        (":shard", s(outbox_shard(key))),
        (":okey", s(outbox_key(event))),
        (":one", n(1)),
    ]
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
        seen_at: opt_ts(item, "seen_at")?,
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

/// A global secondary index: its name, partition key, sort key, and the
/// attributes it projects besides the keys (`None`: all).
type IndexSpec = (&'static str, KeyAttr, KeyAttr, Option<&'static [&'static str]>);

/// The outbox index of a table whose items may hold events.
fn outbox_index() -> IndexSpec {
    use ScalarAttributeType::S;
    (
        OUTBOX_INDEX,
        ("outbox_shard", S),
        ("outbox_key", S),
        Some(&["outbox", "outbox_n"]),
    )
}

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
    indexes: Vec<IndexSpec>,
}

fn specs() -> Vec<TableSpec> {
    use ScalarAttributeType::{N, S};
    vec![
        TableSpec {
            name: "assets",
            hash: ("id", S),
            range: None,
            indexes: vec![("by_symbol", ("symbol", S), ("id", S), None), outbox_index()],
        },
        TableSpec {
            name: "bars",
            hash: ("series", S),
            range: Some(("t", N)),
            indexes: vec![],
        },
        TableSpec {
            name: "coverage",
            hash: ("series", S),
            range: Some(("start_ms", N)),
            indexes: vec![],
        },
        TableSpec {
            name: "runs",
            hash: ("run_id", S),
            range: None,
            indexes: vec![("by_start", ("kind", S), ("started", S), None), outbox_index()],
        },
        TableSpec {
            name: "run_pages",
            hash: ("run_id", S),
            range: Some(("page_id", S)),
            indexes: vec![],
        },
        TableSpec {
            name: "checkpoints",
            hash: ("id", S),
            range: None,
            indexes: vec![],
        },
    ]
}

fn gsi(index: &IndexSpec) -> Result<GlobalSecondaryIndex, StoreError> {
    let (name, (hash, _), (range, _), include) = index;
    let projection = match include {
        None => Projection::builder().projection_type(ProjectionType::All).build(),
        Some(attributes) => Projection::builder()
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(attributes.iter().map(|a| (*a).to_owned()).collect()))
            .build(),
    };
    GlobalSecondaryIndex::builder()
        .index_name(*name)
        .key_schema(key(hash, KeyType::Hash)?)
        .key_schema(key(range, KeyType::Range)?)
        .projection(projection)
        .build()
        .map_err(backend)
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
        for index in &spec.indexes {
            let (_, (hash, hash_kind), (range, range_kind), _) = index;
            for (name, kind) in [(hash, hash_kind), (range, range_kind)] {
                if !attributes.iter().any(|a| a.attribute_name() == *name) {
                    attributes.push(attribute(name, kind.clone())?);
                }
            }
            request = request.global_secondary_indexes(gsi(index)?);
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
            let table_desc = described.table();
            let indexes_active = table_desc
                .map(|t| t.global_secondary_indexes())
                .unwrap_or_default()
                .iter()
                .all(|i| i.index_status() == Some(&aws_sdk_dynamodb::types::IndexStatus::Active));
            if table_desc.and_then(|t| t.table_status()) == Some(&TableStatus::Active) && indexes_active {
                let existing: Vec<String> = table_desc
                    .map(|t| t.global_secondary_indexes())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| i.index_name().map(str::to_owned))
                    .collect();
                match spec.indexes.iter().find(|i| !existing.iter().any(|e| e == i.0)) {
                    None => return Ok(()),
                    // A table made by an older version lacks an index: add it
                    // (one at a time, as DynamoDB allows) and wait again.
                    Some(missing) => self.add_index(&table, missing).await?,
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Backend(format!(
            "table {table} did not become ACTIVE within 60 s"
        )))
    }

    async fn add_index(&self, table: &str, index: &IndexSpec) -> Result<(), StoreError> {
        let (name, (hash, hash_kind), (range, range_kind), _) = index;
        let built = gsi(index)?;
        let create = aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
            .index_name(*name)
            .set_key_schema(Some(built.key_schema().to_vec()))
            .set_projection(built.projection().cloned())
            .build()
            .map_err(backend)?;
        self.client
            .update_table()
            .table_name(table)
            .attribute_definitions(attribute(hash, hash_kind.clone())?)
            .attribute_definitions(attribute(range, range_kind.clone())?)
            .global_secondary_index_updates(
                aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                    .create(create)
                    .build(),
            )
            .send()
            .await
            .map_err(backend)?;
        Ok(())
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
                for request in &pending {
                    match request.put_request() {
                        Some(put) => self.counters.wrote(put.item()),
                        None => {
                            self.counters.write_units.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
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
                self.counters.reads.fetch_add(1, Ordering::Relaxed);
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
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
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
        let mut pages = request.into_paginator().send();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            self.counters.reads.fetch_add(1, Ordering::Relaxed);
            items.extend(page.map_err(backend)?.items().iter().cloned());
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
            self.counters.reads.fetch_add(1, Ordering::Relaxed);
            count += page.map_err(backend)?.count();
        }
        u32::try_from(count).map_err(|_| StoreError::Corrupt(format!("page count {count}")))
    }

    /// Appends one event to an item's outbox in one conditional update,
    /// together with `set` (the change itself). `Ok(false)` when the
    /// condition did not hold (nothing written).
    async fn update_with_event(
        &self,
        table: &str,
        key: (&str, &str),
        set: &str,
        condition: &str,
        values: Vec<(&'static str, AttributeValue)>,
        event: &Event,
    ) -> Result<bool, StoreError> {
        self.counters.single_write(2);
        let (set_part, add_part) = APPEND_EVENT.split_once(" ADD ").unwrap_or((APPEND_EVENT, ""));
        let mut request = self
            .client
            .update_item()
            .table_name(table)
            .key(key.0, s(key.1))
            .update_expression(format!("SET {set}, {set_part} ADD {add_part}"))
            .condition_expression(condition);
        for (name, value) in values.into_iter().chain(append_values(key.1, event)) {
            request = request.expression_attribute_values(name, value);
        }
        if condition.contains("#key") {
            request = request.expression_attribute_names("#key", key.0);
        }
        if set.contains("#status") {
            request = request
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#result", "result");
        }
        applied(request.send().await)
    }

    /// Puts a page record; with `first_only`, only if the page has none yet
    /// (`Ok(false)` when it had).
    async fn put_page(&self, run_id: &str, page: &PageRecord, first_only: bool) -> Result<bool, StoreError> {
        let item = page_item(run_id, page)?;
        self.counters.item_writes.fetch_add(1, Ordering::Relaxed);
        self.counters.wrote(&item);
        let mut put = self
            .client
            .put_item()
            .table_name(self.table("run_pages"))
            .set_item(Some(item));
        if first_only {
            put = put.condition_expression("attribute_not_exists(page_id)");
        }
        applied(put.send().await)
    }

    async fn decode_run(&self, item: &Item) -> Result<SyncRun, StoreError> {
        let run_id = req_s(item, "run_id")?.to_owned();
        let status = req_s(item, "status")?;
        let status = RunStatus::parse(status).ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?;
        let result = get_s(item, "result")?
            .map(|r| serde_json::from_str(r).map_err(|e| StoreError::Corrupt(format!("run result: {e}"))))
            .transpose()?;
        let claimed: i64 = get_n(item, "reconcile_claimed")?.unwrap_or(0);
        Ok(SyncRun {
            pages_done: self.pages_done(&run_id).await?,
            started_at: parse_ts(req_s(item, "started_at")?)?,
            pages_total: req_n(item, "pages_total")?,
            status,
            finished_at: opt_ts(item, "finished_at")?,
            result,
            published_at: opt_ts(item, "published_at")?,
            reconcile_claimed_at: (claimed > 0)
                .then(|| DateTime::from_timestamp_millis(claimed))
                .flatten(),
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
        let mut pages = request.into_paginator().send();
        let mut assets = Vec::new();
        while let Some(page) = pages.next().await {
            self.counters.reads.fetch_add(1, Ordering::Relaxed);
            for item in page.map_err(backend)?.items() {
                assets.push(decode_asset(item)?);
            }
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

    async fn upsert_assets_seen(
        &self,
        assets: &[Asset],
        at: DateTime<Utc>,
        run_id: Option<&str>,
    ) -> Result<Vec<AssetWrite>, StoreError> {
        let mut ids: Vec<&str> = assets.iter().map(|a| a.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let keys = ids
            .iter()
            .map(|id| HashMap::from([("id".to_owned(), s(*id))]))
            .collect();
        let mut stored: HashMap<String, StoredAsset> = HashMap::new();
        // Events still waiting in an item are carried into its new version.
        let mut waiting: HashMap<String, Vec<String>> = HashMap::new();
        let mut waiting_keys: HashMap<String, AttributeValue> = HashMap::new();
        for item in self.batch_get(&self.table("assets"), keys).await? {
            let asset = decode_asset(&item)?;
            let pending = pending_in(&item);
            if !pending.is_empty() {
                waiting.insert(asset.asset.id.clone(), pending);
                if let Some(k) = item.get("outbox_key") {
                    waiting_keys.insert(asset.asset.id.clone(), k.clone());
                }
            }
            stored.insert(asset.asset.id.clone(), asset);
        }
        let mut writes = Vec::with_capacity(assets.len());
        // The last version of an id wins, as with one upsert after another;
        // its events all stay.
        let mut items: HashMap<String, StoredAsset> = HashMap::new();
        let mut events: HashMap<String, Vec<Event>> = HashMap::new();
        for asset in assets {
            let plan = plan_asset(stored.get(&asset.id), asset, at, run_id);
            if let Some(event) = plan.event {
                events.entry(asset.id.clone()).or_default().push(event);
            }
            items.insert(asset.id.clone(), plan.after.clone());
            stored.insert(asset.id.clone(), plan.after);
            writes.push(plan.write);
        }
        // One whole-item put per asset: the change, the seen stamp and its
        // events land together (a single-item write is atomic).
        let mut puts = Vec::with_capacity(items.len());
        for (id, after) in items {
            let mut item = asset_item(&after)?;
            let new = events.remove(&id).unwrap_or_default();
            attach_events(&mut item, &id, waiting.remove(&id).unwrap_or_default(), &new);
            if let Some(k) = waiting_keys.remove(&id) {
                item.insert("outbox_key".into(), k);
            }
            puts.push(item);
        }
        self.batch_put(&self.table("assets"), puts).await?;
        Ok(writes)
    }

    async fn mark_seen(&self, ids: &[String], at: DateTime<Utc>) -> Result<usize, StoreError> {
        let table = self.table("assets");
        count_applied(ids, |id| {
            let table = table.clone();
            async move {
                self.counters.single_write(1);
                let result = self
                    .client
                    .update_item()
                    .table_name(table)
                    .key("id", s(id))
                    .update_expression("SET seen_at = :at")
                    .condition_expression("attribute_exists(#id) AND (attribute_not_exists(seen_at) OR seen_at < :at)")
                    .expression_attribute_names("#id", "id")
                    .expression_attribute_values(":at", s(ts(at)))
                    .send()
                    .await;
                applied(result)
            }
        })
        .await
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

    async fn mark_delisted(
        &self,
        ids: &[String],
        at: DateTime<Utc>,
        run_id: Option<&str>,
    ) -> Result<usize, StoreError> {
        let table = self.table("assets");
        count_applied(ids, |id| {
            let table = table.clone();
            async move {
                let key = HashMap::from([("id".to_owned(), s(&id))]);
                let Some(item) = self.get_item(&table, key).await? else {
                    return Ok(false);
                };
                let before = decode_asset(&item)?;
                if before.delisted_at.is_some() {
                    return Ok(false);
                }
                // The flag and its event, in one conditional update.
                let event = Event::delisted(&before, run_id, at);
                self.update_with_event(
                    &table,
                    ("id", &id),
                    "delisted_at = :at, updated_at = :at",
                    "attribute_exists(#key) AND attribute_not_exists(delisted_at)",
                    vec![(":at", s(ts(at)))],
                    &event,
                )
                .await
            }
        })
        .await
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

    async fn count_bars(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(self.table("bars"))
            .key_condition_expression("#series = :s AND t BETWEEN :a AND :b")
            .expression_attribute_names("#series", "series")
            .expression_attribute_values(":s", s(series.to_string()))
            .expression_attribute_values(":a", n(start.timestamp_millis()))
            .expression_attribute_values(":b", n(end.timestamp_millis()))
            .select(aws_sdk_dynamodb::types::Select::Count)
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut count = 0usize;
        while let Some(page) = pages.next().await {
            self.counters.reads.fetch_add(1, Ordering::Relaxed);
            count += usize::try_from(page.map_err(backend)?.count()).unwrap_or(0);
        }
        Ok(count)
    }

    async fn checkpoints(&self, keys: &[String]) -> Result<HashMap<String, String>, StoreError> {
        let mut unique: Vec<&String> = keys.iter().collect();
        unique.sort_unstable();
        unique.dedup();
        let request = unique
            .into_iter()
            .map(|key| HashMap::from([("id".to_owned(), s(key.as_str()))]))
            .collect();
        let mut found = HashMap::new();
        for item in self.batch_get(&self.table("checkpoints"), request).await? {
            found.insert(req_s(&item, "id")?.to_owned(), req_s(&item, "body")?.to_owned());
        }
        Ok(found)
    }

    async fn put_checkpoints(&self, entries: &[(String, String)]) -> Result<(), StoreError> {
        // One request may not name a key twice: the last body wins.
        let latest: HashMap<&str, &str> = entries.iter().map(|(k, b)| (k.as_str(), b.as_str())).collect();
        let now = ts(Utc::now());
        let items = latest
            .into_iter()
            .map(|(key, body)| {
                HashMap::from([
                    ("id".to_owned(), s(key)),
                    ("body".to_owned(), s(body)),
                    ("updated_at".to_owned(), s(now.clone())),
                ])
            })
            .collect();
        self.batch_put(&self.table("checkpoints"), items).await
    }

    async fn delete_checkpoints(&self, keys: &[String]) -> Result<(), StoreError> {
        let mut unique: Vec<&String> = keys.iter().collect();
        unique.sort_unstable();
        unique.dedup();
        let mut requests = Vec::with_capacity(unique.len());
        for key in unique {
            let delete = DeleteRequest::builder()
                .key("id", s(key.as_str()))
                .build()
                .map_err(backend)?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        self.batch_write(&self.table("checkpoints"), requests).await
    }

    async fn create_run(&self, run_id: &str, pages_total: u32, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.counters.single_write(1);
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

    async fn record_page(&self, run_id: &str, page: &PageRecord) -> Result<RunProgress, StoreError> {
        let run = self
            .get_item(&self.table("runs"), HashMap::from([("run_id".to_owned(), s(run_id))]))
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("sync run {run_id:?}")))?;
        let pages_total: u32 = req_n(&run, "pages_total")?;
        // Recorded before (condition failed): the first record stays.
        self.put_page(run_id, page, true).await?;
        Ok(RunProgress {
            pages_done: self.pages_done(run_id).await?,
            pages_total,
        })
    }

    async fn replace_page(&self, run_id: &str, page: &PageRecord) -> Result<(), StoreError> {
        self.put_page(run_id, page, false).await.map(drop)
    }

    async fn page_records(&self, run_id: &str) -> Result<Vec<PageRecord>, StoreError> {
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
                serde_json::from_str(req_s(item, "result")?)
                    .map_err(|e| StoreError::Corrupt(format!("page record: {e}")))
            })
            .collect()
    }

    async fn mark_published(&self, run_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.counters.single_write(1);
        let update = self
            .client
            .update_item()
            .table_name(self.table("runs"))
            .key("run_id", s(run_id))
            .update_expression("SET published_at = :at")
            .condition_expression("attribute_exists(run_id)")
            .expression_attribute_values(":at", s(ts(at)))
            .send()
            .await;
        if applied(update)? {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("sync run {run_id:?}")))
        }
    }

    async fn claim_reconcile(
        &self,
        run_id: &str,
        at: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<bool, StoreError> {
        let now = at.timestamp_millis();
        let stale = now - i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        self.counters.single_write(1);
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
        result: &RunTotals,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(result).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let event = Event::run_closed(run_id, status, result, at);
        let applied = self
            .update_with_event(
                &self.table("runs"),
                ("run_id", run_id),
                "#status = :status, #result = :result, finished_at = :at",
                "attribute_exists(#key)",
                vec![
                    (":status", s(status.as_str())),
                    (":result", s(body)),
                    (":at", s(ts(at))),
                ],
                &event,
            )
            .await?;
        if applied {
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

    async fn last_completed_run(&self) -> Result<Option<SyncRun>, StoreError> {
        let mut stream = self
            .client
            .query()
            .table_name(self.table("runs"))
            .index_name("by_start")
            .key_condition_expression("#kind = :k")
            .filter_expression("#status = :completed")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":k", s("run"))
            .expression_attribute_values(":completed", s(RunStatus::Completed.as_str()))
            .scan_index_forward(false)
            .into_paginator()
            .items()
            .send();
        let Some(item) = stream.next().await else {
            return Ok(None);
        };
        let item = item.map_err(backend)?;
        self.get_run(req_s(&item, "run_id")?).await
    }

    async fn pending_events(&self, limit: usize) -> Result<Vec<PendingEvent>, StoreError> {
        let per_shard = i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        // (outbox_key, events of one item, receipt)
        let mut found: Vec<(String, Vec<String>, String)> = Vec::new();
        for (table, key_name) in [("assets", "id"), ("runs", "run_id")] {
            let table = self.table(table);
            for shard in 0..OUTBOX_SHARDS {
                self.counters.reads.fetch_add(1, Ordering::Relaxed);
                let output = self
                    .client
                    .query()
                    .table_name(&table)
                    .index_name(OUTBOX_INDEX)
                    .key_condition_expression("outbox_shard = :s")
                    .expression_attribute_values(":s", s(shard.to_string()))
                    .limit(per_shard)
                    .send()
                    .await
                    .map_err(backend)?;
                for item in output.items() {
                    let okey = req_s(item, "outbox_key")?.to_owned();
                    let count: u64 = get_n(item, "outbox_n")?.unwrap_or(0);
                    let receipt = format!("{table}\n{key_name}\n{}\n{count}", req_s(item, key_name)?);
                    found.push((okey, pending_in(item), receipt));
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut pending = Vec::new();
        for (_, events, receipt) in found {
            if pending.len() >= limit {
                break;
            }
            for json in events {
                let event: Event =
                    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("outbox event: {e}")))?;
                pending.push(PendingEvent {
                    event,
                    receipt: receipt.clone(),
                });
            }
        }
        Ok(pending)
    }

    async fn events_sent(&self, sent: &[PendingEvent]) -> Result<(), StoreError> {
        let mut receipts: Vec<String> = sent.iter().map(|p| p.receipt.clone()).collect();
        receipts.sort_unstable();
        receipts.dedup();
        count_applied(&receipts, |receipt| async move {
            let parts: Vec<&str> = receipt.split('\n').collect();
            let [table, key_name, key, count] = parts[..] else {
                return Err(StoreError::Corrupt(format!("outbox receipt {receipt:?}")));
            };
            self.counters.single_write(1);
            // Only if no event was added since it was read: those would be lost.
            let result = self
                .client
                .update_item()
                .table_name(table)
                .key(key_name, s(key))
                .update_expression("REMOVE outbox, outbox_n, outbox_shard, outbox_key")
                .condition_expression("outbox_n = :n")
                .expression_attribute_values(":n", AttributeValue::N(count.to_owned()))
                .send()
                .await;
            applied(result)
        })
        .await
        .map(drop)
    }
}

fn page_item(run_id: &str, page: &PageRecord) -> Result<Item, StoreError> {
    let result = serde_json::to_string(page).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(HashMap::from([
        ("run_id".into(), s(run_id)),
        ("page_id".into(), s(&page.page_id)),
        ("result".into(), s(result)),
    ]))
}
