//! The [`Store`] implementation on DynamoDB, and the reads and conditional
//! writes it is built from.

use super::*;
use crate::store::LegacyPage;

/// What recording one range of coverage writes.
#[derive(Debug)]
pub(super) struct CoveragePlan {
    series: String,
    lo: i64,
    hi: i64,
    swallowed: Vec<i64>,
}

impl DynamoStore {
    /// The merged range of one series' coverage with `[lo, hi]`, and the
    /// recorded ranges it swallows.
    pub(super) async fn plan_coverage(&self, series: String, lo: i64, hi: i64) -> Result<CoveragePlan, StoreError> {
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

    /// Sets `symbol` on coverage items written before the `by_symbol`
    /// index existed, so the index finds them. Reads the table once.
    pub(super) async fn backfill_coverage_symbols(&self) -> Result<(), StoreError> {
        let table = self.table("coverage");
        let mut pages = self
            .client
            .scan()
            .table_name(&table)
            .filter_expression("attribute_not_exists(symbol)")
            .into_paginator()
            .send();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            self.counters.reads.fetch_add(1, Ordering::Relaxed);
            items.extend(page.map_err(backend)?.items().iter().cloned());
        }
        let items: Vec<Item> = items
            .iter()
            .map(|item| {
                Ok(coverage_item(
                    req_s(item, "series")?,
                    req_n(item, "start_ms")?,
                    req_n(item, "end_ms")?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        tracing::info!(items = items.len(), table = %table, "Coverage items given their symbol for the by_symbol index");
        self.batch_put(&table, items).await
    }

    /// The keys of every series of `symbol` the store holds coverage for,
    /// or an unfinished fetch among `checkpoints` (the symbol's checkpoint
    /// ids, read once by the caller). Bars with neither, of a range not yet
    /// settled, are fetched again anyway.
    pub(super) async fn series_of_symbol(
        &self,
        symbol: &Symbol,
        checkpoints: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let request = self
            .client
            .query()
            .table_name(self.table("coverage"))
            .index_name(COVERAGE_BY_SYMBOL)
            .key_condition_expression("symbol = :s")
            .expression_attribute_values(":s", s(symbol.as_str()));
        let mut keys: Vec<String> = self
            .query_all(request)
            .await?
            .iter()
            .map(|item| req_s(item, "series").map(str::to_owned))
            .collect::<Result<_, _>>()?;
        keys.extend(checkpoints.iter().filter_map(|id| checkpoint_series(id)));
        Ok(keys)
    }

    /// The ids of the bar-fetch checkpoints of `symbol`'s series (a scan
    /// of the checkpoints table, which holds only unfinished fetches).
    async fn checkpoints_of_symbol(&self, symbol: &Symbol) -> Result<Vec<String>, StoreError> {
        let (prefix, _) = symbol_key_range(symbol);
        let mut pages = self
            .client
            .scan()
            .table_name(self.table("checkpoints"))
            .filter_expression("begins_with(id, :p)")
            .expression_attribute_values(":p", s(format!("bars|{prefix}")))
            .projection_expression("id")
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut ids = Vec::new();
        while let Some(page) = pages.next().await {
            self.counters.reads.fetch_add(1, Ordering::Relaxed);
            for item in page.map_err(backend)?.items() {
                ids.push(req_s(item, "id")?.to_owned());
            }
        }
        Ok(ids)
    }

    /// Deletes every item of one partition (`key` = `value`) of a table
    /// whose sort key is `sort`.
    async fn delete_partition(&self, table: &str, key: &str, value: &str, sort: &str) -> Result<usize, StoreError> {
        let request = self
            .client
            .query()
            .table_name(table)
            .key_condition_expression("#k = :v")
            .expression_attribute_names("#k", key)
            .expression_attribute_names("#s", sort)
            .expression_attribute_values(":v", s(value))
            .projection_expression("#k, #s")
            .consistent_read(true);
        let items = self.query_all(request).await?;
        let count = items.len();
        let requests = items
            .into_iter()
            .map(|key| {
                let delete = DeleteRequest::builder().set_key(Some(key)).build().map_err(backend)?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.batch_write(table, requests).await?;
        Ok(count)
    }

    /// True while the per-bar table of versions before chunks holds bars
    /// (checked once, then remembered; `migrate-store` empties it).
    pub(super) async fn has_legacy(&self) -> Result<bool, StoreError> {
        match self.legacy.load(Ordering::Relaxed) {
            1 => return Ok(false),
            2 => return Ok(true),
            _ => {}
        }
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let scan = self
            .client
            .scan()
            .table_name(self.table(LEGACY_BARS))
            .limit(1)
            .send()
            .await;
        let present = match scan {
            Ok(output) => !output.items().is_empty(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                false
            }
            Err(e) => return Err(backend(e)),
        };
        self.legacy.store(if present { 2 } else { 1 }, Ordering::Relaxed);
        Ok(present)
    }

    /// Bars of the per-bar table with `lo <= t <= hi`; none when the table
    /// is gone (migrated meanwhile by another process).
    async fn legacy_bars_of(&self, key: &str, lo: i64, hi: i64) -> Result<Vec<Bar>, StoreError> {
        let request = self
            .client
            .query()
            .table_name(self.table(LEGACY_BARS))
            .key_condition_expression("#series = :s AND #t BETWEEN :a AND :b")
            .expression_attribute_names("#series", "series")
            .expression_attribute_names("#t", "t")
            .expression_attribute_values(":s", s(key))
            .expression_attribute_values(":a", n(lo))
            .expression_attribute_values(":b", n(hi))
            .consistent_read(true);
        match self.query_all(request).await {
            Ok(items) => items.iter().map(decode_bar).collect(),
            Err(StoreError::Backend(m)) if m.contains("ResourceNotFound") || m.contains("not found") => {
                self.legacy.store(1, Ordering::Relaxed);
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// The series' bars with `start <= t <= end`, from its chunks (one
    /// Query) and, while one is left, the per-bar table (a chunk's bar wins).
    pub(super) async fn read_bars(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        with_legacy: bool,
    ) -> Result<Vec<Bar>, StoreError> {
        if end < start {
            return Ok(Vec::new());
        }
        let key = series.to_string();
        let (lo, hi) = (start.timestamp_millis(), end.timestamp_millis());
        let request = self
            .client
            .query()
            .table_name(self.table("bar_chunks"))
            .key_condition_expression("#series = :s AND #chunk BETWEEN :a AND :b")
            .expression_attribute_names("#series", "series")
            .expression_attribute_names("#chunk", "chunk")
            .expression_attribute_values(":s", s(&key))
            .expression_attribute_values(":a", n(Span::of(series.timeframe).chunk_of(start)))
            .expression_attribute_values(":b", n(hi))
            .consistent_read(true);
        let mut bars = Vec::new();
        for item in self.query_all(request).await? {
            bars.extend(
                decode_chunk_item(&key, &item)?
                    .into_iter()
                    .filter(|b| (lo..=hi).contains(&b.time.timestamp_millis())),
            );
        }
        if with_legacy && self.has_legacy().await? {
            let legacy = self.legacy_bars_of(&key, lo, hi).await?;
            if !legacy.is_empty() {
                bars = chunk::merge(legacy, &bars, true);
            }
        }
        Ok(bars)
    }

    /// Merges bars into their chunks, each chunk concurrently (see
    /// [`DynamoStore::merge_chunk`]). Returns how many bars were given.
    pub(super) async fn merge_sets(&self, sets: &[(SeriesKey, Vec<Bar>)], new_wins: bool) -> Result<usize, StoreError> {
        let (chunks, given) = chunk::group(sets);
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(chunks)
            .map(|((key, start), bars)| async move { self.merge_chunk(&key, start, &bars, new_wins).await })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(given)
    }

    /// Reads one chunk, merges `bars` in and writes it back on the
    /// condition that its version is still the one read (or that it still
    /// does not exist); when another writer got there first, does it again.
    async fn merge_chunk(&self, key: &str, start: i64, bars: &[Bar], new_wins: bool) -> Result<(), StoreError> {
        let table = self.table("bar_chunks");
        let new = chunk::dedup_last_wins(bars);
        let mut backoff = resend_backoff();
        for _ in 0..CHUNK_ATTEMPTS {
            let id = HashMap::from([("series".to_owned(), s(key)), ("chunk".to_owned(), n(start))]);
            let stored = self.get_item(&table, id).await?;
            let (old, version) = match &stored {
                Some(item) => (decode_chunk_item(key, item)?, req_n::<u64>(item, "version")?),
                None => (Vec::new(), 0),
            };
            let merged = chunk::merge(old, &new, new_wins);
            let (Some(first), Some(last)) = (merged.first(), merged.last()) else {
                return Ok(());
            };
            let item = HashMap::from([
                ("series".to_owned(), s(key)),
                ("chunk".to_owned(), n(start)),
                ("n".to_owned(), n(merged.len())),
                ("first_t".to_owned(), n(first.time.timestamp_millis())),
                ("last_t".to_owned(), n(last.time.timestamp_millis())),
                ("version".to_owned(), n(version + 1)),
                (
                    "data".to_owned(),
                    AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(chunk::encode(&merged))),
                ),
            ]);
            let size = item_size(&item);
            if size > MAX_CHUNK_BYTES {
                return Err(StoreError::Corrupt(format!(
                    "the chunk of {key} at {start} would be {size} bytes, over {MAX_CHUNK_BYTES}"
                )));
            }
            self.counters.item_writes.fetch_add(1, Ordering::Relaxed);
            self.counters.wrote(&item);
            let mut put = self.client.put_item().table_name(&table).set_item(Some(item));
            put = match stored {
                Some(_) => put
                    .condition_expression("version = :v")
                    .expression_attribute_values(":v", n(version)),
                None => put.condition_expression("attribute_not_exists(series)"),
            };
            if applied(put.send().await)? {
                return Ok(());
            }
            self.counters.chunk_conflicts.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff.next_delay()).await;
        }
        Err(StoreError::Backend(format!(
            "the chunk of {key} at {start} changed under {CHUNK_ATTEMPTS} attempts in a row"
        )))
    }

    pub(super) async fn pages_done(&self, run_id: &str) -> Result<u32, StoreError> {
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
    pub(super) async fn update_with_event(
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
    pub(super) async fn put_page(&self, run_id: &str, page: &PageRecord, first_only: bool) -> Result<bool, StoreError> {
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

    pub(super) async fn decode_run(&self, item: &Item) -> Result<SyncRun, StoreError> {
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

    pub(super) async fn scan_assets(&self, filter: &AssetFilter) -> Result<Vec<StoredAsset>, StoreError> {
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
            let added = self.create_table(&spec).await?;
            if added.contains(&COVERAGE_BY_SYMBOL) {
                // Coverage written before the index lacks the `symbol` it reads.
                self.backfill_coverage_symbols().await?;
            }
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
                let Some(event) = plan_delist(&before, at, run_id) else {
                    return Ok(false);
                };
                // The flag and its event, in one conditional update.
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
        self.merge_sets(sets, true).await
    }

    async fn bars(&self, series: &SeriesKey, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Vec<Bar>, StoreError> {
        self.read_bars(series, start, end, true).await
    }

    async fn chunked_bars(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<Bar>, StoreError> {
        self.read_bars(series, start, end, false).await
    }

    async fn legacy_bars(&self, after: Option<&str>, limit: usize) -> Result<Option<LegacyPage>, StoreError> {
        let mut request = self
            .client
            .scan()
            .table_name(self.table(LEGACY_BARS))
            .limit(i32::try_from(limit.clamp(1, 100_000)).unwrap_or(1000))
            .consistent_read(true);
        if let Some(position) = after {
            let (series, t) = position
                .rsplit_once('\u{1f}')
                .ok_or_else(|| StoreError::Corrupt(format!("migration position {position:?}")))?;
            request = request
                .exclusive_start_key("series", s(series))
                .exclusive_start_key("t", AttributeValue::N(t.to_owned()));
        }
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let output = match request.send().await {
            Ok(output) => output,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(backend(e)),
        };
        let bars = output
            .items()
            .iter()
            .map(|item| Ok((req_s(item, "series")?.to_owned(), decode_bar(item)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = match output.last_evaluated_key() {
            Some(key) => Some(format!("{}\u{1f}{}", req_s(key, "series")?, req_n::<i64>(key, "t")?)),
            None => None,
        };
        Ok(Some(LegacyPage { bars, next }))
    }

    async fn merge_legacy_bars(&self, sets: &[(SeriesKey, Vec<Bar>)]) -> Result<usize, StoreError> {
        self.merge_sets(sets, false).await
    }

    async fn drop_legacy_bars(&self) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_table()
            .table_name(self.table(LEGACY_BARS))
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) => {}
            Err(e) => return Err(backend(e)),
        }
        self.legacy.store(1, Ordering::Relaxed);
        Ok(())
    }

    #[cfg(feature = "test-support")]
    async fn put_legacy_bars(&self, series: &SeriesKey, bars: &[Bar]) -> Result<(), StoreError> {
        self.create_legacy_table().await?;
        let key = series.to_string();
        self.batch_put(
            &self.table(LEGACY_BARS),
            bars.iter().map(|b| bar_item(&key, b)).collect(),
        )
        .await?;
        self.legacy.store(0, Ordering::Relaxed);
        Ok(())
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
            let item = coverage_item(&plan.series, plan.lo, plan.hi);
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
        Ok(self
            .covered_until(series, start)
            .await?
            .is_some_and(|until| until >= end))
    }

    async fn covered_until(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
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
            Some(item) => {
                let end = req_n::<i64>(item, "end_ms")?;
                Ok((end >= start.timestamp_millis())
                    .then(|| DateTime::from_timestamp_millis(end))
                    .flatten())
            }
            None => Ok(None),
        }
    }

    async fn count_bars(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        Ok(self.read_bars(series, start, end, true).await?.len())
    }

    async fn apply_action(
        &self,
        action: &CorporateAction,
        at: DateTime<Utc>,
    ) -> Result<Option<Vec<SeriesKey>>, StoreError> {
        let table = self.table("corporate_actions");
        let key = HashMap::from([("id".to_owned(), s(&action.id))]);
        if self.get_item(&table, key).await?.is_some() {
            return Ok(None);
        }
        let checkpoints = self.checkpoints_of_symbol(&action.symbol).await?;
        let series = self.series_of_symbol(&action.symbol, &checkpoints).await?;
        let planned = plan_action(action, &series, at);
        // Coverage first, so no reader is answered from bars being removed;
        // then the bars and any unfinished fetch of the series.
        for (series, _) in &planned {
            let key = series.to_string();
            self.delete_partition(&self.table("coverage"), "series", &key, "start_ms")
                .await?;
            self.delete_partition(&self.table("bar_chunks"), "series", &key, "chunk")
                .await?;
            if self.has_legacy().await? {
                self.delete_partition(&self.table(LEGACY_BARS), "series", &key, "t")
                    .await?;
            }
            let stale: Vec<String> = checkpoints
                .iter()
                .filter(|id| checkpoint_series(id).as_deref() == Some(key.as_str()))
                .cloned()
                .collect();
            self.delete_checkpoints(&stale).await?;
        }
        // The record of the action carries the events; written last, so an
        // interrupted apply is done again whole by the next check.
        let events: Vec<Event> = planned.iter().map(|(_, e)| e.clone()).collect();
        let mut item = HashMap::from([
            ("id".to_owned(), s(&action.id)),
            ("symbol".to_owned(), s(action.symbol.as_str())),
            ("kind".to_owned(), s(action.kind.as_str())),
            ("ex_date".to_owned(), s(action.ex_date.to_string())),
            ("terms".to_owned(), s(&action.terms)),
            ("applied_at".to_owned(), s(ts(at))),
            ("series_dropped".to_owned(), n(planned.len())),
        ]);
        attach_events(&mut item, &action.id, Vec::new(), &events);
        self.counters.item_writes.fetch_add(1, Ordering::Relaxed);
        self.counters.wrote(&item);
        let put = self
            .client
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        if !applied(put)? {
            return Ok(None);
        }
        Ok(Some(planned.into_iter().map(|(k, _)| k).collect()))
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
        Ok(self.recent_runs(1).await?.into_iter().next())
    }

    async fn recent_runs(&self, limit: usize) -> Result<Vec<SyncRun>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(self.table("runs"))
            .index_name("by_start")
            .key_condition_expression("#kind = :k")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":k", s("run"))
            .scan_index_forward(false)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(backend)?;
        let mut runs = Vec::new();
        for item in output.items().iter().take(limit) {
            if let Some(run) = self.get_run(req_s(item, "run_id")?).await? {
                runs.push(run);
            }
        }
        Ok(runs)
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
        // Every shard of every outbox table, several at once.
        let shards = OUTBOX_TABLES.len() as u32 * OUTBOX_SHARDS;
        let answers: Vec<Result<Vec<(String, Vec<String>, String)>, StoreError>> = futures::stream::iter(0..shards)
            .map(|n| async move {
                let (table, key_name) = OUTBOX_TABLES[(n / OUTBOX_SHARDS) as usize];
                let shard = n % OUTBOX_SHARDS;
                let table = self.table(table);
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
                // (outbox_key, events of one item, receipt)
                let mut found = Vec::new();
                for item in output.items() {
                    let okey = req_s(item, "outbox_key")?.to_owned();
                    let count: u64 = get_n(item, "outbox_n")?.unwrap_or(0);
                    let receipt = format!("{table}\n{key_name}\n{}\n{count}", req_s(item, key_name)?);
                    found.push((okey, pending_in(item), receipt));
                }
                Ok(found)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut found = Vec::new();
        for answer in answers {
            found.extend(answer?);
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
