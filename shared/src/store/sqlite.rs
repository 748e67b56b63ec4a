//! The embedded store: one SQLite file in WAL mode.
//!
//! SQLite calls block, so each runs on tokio's blocking pool behind a mutex
//! that is never held across an `.await`. Several processes may share the
//! file: WAL lets readers run beside the writer, and a busy timeout makes a
//! second writer wait instead of failing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::chunk::{self, Span};
use super::{
    plan_action, plan_asset, plan_delist, symbol_key_range, AssetFilter, AssetWrite, LegacyPage, PageRecord,
    PendingEvent, RunProgress, RunStatus, RunTotals, SeriesKey, Store, StoreError, StoredAsset, SyncRun,
};
use crate::events::Event;
use signal9_alpaca::{Asset, AssetStatus, Bar, CorporateAction, Symbol};

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    class TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    delisted_at TEXT,
    previous_status TEXT,
    previous_tradable INTEGER,
    status_changed_at TEXT,
    seen_at TEXT
);
CREATE INDEX IF NOT EXISTS assets_by_symbol ON assets(symbol);
CREATE TABLE IF NOT EXISTS bar_chunks (
    series TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    n INTEGER NOT NULL,
    first_t INTEGER NOT NULL,
    last_t INTEGER NOT NULL,
    version INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (series, chunk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS coverage (
    series TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    PRIMARY KEY (series, start_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sync_runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    pages_total INTEGER NOT NULL,
    status TEXT NOT NULL,
    reconcile_claimed INTEGER NOT NULL DEFAULT 0,
    finished_at TEXT,
    result TEXT,
    published_at TEXT
);
CREATE TABLE IF NOT EXISTS sync_pages (
    run_id TEXT NOT NULL,
    page_id TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (run_id, page_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    key TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS corporate_actions (
    id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    kind TEXT NOT NULL,
    ex_date TEXT NOT NULL,
    terms TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    series_dropped INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    occurred_at TEXT NOT NULL,
    body TEXT NOT NULL
);
";

/// Columns added after a table was first created: `(table, column, type)`.
/// `init` adds those an older file lacks.
const ADDED_COLUMNS: [(&str, &str, &str); 2] = [("assets", "seen_at", "TEXT"), ("sync_runs", "published_at", "TEXT")];

fn add_missing_columns(conn: &Connection) -> Result<(), StoreError> {
    for (table, column, kind) in ADDED_COLUMNS {
        let mut stmt = conn
            .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))
            .map_err(backend)?;
        if !stmt.exists(params![column]).map_err(backend)? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                .map_err(backend)?;
        }
    }
    Ok(())
}

/// Puts events in the outbox; an event already there (same id) stays once.
fn enqueue_events<'a>(tx: &Connection, events: impl IntoIterator<Item = &'a Event>) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached("INSERT INTO outbox (id, occurred_at, body) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING")
        .map_err(backend)?;
    for event in events {
        stmt.execute(params![event.id, ts(event.occurred_at), event.to_json()])
            .map_err(backend)?;
    }
    Ok(())
}

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Read-only connections for bar reads, opened on first use: a bulk
    /// read (an Arrow stream) reads two windows at once beside the writer
    /// (SQLite in WAL mode lets readers run with a writer).
    readers: Arc<[Mutex<Option<Connection>>; 2]>,
}

