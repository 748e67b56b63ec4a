//! The bars routes for bulk readers: with `Accept:
//! application/vnd.apache.arrow.stream` the answer is an Arrow IPC stream
//! instead of Alpaca's JSON pages. The same parameters, the same auth, the
//! same plan and pricing (missing ranges are fetched first, exactly as for
//! JSON); then the whole range, not a page: one record batch per symbol and
//! store window (about 50,000 bars), decoded from the chunks straight into
//! columns, no JSON step. `limit` and `page_token` do not apply (an Arrow
//! stream is not paged) and are refused.
//!
//! Columns: `symbol` (utf8), `timestamp` (timestamp[ns, UTC], the bar's
//! start), `open`, `high`, `low`, `close`, `volume` (float64),
//! `trade_count` (uint64), `vwap` (float64).
//!
//! The body streams: the next two windows are read from the store while
//! the last is encoded and sent, so memory stays a few windows whatever the
//! range. A store error after the first bytes cuts the stream short (no
//! end-of-stream marker), which every Arrow reader reports as an error.

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use chrono::{DateTime, Duration, Utc};
use signal9_alpaca::{Bar, Symbol};
use std::sync::Arc;

use crate::bars::BarsQuery;
use crate::AppState;

/// The media type of an Arrow IPC stream.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.apache.arrow.stream";

/// About how many bars one store window (one record batch) holds.
const BARS_PER_WINDOW: i64 = 50_000;

/// Store windows read ahead of the one being sent.
const READS_AHEAD: usize = 2;

/// Whether the request asks for Arrow (its `Accept` names the stream type).
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains(MEDIA_TYPE))
}

/// The stream's schema.
pub(crate) fn schema() -> Arc<Schema> {
    let price = |name| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        price("open"),
        price("high"),
        price("low"),
        price("close"),
        price("volume"),
        Field::new("trade_count", DataType::UInt64, false),
        price("vwap"),
    ]))
}

/// One symbol's bars as a record batch.
pub(crate) fn batch(schema: &Arc<Schema>, symbol: &str, bars: &[Bar]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let column = |f: fn(&Bar) -> f64| -> ArrayRef { Arc::new(bars.iter().map(f).collect::<Float64Array>()) };
    let times: TimestampNanosecondArray = bars
        .iter()
        .map(|b| b.time.timestamp().saturating_mul(1_000_000_000))
        .collect::<Vec<i64>>()
        .into();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(symbol, bars.len()))),
        Arc::new(times.with_timezone("UTC")),
        column(|b| b.open),
        column(|b| b.high),
        column(|b| b.low),
        column(|b| b.close),
        column(|b| b.volume),
        Arc::new(bars.iter().map(|b| b.trade_count).collect::<UInt64Array>()),
        column(|b| b.vwap),
    ];
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// `[from, to]` cut into windows of about [`BARS_PER_WINDOW`] bars of the
/// query's timeframe, both ends inclusive, in the order the bars are asked
/// for.
fn windows(query: &BarsQuery) -> Vec<Window> {
    let bar_secs = query.range.timeframe.fixed_seconds().unwrap_or(31 * 86_400).max(60);
    let span = Duration::seconds(bar_secs.saturating_mul(BARS_PER_WINDOW).clamp(86_400, 3_650 * 86_400));
    let mut out = Vec::new();
    let mut lo = query.range.start;
    while lo <= query.range.end {
        let hi = lo
            .checked_add_signed(span)
            .map_or(query.range.end, |t| t.min(query.range.end));
        out.push((lo, hi));
        match hi.checked_add_signed(Duration::seconds(1)) {
            Some(next) if hi < query.range.end => lo = next,
            _ => break,
        }
    }
    if query.desc {
        out.reverse();
    }
    out
}

/// The answer's body: every symbol's bars of the query's range, read from
/// the store window by window (the next read under way while the last is
/// sent).
pub(crate) fn body(state: Arc<AppState>, query: BarsQuery) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        if let Err(error) = produce(&state, &query, &tx).await {
            tracing::warn!(%error, "Arrow stream cut short");
            let _ = tx.send(Err(std::io::Error::other(error))).await;
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Reads one window of one symbol on its own task, so the next read runs
/// while the last batch is encoded and sent.
fn read(state: &Arc<AppState>, query: &BarsQuery, symbol: &Symbol, (from, to): Window) -> Read {
    let state = Arc::clone(state);
    let series = query.series(symbol);
    let name = symbol.as_str().to_owned();
    tokio::spawn(async move {
        let bars = state
            .store
            .bars(&series, from, to)
            .await
            .map_err(|e| format!("store: {e}"));
        (name, bars)
    })
}

type Window = (DateTime<Utc>, DateTime<Utc>);
type Read = tokio::task::JoinHandle<(String, Result<Vec<Bar>, String>)>;

async fn produce(
    state: &Arc<AppState>,
    query: &BarsQuery,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), String> {
    let schema = schema();
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(|e| e.to_string())?;
    let windows = windows(query);
    let mut jobs = Vec::with_capacity(query.symbols.len() * windows.len());
    for symbol in &query.symbols {
        jobs.extend(windows.iter().map(|w| (symbol.clone(), *w)));
    }
    let mut jobs = jobs.into_iter();
    // Two reads ahead: the SQLite store reads them on two connections at
    // once while this task encodes and sends.
    let mut ahead: std::collections::VecDeque<Read> = jobs
        .by_ref()
        .take(READS_AHEAD)
        .map(|(symbol, w)| read(state, query, &symbol, w))
        .collect();
    while let Some(reading) = ahead.pop_front() {
        if let Some((symbol, w)) = jobs.next() {
            ahead.push_back(read(state, query, &symbol, w));
        }
        let (symbol, bars) = reading.await.map_err(|e| format!("store task: {e}"))?;
        let mut bars = bars?;
        if bars.is_empty() {
            continue;
        }
        if query.desc {
            bars.reverse();
        }
        let batch = batch(&schema, &symbol, &bars).map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
        let chunk = std::mem::take(writer.get_mut());
        if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
            ahead.iter().for_each(Read::abort);
            return Ok(()); // the client went away
        }
    }
    writer.finish().map_err(|e| e.to_string())?;
    let end = std::mem::take(writer.get_mut());
    let _ = tx.send(Ok(Bytes::from(end))).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn arrow_is_wanted_only_when_the_accept_header_names_it() {
        let mut headers = HeaderMap::new();
        assert!(!wanted(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wanted(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.apache.arrow.stream, application/json;q=0.5"),
        );
        assert!(wanted(&headers));
    }

    #[test]
    fn a_batch_has_the_documented_columns_and_the_bars_values() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let bar = Bar {
            time: t,
            open: 1.0,
            high: 2.0,
            low: 0.5,
            close: 1.5,
            volume: 100.0,
            trade_count: 7,
            vwap: 1.25,
        };
        let schema = schema();
        let batch = batch(&schema, "AAPL", &[bar, bar]).expect("a batch");
        assert_eq!(batch.num_rows(), 2);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "symbol",
                "timestamp",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "trade_count",
                "vwap"
            ]
        );
        let times = batch
            .column(1)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .expect("timestamps");
        assert_eq!(times.value(1), 1_700_000_000_000_000_000);
        let mut out = StreamWriter::try_new(Vec::new(), &schema).expect("a writer");
        out.write(&batch).expect("written");
        out.finish().expect("finished");
        let bytes = out.into_inner().expect("the bytes");
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("a reader");
        let read: Vec<RecordBatch> = reader.map(|b| b.expect("a batch")).collect();
        assert_eq!(read, vec![batch]);
    }
}
