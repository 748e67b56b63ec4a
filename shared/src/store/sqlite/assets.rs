//! Assets in SQLite: the `assets` table, each change with its event in
//! the outbox in the same transaction.

use super::*;

pub(super) const ASSET_COLUMNS: &str =
    "body, first_seen, updated_at, delisted_at, previous_status, previous_tradable, status_changed_at, seen_at";

pub(super) type AssetRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<String>,
);

pub(super) fn read_asset_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AssetRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

pub(super) fn decode_asset(row: AssetRow) -> Result<StoredAsset, StoreError> {
    let (body, first_seen, updated_at, delisted_at, previous_status, previous_tradable, status_changed_at, seen_at) =
        row;
    let asset: Asset = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("asset body: {e}")))?;
    let previous_status = previous_status
        .map(|s| s.parse::<AssetStatus>().map_err(StoreError::Corrupt))
        .transpose()?;
    Ok(StoredAsset {
        asset,
        first_seen: parse_ts(&first_seen)?,
        updated_at: parse_ts(&updated_at)?,
        delisted_at: parse_opt_ts(delisted_at)?,
        previous_status,
        previous_tradable,
        status_changed_at: parse_opt_ts(status_changed_at)?,
        seen_at: parse_opt_ts(seen_at)?,
    })
}

pub(super) fn query_assets(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<StoredAsset>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(backend)?;
    let rows = stmt.query_map(args, read_asset_row).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(decode_asset)).collect()
}

pub(super) fn get_asset_tx(conn: &Connection, id: &str) -> Result<Option<StoredAsset>, StoreError> {
    let sql = format!("SELECT {ASSET_COLUMNS} FROM assets WHERE id = ?1");
    let row = conn
        .query_row(&sql, params![id], read_asset_row)
        .optional()
        .map_err(backend)?;
    row.map(decode_asset).transpose()
}

#[async_trait]
impl AssetStore for SqliteStore {
    async fn upsert_assets_seen(
        &self,
        assets: &[Asset],
        at: DateTime<Utc>,
        run_id: Option<&str>,
    ) -> Result<Vec<AssetWrite>, StoreError> {
        let assets = assets.to_vec();
        let run_id = run_id.map(str::to_owned);
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            let mut writes = Vec::with_capacity(assets.len());
            for asset in &assets {
                let stored = get_asset_tx(&tx, &asset.id)?;
                let plan = plan_asset(stored.as_ref(), asset, at, run_id.as_deref());
                let after = &plan.after;
                if plan.rewrite {
                    let body = encode(&after.asset)?;
                    tx.execute(
                        "INSERT INTO assets (id, symbol, class, status, body, first_seen, updated_at, delisted_at,
                                             previous_status, previous_tradable, status_changed_at, seen_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9, ?10, ?11)
                         ON CONFLICT (id) DO UPDATE SET symbol = ?2, class = ?3, status = ?4, body = ?5,
                             updated_at = ?7, delisted_at = NULL, previous_status = ?8, previous_tradable = ?9,
                             status_changed_at = ?10, seen_at = ?11",
                        params![
                            asset.id,
                            asset.symbol.as_str(),
                            asset.class.as_str(),
                            asset.status.as_str(),
                            body,
                            ts(after.first_seen),
                            ts(after.updated_at),
                            after.previous_status.map(AssetStatus::as_str),
                            after.previous_tradable,
                            after.status_changed_at.map(ts),
                            after.seen_at.map(ts),
                        ],
                    )
                    .map_err(backend)?;
                } else {
                    tx.execute(
                        "UPDATE assets SET seen_at = ?2 WHERE id = ?1",
                        params![asset.id, after.seen_at.map(ts)],
                    )
                    .map_err(backend)?;
                }
                enqueue_events(&tx, plan.event.as_ref())?;
                writes.push(plan.write);
            }
            tx.commit().map_err(backend)?;
            Ok(writes)
        })
        .await
    }

    async fn mark_seen(&self, ids: &[String], at: DateTime<Utc>) -> Result<usize, StoreError> {
        let ids = ids.to_vec();
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            let mut changed = 0;
            {
                let mut stmt = tx
                    .prepare("UPDATE assets SET seen_at = ?2 WHERE id = ?1 AND (seen_at IS NULL OR seen_at < ?2)")
                    .map_err(backend)?;
                for id in &ids {
                    changed += stmt.execute(params![id, ts(at)]).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)?;
            Ok(changed)
        })
        .await
    }

    async fn get_asset(&self, id: &str) -> Result<Option<StoredAsset>, StoreError> {
        let id = id.to_owned();
        self.with(move |conn| get_asset_tx(conn, &id)).await
    }

    async fn assets_by_symbol(&self, symbol: &Symbol) -> Result<Vec<StoredAsset>, StoreError> {
        let symbol = symbol.to_string();
        self.with(move |conn| {
            let sql = format!("SELECT {ASSET_COLUMNS} FROM assets WHERE symbol = ?1 ORDER BY id");
            query_assets(conn, &sql, params![symbol])
        })
        .await
    }

    async fn list_assets(&self, filter: &AssetFilter) -> Result<Vec<StoredAsset>, StoreError> {
        let filter = filter.clone();
        self.with(move |conn| {
            let sql = format!(
                "SELECT {ASSET_COLUMNS} FROM assets
                 WHERE (?1 IS NULL OR class = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 OR delisted_at IS NULL)
                 ORDER BY symbol, id"
            );
            let class = filter.class.map(|c| c.as_str());
            let status = filter.status.map(AssetStatus::as_str);
            query_assets(conn, &sql, params![class, status, filter.include_delisted])
        })
        .await
    }

    async fn mark_delisted(
        &self,
        ids: &[String],
        at: DateTime<Utc>,
        run_id: Option<&str>,
    ) -> Result<usize, StoreError> {
        let ids = ids.to_vec();
        let run_id = run_id.map(str::to_owned);
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            let mut changed = 0;
            for id in &ids {
                let Some(before) = get_asset_tx(&tx, id)? else {
                    continue;
                };
                let Some(event) = plan_delist(&before, at, run_id.as_deref()) else {
                    continue;
                };
                tx.execute(
                    "UPDATE assets SET delisted_at = ?2, updated_at = ?2 WHERE id = ?1",
                    params![id, ts(at)],
                )
                .map_err(backend)?;
                enqueue_events(&tx, [&event])?;
                changed += 1;
            }
            tx.commit().map_err(backend)?;
            Ok(changed)
        })
        .await
    }
}