impl SqliteStore {
    /// Opens (creating if needed) the file and its parent folder, and the schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Backend(format!("cannot create folder {}: {e}", parent.display())))?;
        }
        // Several processes may open the file at once; switching it to WAL
        // takes a lock the busy timeout does not cover, so retry briefly.
        let mut attempt = 0;
        let conn = loop {
            match open_connection(&path) {
                Ok(conn) => break conn,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && attempt < 50 =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(StoreError::Backend(format!("cannot open {}: {e}", path.display()))),
            }
        };
        Ok(SqliteStore {
            path,
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new([Mutex::new(None), Mutex::new(None)]),
        })
    }

    /// How long a statement waits for another process's lock (30 s unless set).
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<(), StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Backend("connection mutex poisoned".into()))?
            .busy_timeout(timeout)
            .map_err(backend)
    }

    /// The file behind this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs blocking read-only work on a reader connection, the first free
    /// one (or waits for the first), on the blocking pool.
    async fn with_reader<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = match readers.iter().find_map(|r| r.try_lock().ok()) {
                Some(free) => free,
                None => readers[0]
                    .lock()
                    .map_err(|_| StoreError::Backend("reader mutex poisoned".into()))?,
            };
            if slot.is_none() {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(&path, flags).map_err(backend)?;
                conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
                *slot = Some(conn);
            }
            let conn = slot
                .as_ref()
                .ok_or_else(|| StoreError::Backend("no reader connection".into()))?;
            work(conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// Runs blocking SQLite work on the blocking pool.
    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Backend("connection mutex poisoned".into()))?;
            work(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Starts a write transaction that takes the write lock at once. A deferred
/// one that reads first and writes later cannot wait for another process's
/// lock (SQLite answers "database is locked" at once to avoid a deadlock);
/// an immediate one waits up to the busy timeout.
fn write_tx(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn ts(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {text:?}: {e}")))
}

fn parse_opt_ts(text: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    text.as_deref().map(parse_ts).transpose()
}

const ASSET_COLUMNS: &str =
    "body, first_seen, updated_at, delisted_at, previous_status, previous_tradable, status_changed_at, seen_at";

type AssetRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<String>,
);

fn read_asset_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AssetRow> {
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

fn decode_asset(row: AssetRow) -> Result<StoredAsset, StoreError> {
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

fn query_assets(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<StoredAsset>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(backend)?;
    let rows = stmt.query_map(args, read_asset_row).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(decode_asset)).collect()
}

fn get_asset_tx(conn: &Connection, id: &str) -> Result<Option<StoredAsset>, StoreError> {
    let sql = format!("SELECT {ASSET_COLUMNS} FROM assets WHERE id = ?1");
    let row = conn
        .query_row(&sql, params![id], read_asset_row)
        .optional()
        .map_err(backend)?;
    row.map(decode_asset).transpose()
}

fn progress(conn: &Connection, run_id: &str) -> Result<RunProgress, StoreError> {
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

/// Records `[lo, hi]` for one series: every recorded range that overlaps or
/// touches it merges into it.
fn merge_coverage(tx: &rusqlite::Transaction<'_>, key: &str, mut lo: i64, mut hi: i64) -> Result<(), StoreError> {
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

/// True while the file still has the per-bar table of versions before
/// chunks (`migrate-store` moves it into chunks and drops it).
fn has_legacy_bars(conn: &Connection) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bars')",
        [],
        |r| r.get(0),
    )
    .map_err(backend)
}

/// Merges bars into their chunks, in the transaction: each chunk touched
/// is read, merged by time ([`chunk::merge`]; `new_wins` false keeps the
/// stored bar of a time) and written back with its version bumped. Returns
/// how many bars were given.
fn merge_sets(tx: &Connection, sets: &[(SeriesKey, Vec<Bar>)], new_wins: bool) -> Result<usize, StoreError> {
    let (chunks, given) = chunk::group(sets);
    let mut read = tx
        .prepare_cached("SELECT data, version FROM bar_chunks WHERE series = ?1 AND chunk = ?2")
        .map_err(backend)?;
    let mut write = tx
        .prepare_cached(
            "INSERT INTO bar_chunks (series, chunk, n, first_t, last_t, version, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (series, chunk) DO UPDATE SET n = excluded.n, first_t = excluded.first_t,
                 last_t = excluded.last_t, version = excluded.version, data = excluded.data",
        )
        .map_err(backend)?;
    for ((key, chunk_start), new) in chunks {
        let stored: Option<(Vec<u8>, i64)> = read
            .query_row(params![key, chunk_start], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(backend)?;
        let (old, version) = match stored {
            Some((data, version)) => (decode_chunk(&key, &data)?, version),
            None => (Vec::new(), 0),
        };
        let merged = chunk::merge(old, &chunk::dedup_last_wins(&new), new_wins);
        let (first, last) = match (merged.first(), merged.last()) {
            (Some(f), Some(l)) => (f.time.timestamp_millis(), l.time.timestamp_millis()),
            _ => continue,
        };
        write
            .execute(params![
                key,
                chunk_start,
                merged.len(),
                first,
                last,
                version + 1,
                chunk::encode(&merged)
            ])
            .map_err(backend)?;
    }
    Ok(given)
}

fn decode_chunk(key: &str, data: &[u8]) -> Result<Vec<Bar>, StoreError> {
    chunk::decode(data).map_err(|e| StoreError::Corrupt(format!("bar chunk of {key}: {e}")))
}

/// The series' bars with `start <= t <= end`: from its chunks, and from the
/// per-bar table while one is left to migrate (a chunk's bar wins).
fn read_bars(
    conn: &Connection,
    series: &SeriesKey,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    with_legacy: bool,
) -> Result<Vec<Bar>, StoreError> {
    if end < start {
        return Ok(Vec::new());
    }
    let key = series.to_string();
    let span = Span::of(series.timeframe);
    let (lo, hi) = (start.timestamp_millis(), end.timestamp_millis());
    let mut stmt = conn
        .prepare_cached(
            "SELECT data FROM bar_chunks WHERE series = ?1 AND chunk >= ?2 AND chunk <= ?3 AND last_t >= ?4 ORDER BY chunk",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![key, span.chunk_of(start), hi, lo], |r| r.get::<_, Vec<u8>>(0))
        .map_err(backend)?;
    let mut bars = Vec::new();
    for data in rows {
        let data = data.map_err(backend)?;
        bars.extend(
            decode_chunk(&key, &data)?
                .into_iter()
                .filter(|b| (lo..=hi).contains(&b.time.timestamp_millis())),
        );
    }
    if with_legacy && has_legacy_bars(conn)? {
        let legacy = read_legacy(conn, &key, lo, hi)?;
        if !legacy.is_empty() {
            bars = chunk::merge(legacy, &bars, true);
        }
    }
    Ok(bars)
}

/// Bars of the per-bar table (versions before chunks) with `lo <= t <= hi`.
fn read_legacy(conn: &Connection, key: &str, lo: i64, hi: i64) -> Result<Vec<Bar>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT series, t, o, h, l, c, v, n, vw FROM bars WHERE series = ?1 AND t >= ?2 AND t <= ?3 ORDER BY t",
        )
        .map_err(backend)?;
    let rows = stmt.query_map(params![key, lo, hi], legacy_row).map_err(backend)?;
    rows.map(|row| legacy_bar(row.map_err(backend)?).map(|(_, bar)| bar))
        .collect()
}

/// One row of the per-bar table: series, time, o h l c v vw, trade count.
type LegacyRow = (String, i64, [f64; 6], i64);

/// Reads `SELECT series, t, o, h, l, c, v, n, vw`.
fn legacy_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LegacyRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(8)?],
        r.get(7)?,
    ))
}

