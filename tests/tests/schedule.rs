//! The scheduler: three replicas at once, a cron firing every 2 seconds;
//! each run id fires exactly once.
#![allow(clippy::unwrap_used)]

use signal9_e2e::{queue_depth, Stack};
use signal9_shared::job::{JobKind, Priority};
use signal9_shared::store::BarStore;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_fire_each_run_exactly_once() {
    let mut stack = Stack::start(&["--limit", "0", "--assets", "200"]).unwrap();
    let args = [
        "schedule",
        "--cron",
        "*/2 * * * * *",
        "--run-id-format",
        "%Y-%m-%dT%H:%M:%S",
        "--lease-secs",
        "2",
    ];
    let schedulers: Vec<_> = (0..3).map(|_| stack.producer_spawn(&args).unwrap()).collect();
    tokio::time::sleep(Duration::from_secs(9)).await;
    let mut fired: BTreeMap<String, usize> = BTreeMap::new();
    let mut leaders = 0;
    for mut child in schedulers {
        child.start_kill().unwrap();
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        leaders += usize::from(text.contains(": leading"));
        for line in text.lines().filter_map(|l| l.strip_prefix("scheduler: fired run ")) {
            *fired.entry(line.to_owned()).or_default() += 1;
        }
    }
    assert!(fired.len() >= 3, "runs fired: {fired:?}");
    assert!(fired.values().all(|n| *n == 1), "a run fired twice: {fired:?}");
    assert_eq!(leaders, 1, "one leader while all three ran");
    // Each fired run published its two pages once; no worker consumed them.
    let queue = stack.topology().job_queue(JobKind::SyncPage, Priority::Bulk);
    assert_eq!(queue_depth(&queue).await.unwrap() as usize, 2 * fired.len());
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_run_is_followed_by_the_previous_trading_days_backfill_once() {
    use signal9_alpaca::{Adjustment, Feed, Symbol, Timeframe};
    use signal9_shared::calendar::{ny_date, ny_day_range, previous_trading_day};
    use signal9_shared::store::{SeriesKey, SqliteStore};

    let mut stack = Stack::start(&["--limit", "0", "--assets", "300"]).unwrap();
    stack.start_worker(&[]).unwrap();
    let scheduler = stack
        .producer_spawn(&[
            "schedule",
            "--cron",
            "0 4 * * *",
            "--run-id-format",
            "%Y-%m-%d",
            "--lease-secs",
            "2",
        ])
        .unwrap();
    let symbols = signal9_e2e::active_symbols(42, 300, 1_000);
    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let (start, end) = ny_day_range(previous_trading_day(ny_date(chrono::Utc::now())));
    // Every symbol's daily iex series covers [from, to].
    let all_covered = |from, to| {
        let (symbols, store) = (&symbols, &store);
        async move {
            for symbol in symbols {
                let key = SeriesKey {
                    symbol: Symbol::parse(symbol).unwrap(),
                    timeframe: Timeframe::DAY,
                    adjustment: Adjustment::raw(),
                    feed: Some(Feed::Iex),
                };
                if !store.covers(&key, from, to).await.unwrap_or(false) {
                    return false;
                }
            }
            true
        }
    };
    let covered = signal9_e2e::eventually(Duration::from_secs(60), || all_covered(start, end)).await;
    // The gap check: the five trading days before that day were never
    // stored (a fresh store), so each is a missing series-day, filled by
    // one job per symbol.
    let day = previous_trading_day(ny_date(chrono::Utc::now()));
    let mut first = day;
    for _ in 0..5 {
        first = previous_trading_day(first);
    }
    let (heal_start, heal_end) = (ny_day_range(first).0, ny_day_range(previous_trading_day(day)).1);
    let healed = signal9_e2e::eventually(Duration::from_secs(60), || all_covered(heal_start, heal_end)).await;
    // Every worker exports what the check found.
    let gauge = format!("signal9_gaps_missing_series_days {}", 5 * symbols.len());
    let exported = signal9_e2e::eventually(Duration::from_secs(40), || async {
        let status = stack.producer(&["status", "--json"]).await.unwrap();
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        let Some(addr) = status["workers"][0]["metrics_addr"].as_str() else {
            return false;
        };
        let metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics.lines().any(|l| l == gauge)
    })
    .await;
    let mut scheduler = scheduler;
    scheduler.start_kill().unwrap();
    let out = scheduler.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        covered,
        "the backfill of every active symbol ran\n{text}\n{}",
        stack.worker_logs()
    );
    let checked = format!(
        "{} missing series-days in the 5 trading days before {day}",
        5 * symbols.len()
    );
    assert!(text.contains(&checked), "{checked:?} missing from\n{text}");
    assert!(
        healed,
        "the gap check's jobs filled the five days\n{text}\n{}",
        stack.worker_logs()
    );
    assert!(exported, "the workers export {gauge:?}");
    assert!(
        text.contains("(scheduled "),
        "the missed 04:00 run fired on start: {text}"
    );
    assert_eq!(text.matches("scheduler: backfill for run").count(), 1, "{text}");
    assert!(text.contains(&format!("{} jobs", symbols.len())), "{text}");
    stack.cleanup().await;
}

