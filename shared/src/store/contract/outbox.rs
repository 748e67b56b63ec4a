//! The contract of [`OutboxStore`](crate::store::OutboxStore): every change with its event.

use super::*;

/// Each change puts its event in the outbox with it; an unchanged asset
/// puts none; the same change has the same event id; sent events leave.
pub async fn changes_put_their_events_in_the_outbox(store: &dyn Store) {
    let a = sample_asset(50, "EVNT");
    store
        .upsert_assets_seen(std::slice::from_ref(&a), t0(), Some("r1"))
        .await
        .unwrap();
    store
        .upsert_assets_seen(std::slice::from_ref(&a), t0() + Duration::hours(1), Some("r1"))
        .await
        .unwrap();
    let pending = store.pending_events(100).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].event.kind, EventType::AssetListed);
    assert_eq!(pending[0].event.run_id.as_deref(), Some("r1"));
    let listed_id = pending[0].event.id.clone();

    let flipped = Asset {
        status: AssetStatus::Inactive,
        ..a.clone()
    };
    let at = t0() + Duration::days(1);
    store
        .upsert_assets_seen(std::slice::from_ref(&flipped), at, Some("r2"))
        .await
        .unwrap();
    store
        .mark_delisted(std::slice::from_ref(&a.id), at + Duration::hours(1), Some("r2"))
        .await
        .unwrap();
    store
        .upsert_assets_seen(std::slice::from_ref(&flipped), at + Duration::hours(2), Some("r3"))
        .await
        .unwrap();
    store.create_run("r3", 1, at).await.unwrap();
    store
        .finish_run("r3", RunStatus::Suspect, &RunTotals::default(), at + Duration::hours(3))
        .await
        .unwrap();
    let pending = store.pending_events(100).await.unwrap();
    let kinds: Vec<EventType> = pending.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::AssetListed,
            EventType::AssetStatusChanged,
            EventType::AssetDelisted,
            EventType::AssetListed,
            EventType::SyncSuspect
        ],
        "oldest first: {pending:?}"
    );
    assert_eq!(
        pending[3].event.data["relisted"], true,
        "a delisted asset seen again is listed again"
    );
    assert_ne!(pending[3].event.id, listed_id);
    assert!(store.pending_events(2).await.unwrap().len() >= 2);

    // Sent events leave (by receipt: a backend may keep several together).
    let first: Vec<_> = pending
        .iter()
        .filter(|p| p.receipt == pending[0].receipt)
        .cloned()
        .collect();
    store.events_sent(&first).await.unwrap();
    let left = store.pending_events(100).await.unwrap();
    assert_eq!(left.len(), pending.len() - first.len());
    assert!(left.iter().all(|e| e.event.id != listed_id));
    store.events_sent(&left).await.unwrap();
    assert!(store.pending_events(100).await.unwrap().is_empty());
}
