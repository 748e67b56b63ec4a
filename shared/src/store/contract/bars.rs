//! The contract of [`BarStore`](crate::store::BarStore): bars, chunks,
//! coverage, checkpoints and corporate actions.

use super::*;

/// Writing the same bars twice leaves one copy; later values win.
pub async fn bars_upsert_is_idempotent(store: &dyn Store) {
    let key = series("AAPL", Timeframe::DAY);
    let bars: Vec<Bar> = (0..10).map(|d| sample_bar(d, 100.0 + d as f64)).collect();
    assert_eq!(store.upsert_bars(&key, &bars).await.unwrap(), 10);
    store.upsert_bars(&key, &bars).await.unwrap();
    let (start, end) = (t0(), t0() + Duration::days(30));
    assert_eq!(
        store.bars(&key, start, end).await.unwrap(),
        bars,
        "one copy of each bar, in time order, exact values"
    );

    let revised = sample_bar(4, 200.0);
    store.upsert_bars(&key, &[revised]).await.unwrap();
    let stored = store.bars(&key, start, end).await.unwrap();
    assert_eq!(stored.len(), 10);
    assert_eq!(stored[4], revised, "the last write wins");
}

/// Bars of different timeframes, adjustments, feeds and symbols never collide.
pub async fn bars_series_never_collide(store: &dyn Store) {
    let daily = series("AAPL", Timeframe::DAY);
    let hourly = series("AAPL", Timeframe::HOUR);
    let split = SeriesKey {
        adjustment: "split".parse().unwrap_or_default(),
        ..daily.clone()
    };
    let sip = SeriesKey {
        feed: Some(Feed::Sip),
        ..daily.clone()
    };
    let other = series("AAPL.W", Timeframe::DAY);
    for (i, key) in [&daily, &hourly, &split, &sip, &other].into_iter().enumerate() {
        store
            .upsert_bars(key, &[sample_bar(0, 10.0 * (i + 1) as f64)])
            .await
            .unwrap();
    }
    for (i, key) in [&daily, &hourly, &split, &sip, &other].into_iter().enumerate() {
        let got = store.bars(key, t0(), t0()).await.unwrap();
        assert_eq!(got.len(), 1, "{key}");
        assert_eq!(got[0].open, 10.0 * (i + 1) as f64, "{key} kept its own bar");
    }
}

/// Bars of many series written in one call land exactly as one upsert per
/// series would leave them, across any batching the backend does; a later
/// set of the same series wins.
pub async fn bar_sets_write_like_single_upserts(store: &dyn Store) {
    let symbols: Vec<String> = (0..40).map(|i| format!("S{i:02}")).collect();
    let mut sets: Vec<(SeriesKey, Vec<Bar>)> = symbols
        .iter()
        .map(|symbol| {
            let bars = (0..3).map(|d| sample_bar(d, 20.0 + d as f64)).collect();
            (series(symbol, Timeframe::DAY), bars)
        })
        .collect();
    let revised = sample_bar(1, 99.0);
    sets.push((series("S07", Timeframe::DAY), vec![revised]));
    assert_eq!(
        store.upsert_bar_sets(&sets).await.unwrap(),
        121,
        "bars written, as given"
    );
    assert_eq!(
        store.upsert_bar_sets(&[]).await.unwrap(),
        0,
        "an empty call writes nothing"
    );
    for symbol in &symbols {
        let got = store
            .bars(&series(symbol, Timeframe::DAY), t0(), t0() + Duration::days(10))
            .await
            .unwrap();
        assert_eq!(got.len(), 3, "{symbol}: each bar once");
        let expected_open = if symbol == "S07" { 99.0 } else { 21.0 };
        assert_eq!(got[1].open, expected_open, "{symbol}: the last set wins");
    }
}

/// Range reads are inclusive at both ends.
pub async fn bars_range_is_inclusive(store: &dyn Store) {
    let key = series("BTC/USD", Timeframe::DAY);
    let bars: Vec<Bar> = (0..5).map(|d| sample_bar(d, 50.0)).collect();
    store.upsert_bars(&key, &bars).await.unwrap();
    let got = store.bars(&key, bars[1].time, bars[3].time).await.unwrap();
    assert_eq!(got, bars[1..=3].to_vec());
    assert!(store
        .bars(&key, t0() + Duration::days(100), t0() + Duration::days(200))
        .await
        .unwrap()
        .is_empty());
}

