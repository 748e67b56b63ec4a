//! Assets on DynamoDB: the `assets` table and its symbol index; a change
//! and its event are one conditional write of one item.

use super::*;

impl DynamoStore {
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
impl AssetStore for DynamoStore {
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
}
