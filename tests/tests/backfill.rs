//! History on demand, end to end: real worker processes, RabbitMQ, Redis,
//! the simulator over HTTP and the SQLite store. A request larger than one
//! budget window streams page by page and goes on from its checkpoints, so
//! it finishes paying for each page once.
#![allow(clippy::unwrap_used)]

use alpaca_sim::bars::Frame;
use chrono::{DateTime, Utc};
use signal9_alpaca::BarRange;
use signal9_alpaca::{Adjustment, Feed, Symbol, Timeframe};
use signal9_e2e::{active_symbols, fetch_iex_minutes, fetch_interactive_week, sim_bar_count, text, Stack};
use signal9_shared::ingest::BarsRequest;
use signal9_shared::plan::PAGE_BARS;
use signal9_shared::store::BarStore;
use signal9_shared::store::SqliteStore;

const ASSETS: &str = "12000";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Minute bars of `symbols` from 2026-08-24 to 2026-11-20 (about three months).
fn three_months(symbols: &[String]) -> BarsRequest {
    BarsRequest {
        symbols: symbols.iter().map(|s| Symbol::parse(s).unwrap()).collect(),
        range: BarRange {
            timeframe: Timeframe::MINUTE,
            start: t("2026-08-24T00:00:00Z"),
            end: t("2026-11-20T23:59:59Z"),
            adjustment: Adjustment::raw(),
            feed: Some(Feed::Iex),
        },
    }
}

/// The simulator's bars of every series of the request, and the pages they fill.
fn truth(symbols: &[String], request: &BarsRequest) -> (usize, u64) {
    let bars = sim_bar_count(symbols, Frame::Min(1), request.range.start, request.range.end);
    (bars, (bars as u64).div_ceil(PAGE_BARS))
}

/// Bars the stack's store holds for the request; every series must be covered.
async fn stored_and_covered(stack: &Stack, request: &BarsRequest) -> usize {
    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let mut stored = 0;
    for symbol in &request.symbols {
        let series = request.series(symbol);
        stored += store
            .count_bars(&series, request.range.start, request.range.end)
            .await
            .unwrap();
        assert!(
            store
                .covers(&series, request.range.start, request.range.end)
                .await
                .unwrap(),
            "{symbol}"
        );
    }
    stored
}

