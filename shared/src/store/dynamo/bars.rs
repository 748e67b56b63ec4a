//! Bars on DynamoDB: compressed chunks (`bar_chunks`), the ranges held in
//! full (`coverage`), corporate actions and fetch checkpoints.

use super::*;
use crate::store::legacy::merge_legacy;

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
    pub(super) async fn checkpoints_of_symbol(&self, symbol: &Symbol) -> Result<Vec<String>, StoreError> {
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
    pub(super) async fn delete_partition(
        &self,
        table: &str,
        key: &str,
        value: &str,
        sort: &str,
    ) -> Result<usize, StoreError> {
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
            bars = merge_legacy(bars, self.legacy_bars_of(&key, lo, hi).await?);
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
    pub(super) async fn merge_chunk(
        &self,
        key: &str,
        start: i64,
        bars: &[Bar],
        new_wins: bool,
    ) -> Result<(), StoreError> {
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
}

#[async_trait]
impl BarStore for DynamoStore {
    async fn upsert_bar_sets(&self, sets: &[(SeriesKey, Vec<Bar>)]) -> Result<usize, StoreError> {
        self.merge_sets(sets, true).await
    }

    async fn bars(&self, series: &SeriesKey, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Vec<Bar>, StoreError> {
        self.read_bars(series, start, end, true).await
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
}
