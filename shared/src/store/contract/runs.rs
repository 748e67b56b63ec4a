//! The contract of [`RunStore`](crate::store::RunStore).

use super::*;

/// Runs: created once, pages counted once each, reconcile claimed once.
pub async fn sync_runs_count_pages_once(store: &dyn Store) {
    assert!(store.create_run("2026-11-23", 3, t0()).await.unwrap());
    assert!(
        !store.create_run("2026-11-23", 99, t0()).await.unwrap(),
        "a second create changes nothing"
    );
    let equity = page("us_equity", AssetClass::UsEquity, 10, t0());
    let p = store.record_page("2026-11-23", &equity).await.unwrap();
    assert_eq!((p.pages_done, p.pages_total), (1, 3));
    let again = PageRecord {
        listed: 11,
        ..equity.clone()
    };
    let p = store.record_page("2026-11-23", &again).await.unwrap();
    assert_eq!(p.pages_done, 1, "recording a page twice counts once");
    let crypto = page("crypto", AssetClass::Crypto, 2, t0());
    store.record_page("2026-11-23", &crypto).await.unwrap();
    let p = store
        .record_page("2026-11-23", &page("us_option", AssetClass::UsOption, 0, t0()))
        .await
        .unwrap();
    assert!(p.is_complete());
    assert!(store.record_page("no-such-run", &crypto).await.is_err());
    let pages = store.page_records("2026-11-23").await.unwrap();
    assert_eq!(pages.len(), 3);
    assert!(pages.contains(&crypto));
    assert!(pages.contains(&equity), "the first record of a page stays");

    let relisted = PageRecord {
        listed_at: t0() + Duration::hours(1),
        listed: 12,
        ..equity.clone()
    };
    store.replace_page("2026-11-23", &relisted).await.unwrap();
    let pages = store.page_records("2026-11-23").await.unwrap();
    assert_eq!(pages.len(), 3, "a replaced page is still one page");
    assert!(pages.contains(&relisted));

    let run = store.get_run("2026-11-23").await.unwrap().expect("run");
    assert_eq!(run.published_at, None);
    store
        .mark_published("2026-11-23", t0() + Duration::seconds(1))
        .await
        .unwrap();
    assert!(store.mark_published("nope", t0()).await.is_err());

    let stale = std::time::Duration::from_secs(60);
    assert!(store.claim_reconcile("2026-11-23", t0(), stale).await.unwrap());
    assert!(
        !store
            .claim_reconcile("2026-11-23", t0() + Duration::seconds(10), stale)
            .await
            .unwrap(),
        "reconcile is claimed once"
    );
    assert!(
        store
            .claim_reconcile("2026-11-23", t0() + Duration::seconds(61), stale)
            .await
            .unwrap(),
        "a claim older than stale_after (its holder died) can be taken over"
    );
    assert!(!store
        .claim_reconcile("2026-11-23", t0() + Duration::seconds(62), stale)
        .await
        .unwrap());

    let run = store.get_run("2026-11-23").await.unwrap().expect("run");
    assert_eq!(
        (run.status, run.pages_done, run.pages_total),
        (RunStatus::Running, 3, 3)
    );
    assert_eq!(run.published_at, Some(t0() + Duration::seconds(1)));
    assert_eq!(run.reconcile_claimed_at, Some(t0() + Duration::seconds(61)));
    assert!(store.last_completed_run().await.unwrap().is_none());
    let totals = RunTotals {
        new: 5,
        ..RunTotals::default()
    };
    store
        .finish_run("2026-11-23", RunStatus::Completed, &totals, t0() + Duration::hours(1))
        .await
        .unwrap();
    let run = store.get_run("2026-11-23").await.unwrap().expect("run");
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.result, Some(totals));
    assert_eq!(run.finished_at, Some(t0() + Duration::hours(1)));
    assert!(
        !store
            .claim_reconcile("2026-11-23", t0() + Duration::days(1), stale)
            .await
            .unwrap(),
        "a closed run is never claimed"
    );

    store
        .create_run("2026-11-24", 1, t0() + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(store.latest_run().await.unwrap().expect("latest").run_id, "2026-11-24");
    let recent: Vec<String> = store
        .recent_runs(5)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert!(
        recent.starts_with(&["2026-11-24".to_owned(), "2026-11-23".to_owned()]),
        "newest first: {recent:?}"
    );
    assert_eq!(store.recent_runs(1).await.unwrap().len(), 1);
    assert_eq!(
        store.last_completed_run().await.unwrap().expect("completed").run_id,
        "2026-11-23"
    );
    assert!(store.get_run("nope").await.unwrap().is_none());
    assert!(store
        .finish_run("nope", RunStatus::Failed, &RunTotals::default(), t0())
        .await
        .is_err());
}

/// Concurrent claims of one reconcile: exactly one wins.
pub async fn reconcile_claim_is_exclusive_under_concurrency(store: &dyn Store) {
    store.create_run("race", 1, t0()).await.unwrap();
    // Claims start together; SQLite runs them on several blocking threads.
    let claims: Vec<bool> = futures::future::join_all(
        (0..16).map(|_| store.claim_reconcile("race", t0(), std::time::Duration::from_secs(60))),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap())
    .collect();
    assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{claims:?}");
}
