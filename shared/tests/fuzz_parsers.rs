//! Property tests of the parsers that take outside input in the shared
//! library: the job envelope (any bytes, and envelopes with hostile
//! fields), the chunk decoder (any bytes, and damaged real chunks), and
//! the date arithmetic every accepted job reaches (calendar, estimates,
//! settle times). Each runs `FUZZ_CASES` cases (10,000 in CI); a case
//! proptest finds is kept in `proptest-regressions/` and replayed first.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use signal9_alpaca::BarRange;

use signal9_alpaca::{Symbol, Timeframe};
use signal9_shared::bounds;
use signal9_shared::ingest::BarsRequest;
use signal9_shared::job::{Job, Payload};
use signal9_shared::store::chunk;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    }
}

/// Any instant chrono can hold, biased to the edges and the window.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp();
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    prop_oneof![
        (min..=max).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
        (bounds::EARLIEST.timestamp() - 86_400..=Utc::now().timestamp() + 4 * 86_400)
            .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
    ]
}

/// A date as a client might write it: RFC 3339 of any instant, or text.
fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        instant().prop_map(|t| t.to_rfc3339()),
        Just("-0002-01-01T00:00:00Z".to_owned()),
        Just("+262142-01-01T00:00:00Z".to_owned()),
        Just("0000-01-01T00:00:00Z".to_owned()),
        "[0-9+-]{1,8}-[0-9]{2}-[0-9]{2}T[0-9:]{8}(Z|[+-][0-9]{2}:[0-9]{2})",
        ".{0,40}",
    ]
}

fn timeframe_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "1Min", "5Min", "59Min", "1Hour", "23Hour", "1Day", "1Week", "1Month", "12Month"
        ])
        .prop_map(str::to_owned),
        "[0-9]{1,4}(Min|T|Hour|H|Day|D|Week|W|Month|M|Fortnight)",
    ]
}

fn symbol_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["AAPL", "BRK.B", "BTC/USD", "ABCDW"]).prop_map(str::to_owned),
        "[A-Z./]{1,12}",
        ".{0,30}",
    ]
}

/// A fetch-bars envelope with every field drawn from hostile values.
fn envelope() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(1u32), any::<u32>()],
        prop_oneof!["[a-z0-9:-]{1,40}", ".{0,200}"],
        prop_oneof![
            Just("fetch-bars".to_owned()),
            Just("status-check".to_owned()),
            ".{0,20}"
        ],
        symbol_text(),
        timeframe_text(),
        date_text(),
        date_text(),
        prop::sample::select(vec!["raw", "split", "all", "dividend,split", "bogus"]),
        prop::sample::select(vec!["bulk", "interactive", "backfill", "urgent"]),
    )
        .prop_map(|(v, id, kind, symbol, timeframe, start, end, adjustment, priority)| {
            serde_json::json!({
                "v": v, "id": id, "kind": kind, "enqueued_at": "2026-11-23T04:00:00Z",
                "priority": priority,
                "payload": {"symbol": symbol, "timeframe": timeframe, "start": start, "end": end,
                            "adjustment": adjustment}
            })
            .to_string()
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_are_a_job_or_a_reason_never_a_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(error) = Job::parse(&body) {
            prop_assert!(error.to_string().len() < 400);
        }
    }

    /// An accepted job's range lies in the window, so everything a worker
    /// does with it (key, estimate, settle time) stays in range.
    #[test]
    fn an_accepted_job_is_in_bounds_and_safe_to_work_on(text in envelope()) {
        let now = Utc::now();
        let Ok(job) = Job::parse_at(text.as_bytes(), now) else { return Ok(()) };
        if let Payload::FetchBars(p) = job.payload {
            prop_assert!(bounds::check_range(p.range.start, p.range.end, now).is_ok());
            let crypto = p.symbol.is_crypto_pair();
            let _ = signal9_shared::plan::estimate_bars(p.range.timeframe, p.range.start, p.range.end, crypto);
            let request = BarsRequest { symbols: vec![p.symbol.clone()], range: p.range.clone() };
            prop_assert!(request.settles_at(std::time::Duration::from_secs(900)) >= p.range.end);
        }
    }

    #[test]
    fn any_bytes_are_a_chunk_or_a_reason_and_allocate_no_more_than_they_hold(
        data in prop::collection::vec(any::<u8>(), 0..512),
        codec in prop_oneof![Just(None), Just(Some(0u8)), Just(Some(1u8))],
    ) {
        let mut data = data;
        if let Some(codec) = codec {
            // A valid header, so the fuzzer reaches the body.
            data.splice(0..0, [chunk::FORMAT, codec]);
        }
        if let Ok(bars) = chunk::decode(&data) {
            if data.get(1) == Some(&0) {
                prop_assert!(bars.len() <= data.len(), "{} bars from {} bytes", bars.len(), data.len());
            }
        }
    }

    #[test]
    fn a_damaged_chunk_is_refused_or_read_never_a_panic(
        n in 1usize..300,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        zstd in any::<bool>(),
    ) {
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let bars: Vec<signal9_alpaca::Bar> = (0..n)
            .map(|i| signal9_alpaca::Bar {
                time: start + Duration::minutes(i64::try_from(i).unwrap_or(0)),
                open: 100.0 + i as f64 / 100.0,
                high: 101.0,
                low: 99.5,
                close: 100.25,
                volume: (i * 10) as f64,
                trade_count: i as u64,
                vwap: 100.1,
            })
            .collect();
        let mut data = if zstd { chunk::encode(&bars) } else { chunk::encode_with(&bars, chunk::Codec::None) };
        prop_assert_eq!(chunk::decode(&data).ok(), Some(bars));
        for (at, byte) in flips {
            let i = at.index(data.len());
            data[i] ^= byte | 1;
        }
        let _ = chunk::decode(&data);
    }

    /// The calendar and the estimates, at any instant chrono holds, over
    /// ranges of up to a month: no overflow, no panic.
    #[test]
    fn date_arithmetic_holds_at_any_instant(
        start in instant(),
        days in 0i64..31,
        timeframe in prop::sample::select(vec!["1Min", "15Min", "1Hour", "4Hour", "1Day", "1Week", "1Month", "6Month"]),
        crypto in any::<bool>(),
    ) {
        let timeframe: Timeframe = timeframe.parse().map_err(|_| TestCaseError::fail("timeframe"))?;
        let end = start.checked_add_signed(Duration::days(days)).unwrap_or(start);
        let _ = signal9_shared::plan::estimate_bars(timeframe, start, end, crypto);
        let date = signal9_shared::calendar::ny_date(start);
        let _ = signal9_shared::calendar::is_trading_day(date);
        let _ = signal9_shared::calendar::ny_day_range(date);
        let _ = signal9_shared::calendar::previous_trading_day(date);
        let symbol = Symbol::parse(if crypto { "BTC/USD" } else { "AAPL" }).map_err(|_| TestCaseError::fail("symbol"))?;
        let request = BarsRequest { symbols: vec![symbol], range: BarRange { timeframe, start, end, adjustment: signal9_alpaca::Adjustment::raw(), feed: None } };
        let _ = request.settles_at(std::time::Duration::from_secs(900));
    }
}
