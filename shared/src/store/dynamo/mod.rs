//! The production store: Amazon DynamoDB.
//!
//! Seven tables, named `{prefix}-{name}`, all on-demand (pay per request):
//!
//! | table | partition key | sort key | what |
//! | --- | --- | --- | --- |
//! | `assets` | `id` (S) | | one item per asset id; indexes `by_symbol` (`symbol`, `id`) and `outbox` |
//! | `bar_chunks` | `series` (S, `AAPL\|1Day\|raw\|iex`) | `chunk` (N, epoch ms of the chunk's UTC start) | one item per chunk of bars (see [`super::chunk`]): `n`, `first_t`, `last_t`, `version`, `data` (B) |
//! | `coverage` | `series` (S) | `start_ms` (N) | closed ranges held in full; index `by_symbol` (`symbol`, `series`) |
//! | `runs` | `run_id` (S) | | one item per sync run; indexes `by_start` (`kind`, `started`) and `outbox` |
//! | `run_pages` | `run_id` (S) | `page_id` (S) | one item per recorded page (counts, never ids) |
//! | `checkpoints` | `id` (S) | | one small item per unfinished bar fetch and series (see [`crate::ingest`]) |
//! | `corporate_actions` | `id` (S) | | one item per corporate action applied to the bars; index `outbox` |
//!
//! Nothing grows with the universe in one item: which assets a sync saw is
//! the `seen_at` stamp on each asset item, and a page record holds counts.
//!
//! **The outbox lives in the changed item.** An event is written into the
//! very item whose change it describes (the asset, the run, or the applied
//! corporate action whose `bars.invalidated` events it holds), in the same
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
//! A chunk is written with a conditional PutItem on its `version` (absent
//! for a new chunk): a writer reads the chunk, merges its bars in, and
//! writes it back only if nobody wrote it meanwhile, else reads and merges
//! again, so two workers never lose each other's bars. Stores made before
//! chunks keep a `bars` table of one item per bar, read beside the chunks
//! until `migrate-store` has moved it into them and deleted it. Other
//! batches (coverage, assets) go with BatchWriteItem, 25 items a request,
//! and the items DynamoDB leaves unprocessed are sent again with capped,
//! jittered back-off.
//! Reads are strongly consistent where the contract needs it and paginate
//! to the end.
//!
//! The module: `encoding` (items to and from the store's types), `schema`
//! (tables, indexes, creation), `batch` (batch reads and writes with
//! resends), then one file per domain of the store: `assets`, `bars`,
//! `legacy`, `runs`, `outbox`; `init` (the whole [`Store`]) is here.

mod assets;
mod bars;
mod batch;
mod encoding;
mod legacy;
mod outbox;
mod runs;
mod schema;

use batch::*;
use encoding::*;
use schema::*;

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

use super::chunk::{self, Span};
use super::{
    plan_action, plan_asset, plan_delist, symbol_key_range, AssetFilter, AssetStore, AssetWrite, BarStore, LegacyPage,
    LegacyStore, OutboxStore, PageRecord, PendingEvent, RunProgress, RunStatus, RunStore, RunTotals, SeriesKey, Store,
    StoreError, StoredAsset, SyncRun,
};
use crate::events::Event;
use signal9_alpaca::{Asset, AssetStatus, Bar, CorporateAction, Symbol};

/// Items in one BatchWriteItem request (DynamoDB's limit).
pub(crate) const BATCH_WRITE_MAX: usize = 25;
/// Keys in one BatchGetItem request (DynamoDB's limit).
const BATCH_GET_MAX: usize = 100;
/// Rounds of resending unprocessed items before the write fails.
const UNPROCESSED_ROUNDS: u32 = 10;
/// Partitions the outbox index is spread over.
const OUTBOX_SHARDS: u32 = 8;
/// The sparse index of items with events waiting.
const OUTBOX_INDEX: &str = "outbox";
/// The per-bar table of versions before chunks (read until migrated).
const LEGACY_BARS: &str = "bars";
/// Attempts at a chunk write that other writers keep changing.
const CHUNK_ATTEMPTS: u32 = 30;
/// The largest chunk item written; far above any chunk the spans allow,
/// far below DynamoDB's 400 KB.
const MAX_CHUNK_BYTES: usize = 350_000;
/// The coverage index that finds every series of a symbol.
const COVERAGE_BY_SYMBOL: &str = "by_symbol";
/// The tables whose items may hold events, and their key attribute.
const OUTBOX_TABLES: [(&str, &str); 3] = [("assets", "id"), ("runs", "run_id"), ("corporate_actions", "id")];

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
    /// Read requests (GetItem, BatchGetItem, each page of a Query or Scan).
    pub reads: AtomicU64,
    /// Conditional chunk writes refused because another writer changed the
    /// chunk first (each is read, merged and written again).
    pub chunk_conflicts: AtomicU64,
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
    /// Whether the per-bar table of versions before chunks still holds
    /// bars: 0 not known yet, 1 no, 2 yes (reads then consult it too).
    legacy: Arc<std::sync::atomic::AtomicU8>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore").field("prefix", &self.prefix).finish()
    }
}

/// A table prefix: 3-200 characters of a-z, A-Z, 0-9, `_`, `-` and `.`.
pub(crate) fn parse_table_prefix(text: &str) -> Result<String, String> {
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

impl DynamoStore {
    /// A store over `client` whose tables are named `{prefix}-assets` and so on.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        DynamoStore {
            client,
            prefix: prefix.into(),
            counters: Arc::new(DynamoCounters::default()),
            legacy: Arc::new(std::sync::atomic::AtomicU8::new(0)),
        }
    }

    /// Connects with an SDK configuration (see [`crate::aws::AwsTarget`]).
    pub fn from_config(config: &aws_config::SdkConfig, prefix: impl Into<String>) -> Self {
        DynamoStore::new(Client::new(config), prefix)
    }

    /// The names of the tables `init` creates (each `{prefix}-{name}`).
    pub const TABLES: [&'static str; 7] = [
        "assets",
        "bar_chunks",
        "coverage",
        "runs",
        "run_pages",
        "checkpoints",
        "corporate_actions",
    ];

    /// The requests sent so far.
    pub fn counters(&self) -> &DynamoCounters {
        &self.counters
    }

    /// The full name of one of the store's tables.
    pub fn table(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn init(&self) -> Result<(), StoreError> {
        for spec in specs() {
            let added = self.create_table(&spec).await?;
            if added.contains(&COVERAGE_BY_SYMBOL) {
                // Coverage written before the index lacks the `symbol` it reads.
                self.backfill_coverage_symbols().await?;
            }
        }
        Ok(())
    }
}