fn legacy_bar((series, t, [open, high, low, close, volume, vwap], n): LegacyRow) -> Result<(String, Bar), StoreError> {
    let time = DateTime::from_timestamp_millis(t).ok_or_else(|| StoreError::Corrupt(format!("bar time {t}")))?;
    let bar = Bar {
        time,
        open,
        high,
        low,
        close,
        volume,
        trade_count: u64::try_from(n).unwrap_or(0),
        vwap,
    };
    Ok((series, bar))
}

/// run_id, started_at, pages_total, status, finished_at, result, pages_done,
/// published_at, reconcile_claimed (epoch ms, 0 when never).
type RunRow = (
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

fn read_run(conn: &Connection, where_clause: &str, arg: Option<&str>) -> Result<Option<SyncRun>, StoreError> {
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

fn decode_page(text: &str) -> Result<PageRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("page record: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl Store for SqliteStore {
    async fn init(&self) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute_batch(SCHEMA).map_err(backend)?;
            add_missing_columns(conn)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A write lock taken and given back: a read-only, locked or
        // vanished file fails here as a write would.
        self.with(|conn| conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").map_err(backend))
            .await
    }

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

    async fn chunked_bars(
        &self,
        series: &SeriesKey,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<Bar>, StoreError> {
        let series = series.clone();
        self.with(move |conn| read_bars(conn, &series, start, end, false)).await
    }

    async fn legacy_bars(&self, after: Option<&str>, limit: usize) -> Result<Option<LegacyPage>, StoreError> {
        let after = match after {
            None => None,
            Some(position) => {
                let (series, t) = position
                    .rsplit_once('\u{1f}')
                    .and_then(|(s, t)| Some((s.to_owned(), t.parse::<i64>().ok()?)))
                    .ok_or_else(|| StoreError::Corrupt(format!("migration position {position:?}")))?;
                Some((series, t))
            }
        };
        self.with(move |conn| {
            if !has_legacy_bars(conn)? {
                return Ok(None);
            }
            let (series, t) = after.unwrap_or_else(|| (String::new(), i64::MIN));
            let mut stmt = conn
                .prepare_cached(
                    "SELECT series, t, o, h, l, c, v, n, vw FROM bars WHERE (series, t) > (?1, ?2)
                     ORDER BY series, t LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![series, t, limit.max(1)], legacy_row)
                .map_err(backend)?;
            let bars: Vec<(String, Bar)> = rows
                .map(|row| legacy_bar(row.map_err(backend)?))
                .collect::<Result<_, _>>()?;
            let next = (bars.len() >= limit.max(1))
                .then(|| {
                    bars.last()
                        .map(|(s, b)| format!("{s}\u{1f}{}", b.time.timestamp_millis()))
                })
                .flatten();
            Ok(Some(LegacyPage { bars, next }))
        })
        .await
    }

    async fn merge_legacy_bars(&self, sets: &[(SeriesKey, Vec<Bar>)]) -> Result<usize, StoreError> {
        let sets = sets.to_vec();
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            let written = merge_sets(&tx, &sets, false)?;
            tx.commit().map_err(backend)?;
            Ok(written)
        })
        .await
    }

    async fn drop_legacy_bars(&self) -> Result<(), StoreError> {
        self.with(|conn| conn.execute_batch("DROP TABLE IF EXISTS bars").map_err(backend))
            .await
    }

    #[cfg(feature = "test-support")]
    async fn put_legacy_bars(&self, series: &SeriesKey, bars: &[Bar]) -> Result<(), StoreError> {
        let (key, bars) = (series.to_string(), bars.to_vec());
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS bars (series TEXT NOT NULL, t INTEGER NOT NULL,
                     o REAL NOT NULL, h REAL NOT NULL, l REAL NOT NULL, c REAL NOT NULL,
                     v REAL NOT NULL, n INTEGER NOT NULL, vw REAL NOT NULL,
                     PRIMARY KEY (series, t)) WITHOUT ROWID",
            )
            .map_err(backend)?;
            for bar in &bars {
                tx.execute(
                    "INSERT OR REPLACE INTO bars (series, t, o, h, l, c, v, n, vw) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        key,
                        bar.time.timestamp_millis(),
                        bar.open,
                        bar.high,
                        bar.low,
                        bar.close,
                        bar.volume,
                        i64::try_from(bar.trade_count).unwrap_or(i64::MAX),
                        bar.vwap
                    ],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
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

    async fn pending_events(&self, limit: usize) -> Result<Vec<PendingEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let mut stmt = conn
                .prepare("SELECT body FROM outbox ORDER BY seq LIMIT ?1")
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![limit], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|row| {
                let event: Event = serde_json::from_str(&row.map_err(backend)?)
                    .map_err(|e| StoreError::Corrupt(format!("outbox event: {e}")))?;
                Ok(PendingEvent {
                    receipt: event.id.clone(),
                    event,
                })
            })
            .collect()
        })
        .await
    }

    async fn events_sent(&self, sent: &[PendingEvent]) -> Result<(), StoreError> {
        let ids: Vec<String> = sent.iter().map(|p| p.receipt.clone()).collect();
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            {
                let mut stmt = tx.prepare("DELETE FROM outbox WHERE id = ?1").map_err(backend)?;
                for id in &ids {
                    stmt.execute(params![id]).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }
}
