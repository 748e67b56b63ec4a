//! The per-bar table of versions before chunks: read beside the chunks
//! until `migrate-store` has moved it, then deleted.

use super::*;

impl DynamoStore {
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
    pub(super) async fn legacy_bars_of(&self, key: &str, lo: i64, hi: i64) -> Result<Vec<Bar>, StoreError> {
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
}

#[async_trait]
impl LegacyStore for DynamoStore {
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
}
