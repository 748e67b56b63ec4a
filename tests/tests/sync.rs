//! The asset sync end to end: pages through the queue, reconcile once,
//! the delisting guard, events. Real RabbitMQ, simulator, worker processes.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use signal9_e2e::{text, Stack};
use signal9_shared::store::AssetStore;
use signal9_shared::store::RunStore;
use signal9_shared::store::{AssetFilter, RunStatus, SqliteStore};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Collects every event published in the stack's namespace.
async fn event_tap(stack: &Stack) -> (lapin::Connection, lapin::Consumer) {
    signal9_e2e::event_tap(stack, None).await.unwrap()
}

async fn drain(consumer: &mut lapin::Consumer) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut events: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_millis(1500), consumer.next()).await {
        let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        events
            .entry(event["type"].as_str().unwrap().to_owned())
            .or_default()
            .push(event);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_stores_the_active_universe_once_and_a_second_run_changes_nothing() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    stack.start_worker(&[]).unwrap();
    stack.start_worker(&[]).unwrap();
    let (_connection, mut tap) = event_tap(&stack).await;

    let out = stack
        .producer(&["sync", "--run-id", "r1", "--wait", "--wait-timeout-secs", "120"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let run = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");

    let truth = alpaca_sim::universe::generate(42, 12_000);
    let active_truth: HashSet<String> = truth.iter().filter(|a| a.active).map(|a| a.id.clone()).collect();
    let stored = store
        .list_assets(&AssetFilter {
            status: Some(signal9_alpaca::AssetStatus::Active),
            ..Default::default()
        })
        .await
        .unwrap();
    let active_stored: HashSet<String> = stored.iter().map(|a| a.asset.id.clone()).collect();
    assert_eq!(
        active_stored, active_truth,
        "the store's active assets are the simulator's"
    );
    let all = store.list_assets(&AssetFilter::default()).await.unwrap();
    assert_eq!(all.len(), truth.len());
    let calls = stack.sim_stats().await.unwrap()["apis"]["trading"]["accepted"]
        .as_u64()
        .unwrap();
    assert!(calls <= 10, "the sync spent {calls} calls");

    signal9_e2e::outbox_settled(&store).await;
    let events = drain(&mut tap).await;
    let listed: HashSet<&str> = events["asset.listed"]
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), truth.len(), "every asset.listed arrived");
    // At least once: a relay that lost its lease mid-pass may repeat at most
    // that pass; two relays never drain the backlog side by side.
    let repeats = events["asset.listed"].len() - listed.len();
    assert!(
        repeats <= signal9_shared::outbox::RELAY_BATCH,
        "{repeats} events delivered twice"
    );
    let listed = &events["asset.listed"][0]["data"];
    assert_eq!(listed["data_types"].as_array().unwrap().len(), 5);
    assert_eq!(events.get("sync.completed").map_or(0, Vec::len), 1, "reconciled once");
    assert!(!events.contains_key("asset.delisted"));

    let out = stack
        .producer(&["sync", "--run-id", "r2", "--wait", "--wait-timeout-secs", "120"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let pages_unchanged = text(&out)
        .lines()
        .filter(|l| l.trim_start().starts_with("sync:r2:") && l.contains(", new 0, updated 0,"))
        .count();
    assert_eq!(pages_unchanged, 2, "{}", text(&out));
    assert!(text(&out).contains("run r2: completed"), "{}", text(&out));
    let run = store.get_run("r2").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.result.unwrap().delisted, 0);
    let events = drain(&mut tap).await;
    assert!(!events.contains_key("asset.listed"), "nothing new the second time");
    assert_eq!(events.get("sync.completed").map_or(0, Vec::len), 1);

    let again = stack.producer(&["sync", "--run-id", "r2"]).await.unwrap();
    assert!(text(&again).contains("nothing published"), "{}", text(&again));
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_listing_trips_the_guard_and_delists_nothing() {
    let mut stack = Stack::start(&["--limit", "0", "--assets", "3000"]).unwrap();
    stack.start_worker(&[]).unwrap();
    let out = stack.producer(&["sync", "--run-id", "full", "--wait"]).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    signal9_e2e::outbox_settled(&SqliteStore::open(stack.sqlite_path()).unwrap()).await;
    let (_connection, mut tap) = event_tap(&stack).await;

    stack
        .set_faults(serde_json::json!({"truncate_assets": 0.5}))
        .await
        .unwrap();
    let out = stack
        .producer(&["sync", "--run-id", "truncated", "--wait"])
        .await
        .unwrap();
    assert!(!out.status.success(), "a suspect run is a failed sync: {}", text(&out));
    assert!(text(&out).contains("is suspect"), "{}", text(&out));
    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let run = store.get_run("truncated").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Suspect, "{run:?}");
    let with_delisted = store
        .list_assets(&AssetFilter {
            include_delisted: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        with_delisted.iter().all(|a| a.delisted_at.is_none()),
        "nothing was delisted"
    );
    let events = drain(&mut tap).await;
    assert_eq!(events.get("sync.suspect").map_or(0, Vec::len), 1, "{events:?}");
    assert!(!events.contains_key("asset.delisted"));
    assert!(
        stack.worker_logs().contains("Sync run is suspect"),
        "{}",
        stack.worker_logs()
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_between_runs_are_stored_and_published_exactly() {
    let mut stack = Stack::start(&["--limit", "0", "--assets", "2000"]).unwrap();
    stack.start_worker(&[]).unwrap();
    let out = stack.producer(&["sync", "--run-id", "before", "--wait"]).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    signal9_e2e::outbox_settled(&SqliteStore::open(stack.sqlite_path()).unwrap()).await;
    let (_connection, mut tap) = event_tap(&stack).await;

    let symbols = signal9_e2e::active_symbols(42, 2_000, 4);
    let changes = serde_json::json!({
        "set_active": [{"symbol": symbols[0], "active": false}, {"symbol": symbols[1], "active": false}],
        "set_tradable": [{"symbol": symbols[2], "tradable": false}],
        "add": [{"symbol": "NEWCO", "exchange": "NYSE"}],
        "remove": [symbols[3]],
    });
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/assets", stack.sim.base_url()))
        .json(&changes)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let out = stack.producer(&["sync", "--run-id", "after", "--wait"]).await.unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    let events = drain(&mut tap).await;
    let symbols_of = |kind: &str| -> Vec<String> {
        let mut s: Vec<String> = events
            .get(kind)
            .into_iter()
            .flatten()
            .map(|e| e["data"]["symbol"].as_str().unwrap_or("").to_owned())
            .collect();
        s.sort();
        s
    };
    let mut flipped = vec![symbols[0].clone(), symbols[1].clone(), symbols[2].clone()];
    flipped.sort();
    assert_eq!(symbols_of("asset.status_changed"), flipped);
    assert_eq!(symbols_of("asset.listed"), vec!["NEWCO".to_string()]);
    assert_eq!(symbols_of("asset.delisted"), vec![symbols[3].clone()]);

    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let flipped_asset = store
        .assets_by_symbol(&signal9_alpaca::Symbol::parse(&symbols[0]).unwrap())
        .await
        .unwrap();
    let current = flipped_asset
        .iter()
        .find(|a| a.previous_status.is_some())
        .expect("the flipped listing");
    assert_eq!(current.asset.status, signal9_alpaca::AssetStatus::Inactive);
    assert_eq!(current.previous_status, Some(signal9_alpaca::AssetStatus::Active));
    assert!(current.status_changed_at.is_some());
    let removed = store
        .assets_by_symbol(&signal9_alpaca::Symbol::parse(&symbols[3]).unwrap())
        .await
        .unwrap();
    assert!(removed.iter().any(|a| a.delisted_at.is_some()), "delisted, not deleted");
    let run = store.get_run("after").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    let result = run.result.unwrap();
    assert_eq!((result.new, result.status_changes), (1, 3), "{result:?}");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_still_ends_in_one_reconcile_and_a_closed_run() {
    // Slow listing calls keep both pages in flight when one worker dies.
    let mut stack = Stack::start(&["--limit", "0", "--assets", "2000", "--latency-ms", "1500"]).unwrap();
    stack.retry_tiers = "1s,2s,4s".into();
    stack.start_worker(&[]).unwrap();
    stack.start_worker(&[]).unwrap();
    let (_connection, mut tap) = event_tap(&stack).await;
    let sync = stack
        .producer_spawn(&["sync", "--run-id", "killed", "--wait", "--wait-timeout-secs", "90"])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stack.signal_worker(0, "-KILL").unwrap();
    let out = sync.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    assert!(text(&out).contains("run killed: completed"), "{}", text(&out));
    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let run = store.get_run("killed").await.unwrap().unwrap();
    assert_eq!((run.status, run.pages_done), (RunStatus::Completed, 2));
    // The killed worker may have held the relay lease: wait it out.
    signal9_e2e::outbox_settled(&store).await;
    let events = drain(&mut tap).await;
    let closed: HashSet<&str> = events
        .get("sync.completed")
        .into_iter()
        .flatten()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(closed.len(), 1, "one reconcile (delivered at least once)");
    stack.cleanup().await;
}

/// A worker writes a sync's changes and their events but never relays them
/// (as one killed between the store write and the publish); another worker
/// sends every one of them.
async fn events_of_a_killed_worker_arrive(dynamodb: bool) {
    let mut stack = Stack::start(&["--limit", "0", "--assets", "1000"]).unwrap();
    let store = stack.store(dynamodb).await.unwrap();
    let (_connection, mut tap) = event_tap(&stack).await;
    stack.start_worker(&["--outbox-relay", "off"]).unwrap();
    let out = stack
        .producer(&[
            "sync",
            "--run-id",
            "killed-early",
            "--wait",
            "--wait-timeout-secs",
            "180",
        ])
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    let waiting = store.pending_events(100_000).await.unwrap();
    assert_eq!(
        waiting.len(),
        1001,
        "1,000 asset.listed and sync.completed wait in the outbox"
    );
    assert!(drain(&mut tap).await.is_empty(), "nothing was published yet");
    stack.signal_worker(0, "-KILL").unwrap();

    stack.start_worker(&[]).unwrap();
    signal9_e2e::outbox_settled(store.as_ref()).await;
    let events = drain(&mut tap).await;
    let listed: HashSet<&str> = events["asset.listed"]
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 1000, "every asset.listed arrived (at least once)");
    let expected: HashSet<&str> = waiting.iter().map(|p| p.event.id.as_str()).collect();
    assert!(
        listed.iter().all(|id| expected.contains(id)),
        "the ids are the ones written"
    );
    assert_eq!(events.get("sync.completed").map_or(0, Vec::len), 1);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_worker_killed_before_publishing_are_sent_by_another_worker() {
    events_of_a_killed_worker_arrive(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_events_of_a_worker_killed_before_publishing_are_sent_by_another_worker() {
    events_of_a_killed_worker_arrive(true).await;
}

/// A page of one run fails and is dead-lettered; in between, another run
/// lists a new asset and sees one leave; the page is replayed from the
/// dead-letter queue after the snapshot window (here 3 s, 30 min by
/// default). The run's other page is listed again before reconcile, so
/// nothing listed in between is delisted and the run closes.
async fn a_late_replay_is_reconciled_against_a_fresh_listing(dynamodb: bool) {
    let mut stack = Stack::start(&["--limit", "0", "--assets", "1000"]).unwrap();
    let store = stack.store(dynamodb).await.unwrap();
    stack.start_worker(&["--sync-snapshot-secs", "3"]).unwrap();
    let out = stack
        .producer(&["sync", "--run-id", "day-1", "--wait", "--wait-timeout-secs", "180"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());

    // Day 2: the crypto listing fails for good and its page is dead-lettered.
    stack
        .set_faults(serde_json::json!({"fail_class": {"crypto": 422}}))
        .await
        .unwrap();
    let out = stack.producer(&["sync", "--run-id", "day-2"]).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let dead_lettered = signal9_e2e::eventually(Duration::from_secs(60), || async {
        let run = store.get_run("day-2").await.unwrap().unwrap();
        let list = stack
            .producer(&["dlq", "list", "--kind", "sync-page", "--json"])
            .await
            .unwrap();
        run.pages_done == 1 && text(&list).lines().filter(|l| l.contains("sync:day-2:crypto")).count() == 1
    })
    .await;
    assert!(dead_lettered, "{}", stack.worker_logs());
    stack.set_faults(serde_json::json!({})).await.unwrap();

    // In between: a new listing and a removal, seen by another run.
    let gone = signal9_e2e::active_symbols(42, 1_000, 1).remove(0);
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/assets", stack.sim.base_url()))
        .json(&serde_json::json!({"add": [{"symbol": "NEWCO", "exchange": "NYSE"}], "remove": [gone]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let out = stack
        .producer(&["sync", "--run-id", "between", "--wait", "--wait-timeout-secs", "180"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());

    // Later than the window: the operator replays the dead letter.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let out = stack.producer(&["dlq", "replay", "--kind", "sync-page"]).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let closed = signal9_e2e::eventually(Duration::from_secs(120), || async {
        store.get_run("day-2").await.unwrap().unwrap().status != RunStatus::Running
    })
    .await;
    assert!(closed, "{}", stack.worker_logs());
    let run = store.get_run("day-2").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let totals = run.result.unwrap();
    assert_eq!(totals.relisted_pages, 1, "the equity page was listed again: {totals:?}");
    assert_eq!(totals.delisted, 0, "{totals:?}");
    let newco = store
        .assets_by_symbol(&signal9_alpaca::Symbol::parse("NEWCO").unwrap())
        .await
        .unwrap();
    assert_eq!(newco.len(), 1);
    assert!(newco[0].delisted_at.is_none(), "listed in between, not delisted");
    let removed = store
        .assets_by_symbol(&signal9_alpaca::Symbol::parse(&gone).unwrap())
        .await
        .unwrap();
    assert!(removed.iter().all(|a| a.delisted_at.is_some()), "the removal stands");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_replayed_from_the_dlq_after_the_window_delists_nothing_listed_in_between() {
    a_late_replay_is_reconciled_against_a_fresh_listing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_a_page_replayed_from_the_dlq_after_the_window_delists_nothing_listed_in_between() {
    a_late_replay_is_reconciled_against_a_fresh_listing(true).await;
}
