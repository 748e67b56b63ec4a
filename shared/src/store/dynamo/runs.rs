//! Sync runs on DynamoDB: the run item and its page records.

use super::*;

impl DynamoStore {
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
}

#[async_trait]
impl RunStore for DynamoStore {
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
}
