//! Bars stored in chunks: which chunk a bar belongs to, and the bytes a
//! chunk holds. Both backends store a series as chunks, one row or item per
//! (series, chunk), and merge new bars into a chunk by time.
//!
//! **Chunk span** (by the series' timeframe, in UTC):
//!
//! | timeframe | one chunk holds | most bars in a chunk |
//! | --- | --- | --- |
//! | 1–59 `Min` | one UTC day | 1,440 (crypto 1Min; stocks ≤ 960) |
//! | 1–23 `Hour` | one UTC month | 744 |
//! | `1Day` | one UTC month | 31 |
//! | `1Week`, 1–12 `Month` | one UTC year | 53 |
//!
//! So a chunk stays far from DynamoDB's 400 KB item limit (a day of crypto
//! 1Min bars encodes to under 30 KB), a daily append rewrites a chunk of at
//! most 31 bars (under 1 KB: one write unit, as one bar item cost), and a
//! series-year is 12 items of daily bars or 365 of minute bars: one Query.
//!
//! **Encoding** (`data`, format 1): one byte of format (`1`), one byte of
//! codec (`0` none, `1` zstd), then the body, compressed by the codec:
//!
//! - the number of bars `n` (LEB128 varint);
//! - times in epoch milliseconds, strictly increasing: the first as a
//!   zigzag varint, then each difference as a varint;
//! - six columns of `n` floats in this order: open, high, low, close,
//!   volume, vwap. Each starts with a tag byte: `0xFF` then `n` IEEE-754
//!   doubles little-endian; or `k` (0–8): every value is an integer number
//!   of `10^-k` units, stored as the first zigzag varint then zigzag varint
//!   differences (so 123.45 with `k = 2` is 12345). `k` is the smallest that
//!   gives back every value exactly, so decoding is lossless;
//! - trade counts: the first as a zigzag varint, then zigzag differences.
//!
//! The body is compressed with zstd (level 3) when that makes it smaller.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use std::collections::BTreeMap;

use signal9_alpaca::{Bar, Timeframe, TimeframeUnit};

/// The format byte of chunks written by this version.
pub const FORMAT: u8 = 1;
const CODEC_NONE: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// zstd's level: see BENCHMARKS.md ("Bars in chunks") for the comparison.
pub const ZSTD_LEVEL: i32 = 3;
const RAW_FLOATS: u8 = 0xFF;
/// The largest decoded chunk body read: a chunk holds one day of minute
/// bars or one month or year of longer ones (about 100 KB decoded at
/// most); anything past this is not a chunk of ours (or a compression bomb).
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
const MAX_SCALE: u32 = 8;

/// How much time one chunk of a series covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// One UTC day.
    Day,
    /// One UTC month.
    Month,
    /// One UTC year.
    Year,
}

impl Span {
    /// The span of a timeframe's chunks (see the module's table).
    pub fn of(timeframe: Timeframe) -> Span {
        match timeframe.unit() {
            TimeframeUnit::Minute => Span::Day,
            TimeframeUnit::Hour | TimeframeUnit::Day => Span::Month,
            TimeframeUnit::Week | TimeframeUnit::Month => Span::Year,
        }
    }

    /// The start (epoch ms, UTC) of the chunk holding `t`.
    pub fn chunk_of(self, t: DateTime<Utc>) -> i64 {
        let date = t.date_naive();
        let first = match self {
            Span::Day => date,
            Span::Month => NaiveDate::from_ymd_opt(date.year(), date.month(), 1).unwrap_or(date),
            Span::Year => NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date),
        };
        Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).unwrap_or_default())
            .timestamp_millis()
    }
}

/// The bars of several series grouped by chunk, `(series key, chunk start)`,
/// in the order given (for [`dedup_last_wins`]), and how many bars there are.
pub fn group(sets: &[(super::SeriesKey, Vec<Bar>)]) -> (BTreeMap<(String, i64), Vec<Bar>>, usize) {
    let mut chunks: BTreeMap<(String, i64), Vec<Bar>> = BTreeMap::new();
    let mut given = 0;
    for (series, bars) in sets {
        let span = Span::of(series.timeframe);
        let key = series.to_string();
        for bar in bars {
            chunks
                .entry((key.clone(), span.chunk_of(bar.time)))
                .or_default()
                .push(*bar);
            given += 1;
        }
    }
    (chunks, given)
}

