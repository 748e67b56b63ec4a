//! Bars in SQLite: compressed chunks (`bar_chunks`), the ranges held in
//! full (`coverage`), corporate actions and fetch checkpoints.

use super::series::{has_legacy_bars, merge_sets, read_bars};
use super::*;

/// Records `[lo, hi]` for one series: every recorded range that overlaps or
/// touches it merges into it.
pub(super) fn merge_coverage(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    mut lo: i64,
    mut hi: i64,
) -> Result<(), StoreError> {
    let overlapping: Vec<(i64, i64)> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT start_ms, end_ms FROM coverage WHERE series = ?1 AND start_ms <= ?3 AND end_ms >= ?2",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![key, lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)?
    };
    for (s, e) in overlapping {
        lo = lo.min(s);
        hi = hi.max(e);
        tx.execute(
            "DELETE FROM coverage WHERE series = ?1 AND start_ms = ?2",
            params![key, s],
        )
        .map_err(backend)?;
    }
    tx.execute(
        "INSERT INTO coverage (series, start_ms, end_ms) VALUES (?1, ?2, ?3)",
        params![key, lo, hi],
    )
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl BarStore for SqliteStore {
    async fn apply_action(
        &self,
        action: &CorporateAction,
        at: DateTime<Utc>,
    ) -> Result<Option<Vec<SeriesKey>>, StoreError> {
        let action = action.clone();
        self.with(move |conn| {
            // One transaction: the drops, the events and the record of the action.
            let tx = write_tx(conn)?;
            let applied: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM corporate_actions WHERE id = ?1)",
                    params![action.id],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if applied {
                return Ok(None);
            }
            let (lo, hi) = symbol_key_range(&action.symbol);
            let mut keys: Vec<String> = Vec::new();
            let mut tables = vec!["coverage", "bar_chunks"];
            if has_legacy_bars(&tx)? {
                tables.push("bars");
            }
            for table in tables {
                let mut stmt = tx
                    .prepare(&format!(
                        "SELECT DISTINCT series FROM {table} WHERE series >= ?1 AND series < ?2"
                    ))
                    .map_err(backend)?;
                let rows = stmt.query_map(params![lo, hi], |r| r.get(0)).map_err(backend)?;
                keys.extend(rows.collect::<Result<Vec<String>, _>>().map_err(backend)?);
            }
            let planned = plan_action(&action, &keys, at);
            for (series, _) in &planned {
                let key = series.to_string();
                tx.execute("DELETE FROM coverage WHERE series = ?1", params![key])
                    .map_err(backend)?;
                tx.execute("DELETE FROM bar_chunks WHERE series = ?1", params![key])
                    .map_err(backend)?;
                if has_legacy_bars(&tx)? {
                    tx.execute("DELETE FROM bars WHERE series = ?1", params![key])
                        .map_err(backend)?;
                }
                // An unfinished fetch of the series must not go on from bars that are gone.
                tx.execute(
                    "DELETE FROM checkpoints WHERE key >= ?1 AND key < ?2",
                    params![format!("bars|{key}|"), format!("bars|{key}}}")],
                )
                .map_err(backend)?;
            }
            enqueue_events(&tx, planned.iter().map(|(_, e)| e))?;
            tx.execute(
                "INSERT INTO corporate_actions (id, symbol, kind, ex_date, terms, applied_at, series_dropped)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    action.id,
                    action.symbol.as_str(),
                    action.kind.as_str(),
                    action.ex_date.to_string(),
                    action.terms,
                    ts(at),
                    planned.len()
                ],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(Some(planned.into_iter().map(|(k, _)| k).collect()))
        })
        .await
    }

    async fn upsert_bar_sets(&self, sets: &[(SeriesKey, Vec<Bar>)]) -> Result<usize, StoreError> {
        // One transaction for every set: one write lock, one commit; each
        // chunk read, merged and written back once.
        let sets = sets.to_vec();
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            let written = merge_sets(&tx, &sets, true)?;
            tx.commit().map_err(backend)?;
            Ok(written)
        })
        .await
    }

    async fn bars(&self, series: &SeriesKey, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Vec<Bar>, StoreError> {
        let series = series.clone();
        self.with_reader(move |conn| read_bars(conn, &series, start, end, true))
            .await
    }

    async fn add_coverage_many(
        &self,
        series: &[SeriesKey],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = series.iter().map(SeriesKey::to_string).collect();
        let (start, end) = (start.timestamp_millis(), end.timestamp_millis());
        self.with(move |conn| {
            // One transaction for every series.
            let tx = write_tx(conn)?;
            for key in &keys {
                merge_coverage(&tx, key, start, end)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn covers(&self, series: &SeriesKey, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<bool, StoreError> {
        let key = series.to_string();
        self.with(move |conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM coverage WHERE series = ?1 AND start_ms <= ?2 AND end_ms >= ?3)",
                params![key, start.timestamp_millis(), end.timestamp_millis()],
                |r| r.get(0),
            )
            .map_err(backend)
        })
        .await
    }

    async fn covered_until(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let key = series.to_string();
        let end: Option<i64> = self
            .with(move |conn| {
                conn.query_row(
                    "SELECT MAX(end_ms) FROM coverage WHERE series = ?1 AND start_ms <= ?2 AND end_ms >= ?2",
                    params![key, start.timestamp_millis()],
                    |r| r.get(0),
                )
                .map_err(backend)
            })
            .await?;
        Ok(end.and_then(DateTime::from_timestamp_millis))
    }

    async fn count_bars(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let series = series.clone();
        self.with(move |conn| read_bars(conn, &series, start, end, true).map(|bars| bars.len()))
            .await
    }

    async fn checkpoints(&self, keys: &[String]) -> Result<HashMap<String, String>, StoreError> {
        let keys = keys.to_vec();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM checkpoints WHERE key = ?1")
                .map_err(backend)?;
            let mut found = HashMap::new();
            for key in keys {
                let body: Option<String> = stmt.query_row(params![key], |r| r.get(0)).optional().map_err(backend)?;
                if let Some(body) = body {
                    found.insert(key, body);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn put_checkpoints(&self, entries: &[(String, String)]) -> Result<(), StoreError> {
        let entries = entries.to_vec();
        let now = ts(Utc::now());
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO checkpoints (key, body, updated_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                    )
                    .map_err(backend)?;
                for (key, body) in &entries {
                    stmt.execute(params![key, body, now]).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn delete_checkpoints(&self, keys: &[String]) -> Result<(), StoreError> {
        let keys = keys.to_vec();
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM checkpoints WHERE key = ?1")
                    .map_err(backend)?;
                for key in &keys {
                    stmt.execute(params![key]).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }
}
