//! The outbox on DynamoDB: sharded items read oldest first, and the
//! conditional update that writes a change with its event.

use super::*;

impl DynamoStore {
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
}

#[async_trait]
impl OutboxStore for DynamoStore {
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