/// Bars are counted over the same inclusive range `bars` reads.
pub async fn bars_are_counted_inclusively(store: &dyn Store) {
    let key = series("MSFT", Timeframe::DAY);
    let bars: Vec<Bar> = (0..7).map(|d| sample_bar(d, 20.0)).collect();
    store.upsert_bars(&key, &bars).await.unwrap();
    assert_eq!(store.count_bars(&key, bars[1].time, bars[4].time).await.unwrap(), 4);
    assert_eq!(store.count_bars(&key, bars[0].time, bars[6].time).await.unwrap(), 7);
    let other = series("MSFT", Timeframe::HOUR);
    assert_eq!(store.count_bars(&other, bars[0].time, bars[6].time).await.unwrap(), 0);
}

/// Checkpoints are written, replaced, read by key and removed; a key with
/// none is simply absent.
pub async fn checkpoints_replace_and_delete(store: &dyn Store) {
    let keys: Vec<String> = vec![
        "fetch|a".into(),
        "series|AAPL|1Min|raw|iex|1|2".into(),
        "missing".into(),
    ];
    assert!(store.checkpoints(&keys).await.unwrap().is_empty());
    store
        .put_checkpoints(&[
            (keys[0].clone(), "{\"n\":1}".into()),
            (keys[1].clone(), "{\"n\":2}".into()),
        ])
        .await
        .unwrap();
    store
        .put_checkpoints(&[(keys[0].clone(), "{\"n\":3}".into())])
        .await
        .unwrap();
    let found = store.checkpoints(&keys).await.unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[&keys[0]], "{\"n\":3}");
    assert_eq!(found[&keys[1]], "{\"n\":2}");
    store.delete_checkpoints(&keys).await.unwrap();
    assert!(store.checkpoints(&keys).await.unwrap().is_empty());
}

/// Recorded ranges merge; `covers` is true only inside one merged range.
pub async fn coverage_merges_ranges(store: &dyn Store) {
    let key = series("MSFT", Timeframe::DAY);
    let day = |d: i64| t0() + Duration::days(d);
    assert!(!store.covers(&key, day(0), day(1)).await.unwrap());
    store.add_coverage(&key, day(0), day(5)).await.unwrap();
    store.add_coverage(&key, day(10), day(15)).await.unwrap();
    assert!(store.covers(&key, day(1), day(4)).await.unwrap());
    assert!(store.covers(&key, day(0), day(5)).await.unwrap());
    assert!(
        !store.covers(&key, day(4), day(11)).await.unwrap(),
        "a gap is not covered"
    );
    assert_eq!(store.covered_until(&key, day(2)).await.unwrap(), Some(day(5)));
    assert_eq!(store.covered_until(&key, day(5)).await.unwrap(), Some(day(5)));
    assert_eq!(store.covered_until(&key, day(7)).await.unwrap(), None, "in the gap");
    assert_eq!(store.covered_until(&key, day(-1)).await.unwrap(), None, "before any");
    store.add_coverage(&key, day(5), day(10)).await.unwrap();
    assert!(
        store.covers(&key, day(0), day(15)).await.unwrap(),
        "touching ranges merge"
    );
    assert!(!store.covers(&key, day(0), day(16)).await.unwrap());
    assert!(
        !store
            .covers(&series("MSFT", Timeframe::HOUR), day(1), day(2))
            .await
            .unwrap(),
        "coverage is per series"
    );
}

/// Coverage of many series recorded in one call merges per series exactly
/// as one call per series does, and a series named twice is harmless.
pub async fn coverage_of_many_series_merges_per_series(store: &dyn Store) {
    let day = |d: i64| t0() + Duration::days(d);
    let keys: Vec<SeriesKey> = (0..30).map(|i| series(&format!("C{i:02}"), Timeframe::DAY)).collect();
    // Half the series already hold [0, 5]; the call adds [5, 9] to all.
    for key in keys.iter().step_by(2) {
        store.add_coverage(key, day(0), day(5)).await.unwrap();
    }
    let mut twice = keys.clone();
    twice.insert(4, keys[3].clone());
    store.add_coverage_many(&twice, day(5), day(9)).await.unwrap();
    for (i, key) in keys.iter().enumerate() {
        assert!(store.covers(key, day(5), day(9)).await.unwrap(), "{key}");
        assert_eq!(
            store.covers(key, day(0), day(9)).await.unwrap(),
            i % 2 == 0,
            "{key}: merged with its own earlier range only"
        );
    }
    store.add_coverage_many(&[], day(0), day(1)).await.unwrap();
}

