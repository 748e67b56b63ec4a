//! The per-bar `bars` table of versions before chunks: read beside the
//! chunks until `migrate-store` has moved it, then dropped.

use super::series::{has_legacy_bars, legacy_bar, legacy_row, merge_sets, read_bars};
use super::*;

#[async_trait]
impl LegacyStore for SqliteStore {
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
}