/// The scheduler's arguments for a run id that is always `run_id`.
fn fixed_run_schedule(run_id: &str) -> Vec<&str> {
    vec![
        "schedule",
        "--cron",
        "0 4 * * *",
        "--run-id-format",
        run_id,
        "--lease-secs",
        "2",
        "--backfill-timeframes",
        "",
    ]
}

async fn wait_closed(store: &dyn signal9_shared::store::Store, run_id: &str) -> bool {
    use signal9_shared::store::RunStatus;
    signal9_e2e::eventually(Duration::from_secs(60), || async {
        store
            .get_run(run_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.status == RunStatus::Completed)
    })
    .await
}

/// What a scheduler killed between recording the run and publishing its
/// pages leaves (the run, two minutes old, with no page published) is
/// completed by the next scheduler.
async fn unpublished_run_heals(dynamodb: bool) {
    let mut stack = Stack::start(&["--limit", "0", "--assets", "300"]).unwrap();
    let store = stack.store(dynamodb).await.unwrap();
    store.init().await.unwrap();
    stack.start_worker(&[]).unwrap();
    let recorded = chrono::Utc::now() - chrono::Duration::minutes(2);
    assert!(store.create_run("healed", 2, recorded).await.unwrap());

    let mut scheduler = stack.producer_spawn(&fixed_run_schedule("healed")).unwrap();
    let closed = wait_closed(store.as_ref(), "healed").await;
    scheduler.start_kill().unwrap();
    let out = scheduler.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(closed, "the run did not close\n{said}\n{}", stack.worker_logs());
    assert!(said.contains("run healed: its pages were never published"), "{said}");
    let run = store.get_run("healed").await.unwrap().unwrap();
    assert_eq!((run.pages_done, run.result.unwrap().listed), (2, 300));
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_recorded_but_never_published_is_completed_by_the_next_scheduler() {
    unpublished_run_heals(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_a_run_recorded_but_never_published_is_completed_by_the_next_scheduler() {
    unpublished_run_heals(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_pages_all_ended_but_never_closed_is_closed_by_the_scheduler() {
    unclosed_run_heals(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_a_run_whose_pages_all_ended_but_never_closed_is_closed_by_the_scheduler() {
    unclosed_run_heals(true).await;
}

async fn unclosed_run_heals(dynamodb: bool) {
    use signal9_alpaca::AssetClass;
    use signal9_shared::job::SyncPage;
    use signal9_shared::store::PageRecord;
    let mut stack = Stack::start(&["--limit", "0", "--assets", "300"]).unwrap();
    // Both pages recorded ten minutes ago, and the run still open: its
    // reconcile died and nothing retried it.
    let store = stack.store(dynamodb).await.unwrap();
    store.init().await.unwrap();
    stack.start_worker(&[]).unwrap();
    let then = chrono::Utc::now() - chrono::Duration::minutes(10);
    store.create_run("stuck", 2, then).await.unwrap();
    store.mark_published("stuck", then).await.unwrap();
    let client = signal9_e2e::sim_client(&stack.sim.base_url(), Duration::from_secs(30));
    for class in [AssetClass::UsEquity, AssetClass::Crypto] {
        let slice = SyncPage {
            asset_class: class,
            exchange: None,
            status: None,
        };
        let query = signal9_shared::sync::slice_query(&slice);
        let report = signal9_shared::sync::sync_slice(&client, store.as_ref(), &query, Some("stuck"))
            .await
            .unwrap();
        let page = PageRecord {
            listed_at: then,
            ..report.record(&format!("sync:stuck:{class}"), &slice)
        };
        store.record_page("stuck", &page).await.unwrap();
    }

    let mut scheduler = stack.producer_spawn(&fixed_run_schedule("stuck")).unwrap();
    let closed = wait_closed(store.as_ref(), "stuck").await;
    scheduler.start_kill().unwrap();
    let out = scheduler.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(closed, "the run did not close\n{said}\n{}", stack.worker_logs());
    assert!(said.contains("every page is done but the run never closed"), "{said}");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_exits_cleanly_and_hands_leadership_over_before_its_lease_ends() {
    let mut stack = Stack::start(&["--limit", "0", "--assets", "200"]).unwrap();
    // A long lease: without a release the follower would wait 60 s.
    let args = ["schedule", "--cron", "0 4 * * *", "--lease-secs", "60", "--no-catch-up"];
    let leader = stack.producer_spawn(&args).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let follower = stack.producer_spawn(&args).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = leader.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(20), leader.wait_with_output())
        .await
        .expect("the scheduler stops on SIGTERM")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "a clean exit: {:?}\n{text}", out.status);
    assert!(text.contains(": leading"), "{text}");
    assert!(text.contains("stopped; leadership released"), "{text}");
    // The follower leads well before the 60 s lease would have run out.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut follower = follower;
    follower.start_kill().unwrap();
    let out = follower.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(": leading"), "the follower took over: {text}");
    stack.cleanup().await;
}
