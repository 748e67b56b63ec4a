//! Batch reads and writes: BatchWriteItem 25 items a request and
//! BatchGetItem 100 keys a request, resending what DynamoDB leaves
//! unprocessed with capped, jittered back-off; single gets, paginated
//! queries, and conditional writes run 16 at a time.

use super::*;

/// Runs one conditional write per id, 16 at a time, and counts those applied.
pub(super) async fn count_applied<F, Fut>(ids: &[String], write: F) -> Result<usize, StoreError>
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

/// The pauses before resending unprocessed items: 100 ms doubling to 5 s.
pub(super) fn resend_backoff() -> crate::backoff::Backoff {
    crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

impl DynamoStore {
    /// Puts items with BatchWriteItem (see [`DynamoStore::batch_write`]).
    pub(super) async fn batch_put(&self, table: &str, items: Vec<Item>) -> Result<(), StoreError> {
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
    pub(super) async fn batch_write(&self, table: &str, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for chunk in requests.chunks(BATCH_WRITE_MAX) {
            let mut pending = chunk.to_vec();
            let (mut round, mut backoff) = (0, resend_backoff());
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
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Ok(())
    }

    /// Reads items by key with BatchGetItem, 100 keys a request, resending
    /// unprocessed keys; strongly consistent.
    pub(super) async fn batch_get(&self, table: &str, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::new();
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build()
                    .map_err(backend)?,
            );
            let (mut round, mut backoff) = (0, resend_backoff());
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
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        Ok(found)
    }

    pub(super) async fn get_item(&self, table: &str, key: Item) -> Result<Option<Item>, StoreError> {
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
    pub(super) async fn query_all(
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
}
