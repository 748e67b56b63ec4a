//! The contract of [`AssetStore`](crate::store::AssetStore).

use super::*;

/// New, unchanged and updated assets are told apart; the same symbol under
/// two ids is two assets.
pub async fn assets_upsert_and_classify_changes(store: &dyn Store) {
    let a = sample_asset(1, "AAPL");
    let b = sample_asset(2, "BRK.B");
    let old_ticker = Asset {
        status: AssetStatus::Inactive,
        ..sample_asset(3, "AAPL")
    };
    let writes = store
        .upsert_assets(&[a.clone(), b.clone(), old_ticker.clone()], t0())
        .await
        .unwrap();
    assert!(writes.iter().all(|w| w.change == AssetChange::New), "{writes:?}");

    let writes = store
        .upsert_assets(&[a.clone(), b.clone()], t0() + Duration::hours(1))
        .await
        .unwrap();
    assert!(writes.iter().all(|w| w.change == AssetChange::Unchanged), "{writes:?}");
    let stored = store.get_asset(&a.id).await.unwrap().expect("stored");
    assert_eq!(stored.updated_at, t0(), "an unchanged asset is not rewritten");

    let flipped = Asset {
        status: AssetStatus::Inactive,
        tradable: false,
        ..a.clone()
    };
    let at = t0() + Duration::days(1);
    let writes = store.upsert_assets(std::slice::from_ref(&flipped), at).await.unwrap();
    assert_eq!(
        writes[0].change,
        AssetChange::Updated {
            status: Some((AssetStatus::Active, AssetStatus::Inactive)),
            tradable: Some((true, false)),
            relisted: false
        }
    );
    let stored = store.get_asset(&a.id).await.unwrap().expect("stored");
    assert_eq!(stored.asset, flipped);
    assert_eq!(stored.previous_status, Some(AssetStatus::Active));
    assert_eq!(stored.previous_tradable, Some(true));
    assert_eq!(stored.status_changed_at, Some(at));
    assert_eq!(stored.first_seen, t0());

    let by_symbol = store.assets_by_symbol(&a.symbol).await.unwrap();
    assert_eq!(by_symbol.len(), 2, "a recycled ticker keeps both ids");
    assert!(store
        .get_asset("00000000-0000-4000-8000-999999999999")
        .await
        .unwrap()
        .is_none());
}

/// Listing filters by class and status and hides delisted assets unless asked.
pub async fn assets_list_filters(store: &dyn Store) {
    let equity = sample_asset(10, "MSFT");
    let crypto = sample_asset(11, "BTC/USD");
    let inactive = Asset {
        status: AssetStatus::Inactive,
        ..sample_asset(12, "ZZZ")
    };
    store
        .upsert_assets(&[equity.clone(), crypto.clone(), inactive.clone()], t0())
        .await
        .unwrap();

    let all = store.list_assets(&AssetFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    let symbols: Vec<&str> = all.iter().map(|s| s.asset.symbol.as_str()).collect();
    assert_eq!(symbols, vec!["BTC/USD", "MSFT", "ZZZ"], "ordered by symbol");

    let crypto_only = store
        .list_assets(&AssetFilter {
            class: Some(AssetClass::Crypto),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(crypto_only.len(), 1);
    assert_eq!(crypto_only[0].asset, crypto);
    let active = store
        .list_assets(&AssetFilter {
            status: Some(AssetStatus::Active),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(active.len(), 2);
}

/// The backfill's symbols: active, tradable, not delisted US equities,
/// sorted, each once even when a recycled ticker has two assets.
pub async fn active_equity_symbols_are_the_backfill_set(store: &dyn Store) {
    let recycled = Asset {
        status: AssetStatus::Inactive,
        tradable: false,
        ..sample_asset(33, "MSFT")
    };
    let untradable = Asset {
        tradable: false,
        ..sample_asset(34, "NOTR")
    };
    let gone = sample_asset(35, "GONE");
    let assets = [
        sample_asset(30, "MSFT"),
        sample_asset(31, "BRK.B"),
        sample_asset(32, "ETH/USD"),
        recycled,
        untradable,
        gone.clone(),
        sample_asset(36, "BRK.B"),
    ];
    store.upsert_assets(&assets, t0()).await.unwrap();
    store
        .mark_delisted(std::slice::from_ref(&gone.id), t0(), None)
        .await
        .unwrap();
    let symbols = crate::store::active_equity_symbols(store).await.unwrap();
    let names: Vec<&str> = symbols.iter().map(Symbol::as_str).collect();
    assert_eq!(names, ["BRK.B", "MSFT"]);
}

/// Delisting marks, never deletes; a delisted asset seen again is relisted.
pub async fn assets_delist_and_relist(store: &dyn Store) {
    let a = sample_asset(20, "GONE");
    store.upsert_assets(std::slice::from_ref(&a), t0()).await.unwrap();
    let at = t0() + Duration::days(2);
    assert_eq!(
        store
            .mark_delisted(std::slice::from_ref(&a.id), at, None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .mark_delisted(std::slice::from_ref(&a.id), at, None)
            .await
            .unwrap(),
        0,
        "delisting twice changes nothing"
    );
    assert_eq!(
        store
            .mark_delisted(&["00000000-0000-4000-8000-777777777777".into()], at, None)
            .await
            .unwrap(),
        0
    );

    let stored = store.get_asset(&a.id).await.unwrap().expect("delisted assets are kept");
    assert_eq!(stored.delisted_at, Some(at));
    assert!(store.list_assets(&AssetFilter::default()).await.unwrap().is_empty());
    let with_delisted = store
        .list_assets(&AssetFilter {
            include_delisted: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(with_delisted.len(), 1);

    let writes = store
        .upsert_assets(std::slice::from_ref(&a), at + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        writes[0].change,
        AssetChange::Updated {
            status: None,
            tradable: None,
            relisted: true
        }
    );
    assert_eq!(store.get_asset(&a.id).await.unwrap().expect("kept").delisted_at, None);
}

/// Every asset a listing returns is stamped seen at the listing's time; a
/// stamp never moves back; refused-but-listed assets can be stamped alone.
pub async fn assets_are_stamped_seen(store: &dyn Store) {
    let a = sample_asset(40, "SEEN");
    let b = sample_asset(41, "ALSO");
    store.upsert_assets(&[a.clone(), b.clone()], t0()).await.unwrap();
    let later = t0() + Duration::hours(2);
    store.upsert_assets(std::slice::from_ref(&a), later).await.unwrap();
    let seen = |id: String| async move { store.get_asset(&id).await.unwrap().expect("stored").seen_at };
    assert_eq!(
        seen(a.id.clone()).await,
        Some(later),
        "an unchanged asset is stamped too"
    );
    assert_eq!(seen(b.id.clone()).await, Some(t0()));
    assert_eq!(
        store.get_asset(&a.id).await.unwrap().expect("stored").updated_at,
        t0(),
        "a stamp is not a change"
    );
    store.upsert_assets(std::slice::from_ref(&a), t0()).await.unwrap();
    assert_eq!(
        seen(a.id.clone()).await,
        Some(later),
        "an older listing never moves it back"
    );

    let stamped = store
        .mark_seen(&[b.id.clone(), "00000000-0000-4000-8000-555555555555".into()], later)
        .await
        .unwrap();
    assert_eq!(stamped, 1, "unknown ids are skipped");
    assert_eq!(seen(b.id.clone()).await, Some(later));
}
