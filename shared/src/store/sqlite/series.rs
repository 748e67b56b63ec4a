//! One series in SQLite, below the domain traits: its bars read from the
//! chunks (and, while a store made before chunks keeps them, from the
//! per-bar rows beside them) and merged into chunks. `bars.rs` and
//! `legacy.rs` both build on it.

use super::*;
use crate::store::legacy::merge_legacy;

/// Merges bars into their chunks, in the transaction: each chunk touched
/// is read, merged by time ([`chunk::merge`]; `new_wins` false keeps the
/// stored bar of a time) and written back with its version bumped. Returns
/// how many bars were given.
pub(super) fn merge_sets(tx: &Connection, sets: &[(SeriesKey, Vec<Bar>)], new_wins: bool) -> Result<usize, StoreError> {
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

pub(super) fn decode_chunk(key: &str, data: &[u8]) -> Result<Vec<Bar>, StoreError> {
    chunk::decode(data).map_err(|e| StoreError::Corrupt(format!("bar chunk of {key}: {e}")))
}

/// The series' bars with `start <= t <= end`: from its chunks, and from the
/// per-bar table while one is left to migrate (a chunk's bar wins).
pub(super) fn read_bars(
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
        bars = merge_legacy(bars, read_legacy(conn, &key, lo, hi)?);
    }
    Ok(bars)
}

/// True while the file still has the per-bar table of versions before
/// chunks (`migrate-store` moves it into chunks and drops it).
pub(super) fn has_legacy_bars(conn: &Connection) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bars')",
        [],
        |r| r.get(0),
    )
    .map_err(backend)
}

/// Bars of the per-bar table (versions before chunks) with `lo <= t <= hi`.
pub(super) fn read_legacy(conn: &Connection, key: &str, lo: i64, hi: i64) -> Result<Vec<Bar>, StoreError> {
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
pub(super) type LegacyRow = (String, i64, [f64; 6], i64);

/// Reads `SELECT series, t, o, h, l, c, v, n, vw`.
pub(super) fn legacy_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LegacyRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(8)?],
        r.get(7)?,
    ))
}

pub(super) fn legacy_bar(
    (series, t, [open, high, low, close, volume, vwap], n): LegacyRow,
) -> Result<(String, Bar), StoreError> {
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