/// A corporate action drops the coverage, bars and unfinished fetches of
/// exactly the series of its symbol whose adjustment it changes, puts one
/// `bars.invalidated` event per series in the outbox, and is applied once.
pub async fn corporate_actions_drop_the_adjusted_series_they_change(store: &dyn Store) {
    let with = |symbol: &str, timeframe: Timeframe, adjustment: &str| SeriesKey {
        adjustment: adjustment.parse().unwrap(),
        ..series(symbol, timeframe)
    };
    let raw = with("SPLT", Timeframe::DAY, "raw");
    let split = with("SPLT", Timeframe::DAY, "split");
    let all_hourly = with("SPLT", Timeframe::HOUR, "all");
    let dividend = with("SPLT", Timeframe::DAY, "dividend");
    let other = with("SPLT.B", Timeframe::DAY, "split");
    let bars: Vec<Bar> = (0..5).map(|d| sample_bar(d, 10.0)).collect();
    let (start, end) = (bars[0].time, bars[4].time);
    for key in [&raw, &split, &all_hourly, &dividend, &other] {
        store.upsert_bars(key, &bars).await.unwrap();
        store.add_coverage(key, start, end).await.unwrap();
    }
    // An unfinished fetch of an adjusted series, and one of the raw series.
    let checkpoint = |key: &SeriesKey| format!("bars|{key}|1|2");
    store
        .put_checkpoints(&[(checkpoint(&split), "{}".into()), (checkpoint(&raw), "{}".into())])
        .await
        .unwrap();
    let pending_before = store.pending_events(1000).await.unwrap().len();

    let action = signal9_alpaca::CorporateAction {
        id: "7e0c2a8e-0000-4000-8000-000000000001".into(),
        kind: signal9_alpaca::ActionKind::ForwardSplit,
        symbol: Symbol::parse("SPLT").unwrap(),
        ex_date: chrono::NaiveDate::from_ymd_opt(2025, 11, 27).unwrap(),
        terms: "4:1".into(),
    };
    let at = t0() + Duration::days(10);
    let mut dropped = store.apply_action(&action, at).await.unwrap().expect("first apply");
    dropped.sort();
    let mut expected = vec![split.clone(), all_hourly.clone()];
    expected.sort();
    assert_eq!(
        dropped, expected,
        "split and all change; raw, dividend and another symbol do not"
    );
    for key in [&split, &all_hourly] {
        assert!(!store.covers(key, start, end).await.unwrap(), "{key} still covered");
        assert_eq!(store.count_bars(key, start, end).await.unwrap(), 0, "{key} kept bars");
    }
    for key in [&raw, &dividend, &other] {
        assert!(store.covers(key, start, end).await.unwrap(), "{key} lost its coverage");
        assert_eq!(store.count_bars(key, start, end).await.unwrap(), 5, "{key} lost bars");
    }
    let checkpoints = store
        .checkpoints(&[checkpoint(&split), checkpoint(&raw)])
        .await
        .unwrap();
    assert!(
        !checkpoints.contains_key(&checkpoint(&split)),
        "the dropped series' fetch must start over"
    );
    assert!(checkpoints.contains_key(&checkpoint(&raw)));

    let pending = store.pending_events(1000).await.unwrap();
    let invalidated: Vec<_> = pending
        .iter()
        .filter(|p| p.event.kind == EventType::BarsInvalidated)
        .collect();
    assert_eq!(pending.len() - pending_before, 2);
    let mut named: Vec<String> = invalidated
        .iter()
        .map(|p| p.event.data["series"].as_str().unwrap().to_owned())
        .collect();
    named.sort();
    let mut keys: Vec<String> = expected.iter().map(ToString::to_string).collect();
    keys.sort();
    assert_eq!(named, keys);
    assert_eq!(invalidated[0].event.data["action"]["type"], "forward_split");
    assert_eq!(invalidated[0].event.data["symbol"], "SPLT");

    // Applied once: again, nothing changes, even bars stored since stay.
    store.upsert_bars(&split, &bars).await.unwrap();
    assert_eq!(store.apply_action(&action, at).await.unwrap(), None);
    assert_eq!(store.count_bars(&split, start, end).await.unwrap(), 5);
    assert_eq!(store.pending_events(1000).await.unwrap().len(), pending.len());
}