async fn data_calls(stack: &Stack) -> u64 {
    stack.data_calls().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_request_larger_than_a_budget_window_finishes_paying_each_page_once() {
    // The scenario: one worker, 20 data calls per 10 s, a 5 s wait,
    // ten symbols × three months of minute bars (about 60 pages). Before
    // streaming, the fetch re-spent its first pages forever.
    let mut stack = Stack::start(&["--limit", "0", "--assets", ASSETS]).unwrap();
    stack.extra_env = vec![
        ("SIGNAL9_DATA_LIMIT".into(), "20".into()),
        ("SIGNAL9_DATA_WINDOW_SECS".into(), "10".into()),
        ("SIGNAL9_BUDGET_WAIT_SECS".into(), "5".into()),
        ("RUST_LOG".into(), "info".into()),
    ];
    stack.start_worker(&[]).unwrap();
    let symbols = active_symbols(42, 12_000, 10);
    let file = stack.symbols_file(&symbols);
    let (start, end) = ("2026-08-24", "2026-11-20");
    let out = stack
        .producer(&fetch_iex_minutes(&file, start, end, Some("400")))
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    assert!(text(&out).contains("succeeded 10, dead-lettered 0"), "{}", text(&out));

    let request = three_months(&symbols);
    let (bars, pages) = truth(&symbols, &request);
    assert!(
        pages > 40,
        "the request needs more pages ({pages}) than two budget windows hold"
    );
    let calls = data_calls(&stack).await;
    assert!(
        calls * 100 <= pages * 105,
        "{calls} calls for {pages} pages\n{}",
        stack.worker_logs()
    );
    eprintln!(
        "{calls} calls for {pages} pages, {bars} bars; deferrals: {}",
        stack.worker_logs().matches("Job delayed without an attempt").count()
    );
    assert_eq!(stored_and_covered(&stack, &request).await, bars);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturating_backfill_leaves_interactive_requests_and_the_daily_pipeline_their_budget() {
    // 20 data calls per second, 20 % of it kept for interactive requests.
    let mut stack = Stack::start(&["--limit", "0", "--assets", ASSETS]).unwrap();
    stack.extra_env = vec![
        ("SIGNAL9_DATA_LIMIT".into(), "20".into()),
        ("SIGNAL9_DATA_WINDOW_SECS".into(), "1".into()),
        ("SIGNAL9_INTERACTIVE_RESERVE".into(), "0.2".into()),
        ("SIGNAL9_BUDGET_WAIT_SECS".into(), "5".into()),
    ];
    stack.start_worker(&[]).unwrap();
    // A backfill of 30 symbols × 4 months of minute bars: about 200 pages,
    // ten seconds of the whole budget.
    let symbols = active_symbols(42, 12_000, 40);
    let heavy = stack.symbols_file(&symbols[..30]);
    let mut backfill = stack
        .producer_spawn(&[
            "fetch-bars",
            "--symbols-file",
            &heavy,
            "--timeframe",
            "1Min",
            "--start",
            "2026-07-20",
            "--end",
            "2026-11-20",
            "--feed",
            "iex",
            "--priority",
            "backfill",
            "--wait",
            "--wait-timeout-secs",
            "300",
        ])
        .unwrap();
    let saturated = stack.await_data_calls(40, std::time::Duration::from_secs(30)).await;
    assert!(saturated, "the backfill did not start\n{}", stack.worker_logs());

    // An interactive request meanwhile: answered within 2 s.
    let one = stack.symbols_file(&symbols[30..31]);
    let asked = std::time::Instant::now();
    let out = stack.producer(&fetch_interactive_week(&one)).await.unwrap();
    let took = asked.elapsed();
    assert!(text(&out).contains("succeeded 1, dead-lettered 0"), "{}", text(&out));
    assert!(
        took < std::time::Duration::from_secs(2),
        "interactive fetch took {took:?}"
    );

    // The daily pipeline meanwhile: a sync run and the day's bars complete
    // while the backfill is still going.
    let out = stack
        .producer(&["sync", "--run-id", "lanes-1", "--wait", "--wait-timeout-secs", "120"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let daily = stack.symbols_file(&symbols[30..]);
    let out = stack
        .producer(&[
            "fetch-bars",
            "--symbols-file",
            &daily,
            "--timeframe",
            "1Day",
            "--start",
            "2026-11-20",
            "--end",
            "2026-11-20",
            "--wait",
            "--wait-timeout-secs",
            "60",
        ])
        .await
        .unwrap();
    assert!(text(&out).contains("succeeded 10, dead-lettered 0"), "{}", text(&out));
    assert!(
        backfill.try_wait().unwrap().is_none(),
        "the backfill had already finished: the test did not overlap"
    );
    let out = backfill.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("succeeded 30, dead-lettered 0"), "{}", text(&out));
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backfill_planner_prints_its_plan_skips_what_is_stored_and_spends_what_it_planned() {
    let mut stack = Stack::start(&["--limit", "0", "--assets", ASSETS]).unwrap();
    stack.start_worker(&[]).unwrap();
    let symbols = active_symbols(42, 12_000, 130);
    let file = stack.symbols_file(&symbols);
    let args = |extra: &'static str| {
        let mut args = vec![
            "backfill",
            "--symbols-file",
            file.as_str(),
            "--timeframe",
            "1Day",
            "--start",
            "2025-11-24",
            "--end",
            "2026-11-20",
            "--feed",
            "iex",
        ];
        args.push(extra);
        args
    };
    // A dry run prints the plan and publishes nothing.
    let out = stack.producer(&args("--dry-run")).await.unwrap();
    let plan = text(&out);
    assert!(out.status.success(), "{plan}");
    for line in [
        "jobs: 130",
        "requests: 1",
        "estimated calls: 4",
        "dry run: nothing published",
    ] {
        assert!(plan.contains(line), "{line:?} missing from\n{plan}");
    }
    assert_eq!(data_calls(&stack).await, 0);

    // Run and wait: the summary, and the calls the plan said.
    let out = stack.producer(&args("--wait")).await.unwrap();
    let done = text(&out);
    assert!(out.status.success(), "{done}\n{}", stack.worker_logs());
    assert!(done.contains("succeeded 130, dead-lettered 0"), "{done}");
    assert!(done.contains("backfill done: 130 jobs"), "{done}");
    assert_eq!(data_calls(&stack).await, 4, "{done}");

    // Planned again: every range is stored, nothing is left to fetch.
    let out = stack.producer(&args("--wait")).await.unwrap();
    let again = text(&out);
    assert!(again.contains("130 symbol ranges skipped"), "{again}");
    assert!(again.contains("nothing to fetch"), "{again}");
    assert_eq!(data_calls(&stack).await, 4);

    // One job of six years of minute bars is over the page limit: refused
    // at once, naming the limit, with no call.
    let out = stack
        .producer(&[
            "fetch-bars",
            "--symbols",
            &symbols[0],
            "--timeframe",
            "1Min",
            "--start",
            "2020-01-01",
            "--end",
            "2025-12-31",
            "--wait",
            "--wait-timeout-secs",
            "30",
        ])
        .await
        .unwrap();
    let refused = text(&out);
    assert!(!out.status.success(), "{refused}");
    assert!(refused.contains("dead-lettered 1"), "{refused}");
    assert!(
        refused.contains("permanent") && refused.contains("SIGNAL9_MAX_JOB_PAGES"),
        "{refused}"
    );
    assert_eq!(data_calls(&stack).await, 4);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_whose_worker_is_killed_goes_on_from_its_checkpoints_in_the_next_worker() {
    let mut stack = Stack::start(&["--limit", "0", "--assets", ASSETS]).unwrap();
    stack.extra_env = vec![
        ("SIGNAL9_DATA_LIMIT".into(), "10".into()),
        ("SIGNAL9_DATA_WINDOW_SECS".into(), "1".into()),
    ];
    let first = stack.start_worker(&[]).unwrap();
    let symbols = active_symbols(42, 12_000, 4);
    let file = stack.symbols_file(&symbols);
    let producer = stack
        .producer_spawn(&[
            "backfill",
            "--symbols-file",
            &file,
            "--timeframe",
            "1Min",
            "--start",
            "2026-08-24",
            "--end",
            "2026-11-20",
            "--feed",
            "iex",
            "--wait",
            "--wait-timeout-secs",
            "300",
        ])
        .unwrap();
    // Killed (SIGKILL: no goodbye) once a few pages are stored.
    let started = stack.await_data_calls(8, std::time::Duration::from_secs(60)).await;
    assert!(started, "{}", stack.worker_logs());
    stack.signal_worker(first, "-KILL").unwrap();
    let _ = stack.worker(first).wait();
    let before = data_calls(&stack).await;
    stack.start_worker(&[]).unwrap();
    let out = producer.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    assert!(text(&out).contains("succeeded 4, dead-lettered 0"), "{}", text(&out));

    let request = three_months(&symbols);
    let (bars, pages) = truth(&symbols, &request);
    let calls = data_calls(&stack).await;
    // The page in flight at the kill may be paid for again, and the
    // series it was in may go on alone (one short page): two calls at most.
    assert!(
        calls <= pages + 2,
        "{calls} calls for {pages} pages ({before} before the kill)"
    );
    assert_eq!(stored_and_covered(&stack, &request).await, bars);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_lists_the_sessions_a_lost_job_left_and_fill_enqueues_exactly_those() {
    let mut stack = Stack::start(&["--limit", "0", "--assets", ASSETS]).unwrap();
    stack.start_worker(&[]).unwrap();
    let list = active_symbols(42, 12_000, 3).join(",");
    // Monday-Tuesday and Thursday-Friday are stored; Wednesday's job was lost.
    for (start, end) in [
        ("2026-11-16T05:00:00Z", "2026-11-18T04:59:59Z"),
        ("2026-11-19T05:00:00Z", "2026-11-21T04:59:59Z"),
    ] {
        let out = stack
            .producer(&[
                "fetch-bars",
                "--symbols",
                &list,
                "--timeframe",
                "1Day",
                "--start",
                start,
                "--end",
                end,
                "--feed",
                "iex",
                "--wait",
            ])
            .await
            .unwrap();
        assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    }
    let spent = data_calls(&stack).await;
    let gaps = |extra: &[&'static str]| {
        let mut args = vec![
            "gaps",
            "--symbols",
            list.as_str(),
            "--timeframe",
            "1Day",
            "--start",
            "2026-11-16T05:00:00Z",
            "--end",
            "2026-11-21T04:59:59Z",
            "--feed",
            "iex",
        ];
        args.extend_from_slice(extra);
        args
    };
    let out = stack.producer(&gaps(&["--json"])).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["series_checked"], 3, "{report}");
    assert_eq!(report["series_with_gaps"], 3, "{report}");
    assert_eq!(report["missing_sessions"], 3, "{report}");
    assert_eq!(report["estimated_calls"], 1, "{report}");
    for series in report["series"].as_array().unwrap() {
        assert_eq!(series["missing"], serde_json::json!(["2026-11-18"]), "{series}");
    }
    assert_eq!(data_calls(&stack).await, spent, "listing gaps costs no call");

    // --fill enqueues exactly the missing session: one call for the three.
    let out = stack.producer(&gaps(&["--fill", "--wait"])).await.unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    assert!(text(&out).contains("succeeded 3, dead-lettered 0"), "{}", text(&out));
    assert_eq!(data_calls(&stack).await, spent + 1);
    let out = stack.producer(&gaps(&[])).await.unwrap();
    assert!(
        text(&out).contains("with gaps 0, covered but empty 0; missing sessions 0"),
        "{}",
        text(&out)
    );
    stack.cleanup().await;
}