/// Every bar in `bars` sorted by time, one per time: where several share a
/// time, the last one given wins.
pub fn dedup_last_wins(bars: &[Bar]) -> Vec<Bar> {
    let mut by_time: BTreeMap<i64, Bar> = BTreeMap::new();
    for bar in bars {
        by_time.insert(bar.time.timestamp_millis(), *bar);
    }
    by_time.into_values().collect()
}

/// A chunk's bars with `new` merged in: a new bar replaces the stored one
/// of the same time (`new_wins`), or is kept only where none is stored
/// (`!new_wins`, for migrating older data under newer).
pub fn merge(stored: Vec<Bar>, new: &[Bar], new_wins: bool) -> Vec<Bar> {
    let mut by_time: BTreeMap<i64, Bar> = stored.into_iter().map(|b| (b.time.timestamp_millis(), b)).collect();
    for bar in new {
        let key = bar.time.timestamp_millis();
        if new_wins || !by_time.contains_key(&key) {
            by_time.insert(key, *bar);
        }
    }
    by_time.into_values().collect()
}

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn unzigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

/// The smallest `k` for which every value is an exact integer number of
/// `10^-k` units that fits a double's integers, if any.
fn scale_of(values: &[f64]) -> Option<u32> {
    (0..=MAX_SCALE).find(|k| {
        let factor = 10f64.powi(*k as i32);
        values.iter().all(|x| {
            let scaled = (x * factor).round();
            x.is_finite() && scaled.abs() < 9.0e15 && scaled / factor == *x
        })
    })
}

fn put_floats(out: &mut Vec<u8>, values: &[f64]) {
    match scale_of(values) {
        Some(k) => {
            out.push(k as u8);
            let factor = 10f64.powi(k as i32);
            let mut previous = 0i64;
            for x in values {
                let scaled = (x * factor).round() as i64;
                put_varint(out, zigzag(scaled.wrapping_sub(previous)));
                previous = scaled;
            }
        }
        None => {
            out.push(RAW_FLOATS);
            for x in values {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
}

/// How a chunk's body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Not at all.
    None,
    /// zstd at this level.
    Zstd(i32),
}

/// Encodes bars sorted by time, one per time (see the module's format),
/// compressed with zstd at [`ZSTD_LEVEL`] when that is smaller.
pub fn encode(bars: &[Bar]) -> Vec<u8> {
    encode_with(bars, Codec::Zstd(ZSTD_LEVEL))
}

/// [`encode`] with a chosen codec (the benchmark compares them).
pub fn encode_with(bars: &[Bar], codec: Codec) -> Vec<u8> {
    let mut body = Vec::with_capacity(bars.len() * 16 + 16);
    put_varint(&mut body, bars.len() as u64);
    let mut previous = 0i64;
    for (i, bar) in bars.iter().enumerate() {
        let t = bar.time.timestamp_millis();
        if i == 0 {
            put_varint(&mut body, zigzag(t));
        } else {
            put_varint(&mut body, t.wrapping_sub(previous) as u64);
        }
        previous = t;
    }
    let columns: [fn(&Bar) -> f64; 6] = [|b| b.open, |b| b.high, |b| b.low, |b| b.close, |b| b.volume, |b| b.vwap];
    for column in columns {
        let values: Vec<f64> = bars.iter().map(column).collect();
        put_floats(&mut body, &values);
    }
    let mut previous = 0i64;
    for bar in bars {
        let count = bar.trade_count as i64;
        put_varint(&mut body, zigzag(count.wrapping_sub(previous)));
        previous = count;
    }
    let mut out = vec![FORMAT];
    let packed = match codec {
        Codec::None => None,
        Codec::Zstd(level) => zstd::bulk::compress(&body, level).ok(),
    };
    match packed {
        Some(packed) if packed.len() < body.len() => {
            out.push(CODEC_ZSTD);
            out.extend_from_slice(&packed);
        }
        _ => {
            out.push(CODEC_NONE);
            out.extend_from_slice(&body);
        }
    }
    out
}

/// Reads what [`encode`] wrote; an error says what is wrong.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.at).ok_or("chunk ends early")?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            x |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err("varint too long".into())
    }

    fn floats(&mut self, n: usize) -> Result<Vec<f64>, String> {
        let tag = self.byte()?;
        let mut out = Vec::with_capacity(n);
        if tag == RAW_FLOATS {
            for _ in 0..n {
                let end = self.at.saturating_add(8);
                let raw: [u8; 8] = self
                    .bytes
                    .get(self.at..end)
                    .and_then(|s| s.try_into().ok())
                    .ok_or("chunk ends early")?;
                self.at = end;
                out.push(f64::from_le_bytes(raw));
            }
        } else if u32::from(tag) <= MAX_SCALE {
            let factor = 10f64.powi(i32::from(tag));
            let mut previous = 0i64;
            for _ in 0..n {
                previous = previous.wrapping_add(unzigzag(self.varint()?));
                out.push(previous as f64 / factor);
            }
        } else {
            return Err(format!("unknown column tag {tag}"));
        }
        Ok(out)
    }
}

