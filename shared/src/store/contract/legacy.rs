//! The contract of [`LegacyStore`](crate::store::LegacyStore): the migration into chunks.

use super::*;

/// Bars kept by an older version one per row or item are read beside the
/// chunks (a chunk's bar winning), and the migration moves them into
/// chunks, verifies them, drops the old layout and can be run again.
pub async fn chunks_per_bar_data_migrates_into_chunks(store: &dyn Store) {
    let daily = series("OLDD", Timeframe::DAY);
    let minutes = series("OLDM", Timeframe::MINUTE);
    let t0: DateTime<Utc> = "2025-10-01T04:00:00Z".parse().unwrap();
    let days: Vec<Bar> = (0..40)
        .map(|d| minute_bar(t0 + Duration::days(d), 30.0 + d as f64))
        .collect();
    let mins: Vec<Bar> = (0..300).map(|m| minute_bar(t0 + Duration::minutes(m), 40.0)).collect();
    store.put_legacy_bars(&daily, &days).await.unwrap();
    store.put_legacy_bars(&minutes, &mins).await.unwrap();
    // A worker of this version wrote a newer bar of one of those days.
    let newer = Bar {
        close: 77.0,
        ..days[10]
    };
    store.upsert_bars(&daily, std::slice::from_ref(&newer)).await.unwrap();
    let read = store.bars(&daily, days[0].time, days[39].time).await.unwrap();
    assert_eq!(read.len(), 40, "the old layout is read beside the chunks");
    assert_eq!(read[10], newer, "a chunk's bar wins");

    let mut pages = 0;
    let migration = crate::store::migrate::migrate_bars(store, 64, |_| pages += 1)
        .await
        .unwrap()
        .expect("there was per-bar data");
    assert_eq!(migration.progress.bars, 340, "{migration:?}");
    assert_eq!(migration.series, 2);
    assert!(migration.dropped);
    assert!(pages >= 340 / 64, "{pages} pages");
    assert!(
        store.legacy_bars(None, 10).await.unwrap().is_none(),
        "the old layout is gone"
    );
    let chunked = store.chunked_bars(&daily, days[0].time, days[39].time).await.unwrap();
    assert_eq!(chunked.len(), 40);
    assert_eq!(chunked[10], newer, "the migration kept the newer bar");
    assert_eq!(chunked[11], days[11]);
    assert_eq!(store.bars(&minutes, mins[0].time, mins[299].time).await.unwrap(), mins);
    assert_eq!(
        crate::store::migrate::migrate_bars(store, 64, |_| {}).await.unwrap(),
        None,
        "nothing left"
    );
}
