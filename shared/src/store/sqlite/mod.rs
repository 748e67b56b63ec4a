//! The embedded store: one SQLite file in WAL mode.
//!
//! SQLite calls block, so each runs on tokio's blocking pool behind a mutex
//! that is never held across an `.await`. Several processes may share the
//! file: WAL lets readers run beside the writer, and a busy timeout makes a
//! second writer wait instead of failing.
//!
//! One file per domain: `assets`, `bars`, `legacy`, `runs`, `outbox`, on
//! `series` (one series' chunks and older per-bar rows); this one opens the
//! file, holds the schema and the helpers they share.

mod assets;
mod bars;
mod legacy;
mod outbox;
mod runs;
mod series;

use super::chunk::{self, Span};
use super::{
    plan_action, plan_asset, plan_delist, symbol_key_range, AssetFilter, AssetStore, AssetWrite, BarStore, LegacyPage,
    LegacyStore, OutboxStore, PageRecord, PendingEvent, RunProgress, RunStatus, RunStore, RunTotals, SeriesKey, Store,
    StoreError, StoredAsset, SyncRun,
};
use crate::events::Event;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use signal9_alpaca::{Asset, AssetStatus, Bar, CorporateAction, Symbol};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}
