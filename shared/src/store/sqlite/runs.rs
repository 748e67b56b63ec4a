//! Sync runs in SQLite: `sync_runs` and their page records.

use super::*;

pub(super) fn progress(conn: &Connection, run_id: &str) -> Result<RunProgress, StoreError> {
    let total: Option<u32> = conn
        .query_row(
            "SELECT pages_total FROM sync_runs WHERE run_id = ?1",
            params![run_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    let total = total.ok_or_else(|| StoreError::NotFound(format!("sync run {run_id:?}")))?;
    let done: u32 = conn
        .query_row(
            "SELECT COUNT(*) FROM sync_pages WHERE run_id = ?1",
            params![run_id],
            |r| r.get(0),
        )
        .map_err(backend)?;
    Ok(RunProgress {
        pages_done: done,
        pages_total: total,
    })
}

/// run_id, started_at, pages_total, status, finished_at, result, pages_done,
/// published_at, reconcile_claimed (epoch ms, 0 when never).
pub(super) type RunRow = (
    String,
    String,
    u32,
    String,
    Option<String>,
    Option<String>,
    u32,
    Option<String>,
    i64,
);

pub(super) fn read_run(
    conn: &Connection,
    where_clause: &str,
    arg: Option<&str>,
) -> Result<Option<SyncRun>, StoreError> {
    let sql = format!(
        "SELECT run_id, started_at, pages_total, status, finished_at, result,
                (SELECT COUNT(*) FROM sync_pages p WHERE p.run_id = r.run_id), published_at, reconcile_claimed
         FROM sync_runs r {where_clause}"
    );
    let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<RunRow> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
        ))
    };
    let row = match arg {
        Some(arg) => conn.query_row(&sql, params![arg], map),
        None => conn.query_row(&sql, [], map),
    }
    .optional()
    .map_err(backend)?;
    let Some((run_id, started_at, pages_total, status, finished_at, result, pages_done, published_at, claimed)) = row
    else {
        return Ok(None);
    };
    let status = RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?;
    let result = result
        .map(|r| serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(format!("run result: {e}"))))
        .transpose()?;
    Ok(Some(SyncRun {
        run_id,
        started_at: parse_ts(&started_at)?,
        pages_total,
        pages_done,
        status,
        finished_at: parse_opt_ts(finished_at)?,
        result,
        published_at: parse_opt_ts(published_at)?,
        reconcile_claimed_at: (claimed > 0)
            .then(|| DateTime::from_timestamp_millis(claimed))
            .flatten(),
    }))
}

pub(super) fn decode_page(text: &str) -> Result<PageRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("page record: {e}")))
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, run_id: &str, pages_total: u32, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let run_id = run_id.to_owned();
        self.with(move |conn| {
            let inserted = conn
                .execute(
                    "INSERT INTO sync_runs (run_id, started_at, pages_total, status) VALUES (?1, ?2, ?3, 'running')
                     ON CONFLICT (run_id) DO NOTHING",
                    params![run_id, ts(at), pages_total],
                )
                .map_err(backend)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn record_page(&self, run_id: &str, page: &PageRecord) -> Result<RunProgress, StoreError> {
        let (run_id, page_id, result) = (run_id.to_owned(), page.page_id.clone(), encode(page)?);
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            progress(&tx, &run_id)?;
            tx.execute(
                "INSERT INTO sync_pages (run_id, page_id, result) VALUES (?1, ?2, ?3) ON CONFLICT (run_id, page_id) DO NOTHING",
                params![run_id, page_id, result],
            )
            .map_err(backend)?;
            let done = progress(&tx, &run_id)?;
            tx.commit().map_err(backend)?;
            Ok(done)
        })
        .await
    }

    async fn replace_page(&self, run_id: &str, page: &PageRecord) -> Result<(), StoreError> {
        let (run_id, page_id, result) = (run_id.to_owned(), page.page_id.clone(), encode(page)?);
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            progress(&tx, &run_id)?;
            tx.execute(
                "INSERT INTO sync_pages (run_id, page_id, result) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id, page_id) DO UPDATE SET result = ?3",
                params![run_id, page_id, result],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn page_records(&self, run_id: &str) -> Result<Vec<PageRecord>, StoreError> {
        let run_id = run_id.to_owned();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare("SELECT result FROM sync_pages WHERE run_id = ?1 ORDER BY page_id")
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![run_id], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|row| decode_page(&row.map_err(backend)?)).collect()
        })
        .await
    }

    async fn mark_published(&self, run_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let run_id = run_id.to_owned();
        self.with(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE sync_runs SET published_at = ?2 WHERE run_id = ?1",
                    params![run_id, ts(at)],
                )
                .map_err(backend)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("sync run {run_id:?}")));
            }
            Ok(())
        })
        .await
    }

    async fn claim_reconcile(
        &self,
        run_id: &str,
        at: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<bool, StoreError> {
        let run_id = run_id.to_owned();
        let now = at.timestamp_millis();
        let stale = now - i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        self.with(move |conn| {
            // One UPDATE decides: only the caller whose update lands sees a changed
            // row. A claim older than `stale_after` on a run still running was
            // left by a worker that died; it may be taken over.
            let changed = conn
                .execute(
                    "UPDATE sync_runs SET reconcile_claimed = ?2
                     WHERE run_id = ?1 AND status = 'running' AND (reconcile_claimed = 0 OR reconcile_claimed < ?3)",
                    params![run_id, now, stale],
                )
                .map_err(backend)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        result: &RunTotals,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let event = Event::run_closed(run_id, status, result, at);
        let (run_id, result) = (run_id.to_owned(), encode(result)?);
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            let changed = tx
                .execute(
                    "UPDATE sync_runs SET status = ?2, result = ?3, finished_at = ?4 WHERE run_id = ?1",
                    params![run_id, status.as_str(), result, ts(at)],
                )
                .map_err(backend)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("sync run {run_id:?}")));
            }
            enqueue_events(&tx, [&event])?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<SyncRun>, StoreError> {
        let run_id = run_id.to_owned();
        self.with(move |conn| read_run(conn, "WHERE run_id = ?1", Some(&run_id)))
            .await
    }

    async fn latest_run(&self) -> Result<Option<SyncRun>, StoreError> {
        self.with(|conn| read_run(conn, "ORDER BY started_at DESC, run_id DESC LIMIT 1", None))
            .await
    }

    async fn recent_runs(&self, limit: usize) -> Result<Vec<SyncRun>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let ids: Vec<String> = conn
                .prepare("SELECT run_id FROM sync_runs ORDER BY started_at DESC, run_id DESC LIMIT ?1")
                .and_then(|mut stmt| {
                    stmt.query_map(params![limit], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()
                })
                .map_err(backend)?;
            let mut runs = Vec::with_capacity(ids.len());
            for id in ids {
                runs.extend(read_run(conn, "WHERE run_id = ?1", Some(&id))?);
            }
            Ok(runs)
        })
        .await
    }

    async fn last_completed_run(&self) -> Result<Option<SyncRun>, StoreError> {
        self.with(|conn| {
            read_run(
                conn,
                "WHERE status = 'completed' ORDER BY started_at DESC, run_id DESC LIMIT 1",
                None,
            )
        })
        .await
    }
}