/// Bars across a chunk boundary (daily bars across a month's end, minute
/// bars across UTC midnight) are written in one call and read back whole
/// and in parts.
pub async fn chunks_bars_across_a_chunk_boundary(store: &dyn Store) {
    let daily = series("EDGE", Timeframe::DAY);
    let first: DateTime<Utc> = "2025-11-26T05:00:00Z".parse().unwrap();
    let days: Vec<Bar> = (0..8)
        .map(|d| minute_bar(first + Duration::days(d), 10.0 + d as f64))
        .collect();
    store.upsert_bars(&daily, &days).await.unwrap();
    let all = store.bars(&daily, days[0].time, days[7].time).await.unwrap();
    assert_eq!(all, days, "November and December chunks read as one range");
    let december: DateTime<Utc> = "2025-12-01T00:00:00Z".parse().unwrap();
    let tail = store.bars(&daily, december, days[7].time).await.unwrap();
    assert_eq!(tail.len(), 3);
    assert_eq!(store.count_bars(&daily, first, december).await.unwrap(), 5);

    let minutes = series("EDGE", Timeframe::MINUTE);
    let before_midnight: DateTime<Utc> = "2025-11-20T23:55:00Z".parse().unwrap();
    let bars: Vec<Bar> = (0..10)
        .map(|m| minute_bar(before_midnight + Duration::minutes(m), 20.0 + m as f64))
        .collect();
    store.upsert_bars(&minutes, &bars).await.unwrap();
    assert_eq!(store.bars(&minutes, bars[0].time, bars[9].time).await.unwrap(), bars);
    let midnight: DateTime<Utc> = "2025-11-21T00:00:00Z".parse().unwrap();
    assert_eq!(
        store.bars(&minutes, midnight, bars[9].time).await.unwrap(),
        bars[5..].to_vec()
    );
}

/// A bar written again inside an existing chunk replaces the stored one;
/// the chunk's other bars stay.
pub async fn chunks_a_bar_updated_inside_a_chunk(store: &dyn Store) {
    let key = series("UPDT", Timeframe::MINUTE);
    let t0: DateTime<Utc> = "2025-11-20T14:30:00Z".parse().unwrap();
    let bars: Vec<Bar> = (0..10)
        .map(|m| minute_bar(t0 + Duration::minutes(m), 50.0 + m as f64))
        .collect();
    store.upsert_bars(&key, &bars).await.unwrap();
    let fixed = Bar {
        close: 99.99,
        volume: 1234.0,
        ..bars[4]
    };
    store.upsert_bars(&key, std::slice::from_ref(&fixed)).await.unwrap();
    let stored = store.bars(&key, bars[0].time, bars[9].time).await.unwrap();
    assert_eq!(stored.len(), 10, "one copy of each bar");
    assert_eq!(stored[4], fixed);
    assert_eq!(stored[3], bars[3]);
    assert_eq!(stored[5], bars[5]);
}

/// Writers merging into one chunk at the same time lose none of each
/// other's bars.
pub async fn chunks_concurrent_writers_to_one_chunk_lose_nothing(store: &dyn Store) {
    let key = series("RACE", Timeframe::MINUTE);
    let t0: DateTime<Utc> = "2025-11-20T09:00:00Z".parse().unwrap();
    let writers = (0..8i64).map(|w| {
        let key = key.clone();
        let bars: Vec<Bar> = (0..20i64)
            .map(|i| minute_bar(t0 + Duration::minutes(w * 20 + i), 100.0 + w as f64))
            .collect();
        async move { store.upsert_bars(&key, &bars).await }
    });
    for result in futures::future::join_all(writers).await {
        result.unwrap();
    }
    let stored = store.bars(&key, t0, t0 + Duration::hours(3)).await.unwrap();
    assert_eq!(stored.len(), 160, "every writer's bars are in the chunk");
    assert!(stored.windows(2).all(|w| w[0].time < w[1].time));
}

/// Crypto bars of equal timestamps in one write: the last one wins; and a
/// whole day of crypto minutes (1,440 bars, one chunk) reads back exactly.
pub async fn chunks_equal_timestamps_last_wins_and_a_crypto_day_fits(store: &dyn Store) {
    let key = SeriesKey {
        feed: None,
        ..series("BTC/USD", Timeframe::MINUTE)
    };
    let t0: DateTime<Utc> = "2025-11-20T00:00:00Z".parse().unwrap();
    let twice = [
        minute_bar(t0, 61_000.5),
        minute_bar(t0 + Duration::minutes(1), 61_001.0),
        minute_bar(t0, 61_002.25),
    ];
    store.upsert_bars(&key, &twice).await.unwrap();
    let stored = store.bars(&key, t0, t0 + Duration::minutes(1)).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].open, 61_002.25, "the last bar of a time wins");

    let day: Vec<Bar> = (0..1440)
        .map(|m| {
            let price = 61_000.0 + ((m as f64) * 0.37).sin() * 250.0;
            Bar {
                volume: ((m as f64) * 1.7).cos().abs() * 3.217_5,
                ..minute_bar(t0 + Duration::minutes(m), price)
            }
        })
        .collect();
    store.upsert_bars(&key, &day).await.unwrap();
    let end = t0 + Duration::minutes(1439);
    assert_eq!(store.bars(&key, t0, end).await.unwrap(), day);
    assert_eq!(store.count_bars(&key, t0, end).await.unwrap(), 1440);
}