/// Decompresses a zstd chunk body, refusing one that would grow past
/// [`MAX_BODY_BYTES`] (memory grows with what is actually decoded).
fn decompress(packed: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let decoder = zstd::stream::read::Decoder::new(packed).map_err(|e| format!("chunk does not decompress: {e}"))?;
    let mut body = Vec::new();
    decoder
        .take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("chunk does not decompress: {e}"))?;
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(format!("chunk decompresses past {MAX_BODY_BYTES} bytes"));
    }
    Ok(body)
}

/// Decodes a chunk's `data`.
pub fn decode(data: &[u8]) -> Result<Vec<Bar>, String> {
    let (format, codec, rest) = match data {
        [format, codec, rest @ ..] => (*format, *codec, rest),
        _ => return Err("chunk shorter than its header".into()),
    };
    if format != FORMAT {
        return Err(format!("unknown chunk format {format}"));
    }
    let body = match codec {
        CODEC_NONE => rest.to_vec(),
        CODEC_ZSTD => decompress(rest)?,
        other => return Err(format!("unknown chunk codec {other}")),
    };
    let mut r = Reader { bytes: &body, at: 0 };
    let n = usize::try_from(r.varint()?).map_err(|_| "bar count too large")?;
    // Every bar takes at least a byte of the body in each of its columns,
    // so a count past the body's length is a lie: refuse it before
    // allocating for it.
    if n > body.len() {
        return Err(format!("implausible bar count {n} for a body of {} bytes", body.len()));
    }
    let mut times = Vec::with_capacity(n);
    let mut previous = 0i64;
    for i in 0..n {
        let x = r.varint()?;
        previous = if i == 0 {
            unzigzag(x)
        } else {
            previous.wrapping_add(x as i64)
        };
        times.push(DateTime::from_timestamp_millis(previous).ok_or("bar time out of range")?);
    }
    let mut columns = Vec::with_capacity(6);
    for _ in 0..6 {
        columns.push(r.floats(n)?);
    }
    let mut bars = Vec::with_capacity(n);
    let mut count = 0i64;
    for (i, time) in times.into_iter().enumerate() {
        count = count.wrapping_add(unzigzag(r.varint()?));
        bars.push(Bar {
            time,
            open: columns[0][i],
            high: columns[1][i],
            low: columns[2][i],
            close: columns[3][i],
            volume: columns[4][i],
            trade_count: u64::try_from(count).map_err(|_| "negative trade count")?,
            vwap: columns[5][i],
        });
    }
    if r.at != body.len() {
        return Err(format!("{} bytes after the last column", body.len() - r.at));
    }
    Ok(bars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn bar(t: DateTime<Utc>, price: f64, volume: f64, n: u64) -> Bar {
        Bar {
            time: t,
            open: price,
            high: price * 1.01,
            low: price * 0.99,
            close: price + 0.01,
            volume,
            trade_count: n,
            vwap: price + 0.005,
        }
    }

    #[test]
    fn encoding_is_lossless_for_decimal_and_arbitrary_floats() {
        let t0: DateTime<Utc> = "2026-11-20T14:30:00Z".parse().unwrap();
        let bars = vec![
            bar(t0, 123.45, 1000.0, 10),
            bar(t0 + Duration::minutes(1), 0.000_123_4, 0.123_456_789, 0),
            bar(t0 + Duration::minutes(3), 61_234.5, 1e-9, 3),
            bar(t0 + Duration::minutes(4), std::f64::consts::PI, 12.0, 7),
        ];
        assert_eq!(decode(&encode(&bars)).unwrap(), bars);
        assert_eq!(decode(&encode(&[])).unwrap(), Vec::<Bar>::new());
    }

    #[test]
    fn a_day_of_crypto_minutes_stays_far_below_the_item_limit() {
        let t0: DateTime<Utc> = "2026-11-20T00:00:00Z".parse().unwrap();
        let bars: Vec<Bar> = (0..1440)
            .map(|i| {
                let price = 61_000.0 + (i as f64 * 0.37).sin() * 250.0;
                bar(
                    t0 + Duration::minutes(i),
                    price,
                    (i as f64 * 1.7).cos().abs() * 3.2,
                    i as u64 % 97,
                )
            })
            .collect();
        let data = encode(&bars);
        assert!(data.len() < 100_000, "{} bytes", data.len());
        assert_eq!(decode(&data).unwrap(), bars);
        assert!(bars.iter().all(|b| Span::Day.chunk_of(b.time) == t0.timestamp_millis()));
    }

    #[test]
    fn corrupt_chunks_are_refused() {
        let t0: DateTime<Utc> = "2026-11-20T00:00:00Z".parse().unwrap();
        let data = encode(&[bar(t0, 1.5, 2.0, 3)]);
        assert!(decode(&data[..data.len() - 1]).is_err());
        assert!(decode(&[9, 0]).is_err(), "unknown format");
        assert!(decode(&[FORMAT, 7, 1]).is_err(), "unknown codec");
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn merging_replaces_by_time_and_the_last_of_equal_times_wins() {
        let t0: DateTime<Utc> = "2026-11-20T00:00:00Z".parse().unwrap();
        let stored = vec![bar(t0, 1.0, 1.0, 1), bar(t0 + Duration::minutes(2), 2.0, 1.0, 1)];
        let new = vec![
            bar(t0 + Duration::minutes(1), 5.0, 1.0, 1),
            bar(t0 + Duration::minutes(2), 6.0, 1.0, 1),
            bar(t0 + Duration::minutes(2), 7.0, 1.0, 1),
        ];
        let merged = merge(stored.clone(), &dedup_last_wins(&new), true);
        let closes: Vec<f64> = merged.iter().map(|b| b.open).collect();
        assert_eq!(closes, vec![1.0, 5.0, 7.0]);
        let kept = merge(stored, &new, false);
        assert_eq!(kept.iter().map(|b| b.open).collect::<Vec<_>>(), vec![1.0, 5.0, 2.0]);
    }

    #[test]
    fn spans_follow_the_timeframe() {
        let t: DateTime<Utc> = "2026-11-20T05:00:00Z".parse().unwrap();
        let ms = |s: &str| s.parse::<DateTime<Utc>>().unwrap().timestamp_millis();
        assert_eq!(Span::of(Timeframe::MINUTE).chunk_of(t), ms("2026-11-20T00:00:00Z"));
        assert_eq!(Span::of(Timeframe::HOUR).chunk_of(t), ms("2026-11-01T00:00:00Z"));
        assert_eq!(Span::of(Timeframe::DAY).chunk_of(t), ms("2026-11-01T00:00:00Z"));
        let week: Timeframe = "1Week".parse().unwrap();
        assert_eq!(Span::of(week).chunk_of(t), ms("2026-01-01T00:00:00Z"));
    }
}
