//! A store outage stops the spending (issue 26, item 2): while the store
//! cannot take writes, a worker spends no more Alpaca calls than were in
//! flight when the outage began, dead-letters nothing, and finishes the work
//! by itself once the store answers. The outage is real: another process
//! holds SQLite's write lock for 30 s, past the worker's 1 s busy timeout
//! (`SIGNAL9_SQLITE_BUSY_TIMEOUT_MS`), so its writes and its probe fail.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use signal9_e2e::{active_symbols, eventually, queue_depth, sim_bar_count, text, Stack};

const START: &str = "2026-11-02T00:00:00Z";
const END: &str = "2026-11-20T23:59:59Z";
const CONCURRENCY: u64 = 4;

fn stored_bars(stack: &Stack) -> usize {
    let db = rusqlite::Connection::open(stack.sqlite_path()).unwrap();
    db.busy_timeout(Duration::from_secs(60)).unwrap();
    db.query_row("SELECT coalesce(sum(n), 0) FROM bar_chunks", [], |r| r.get::<_, i64>(0))
        .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_stops_the_spending_and_the_work_resumes_by_itself() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    // One call per job, 20 a second: 400 jobs last about 20 s unhindered.
    stack.extra_env.extend(
        [
            ("SIGNAL9_DATA_LIMIT", "20"),
            ("SIGNAL9_DATA_WINDOW_SECS", "1"),
            ("SIGNAL9_SQLITE_BUSY_TIMEOUT_MS", "1000"),
            ("RUST_LOG", "warn,signal9_worker=info"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    stack
        .start_worker(&["--concurrency", &CONCURRENCY.to_string(), "--coalesce-max", "1"])
        .unwrap();
    let symbols = active_symbols(42, 12_000, 400);
    let file = stack.symbols_file(&symbols);
    let out = stack
        .producer(&[
            "fetch-bars",
            "--symbols-file",
            &file,
            "--timeframe",
            "1Day",
            "--start",
            START,
            "--end",
            END,
            "--feed",
            "iex",
        ])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stack.await_data_calls(40, Duration::from_secs(30)).await,
        "the run started"
    );

    // The outage: a write lock held by another process for 30 s.
    let path = stack.sqlite_path();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let db = rusqlite::Connection::open(path).unwrap();
        db.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(30));
        db.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();
    let began = Instant::now();
    let calls_at_start = stack.data_calls().await.unwrap();
    let held = eventually(Duration::from_secs(29), || async {
        stack.worker_logs().contains("A failing dependency holds the worker")
    })
    .await;
    // Wait for the lock's end, then count what the outage cost.
    holder.join().unwrap();
    let outage = began.elapsed();
    let spent = stack.data_calls().await.unwrap() - calls_at_start;
    println!(
        "store locked {:.0} s: {spent} calls spent meanwhile (at most {CONCURRENCY} were in flight when it began); the worker stopped consuming: {held}",
        outage.as_secs_f64()
    );
    assert!(held, "the worker stopped consuming\n{}", {
        let logs = stack.worker_logs();
        logs.lines()
            .filter(|l| !l.contains("Batch finished"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    assert!(spent <= CONCURRENCY, "{spent} calls spent during the outage");

    // It resumes by itself; every bar is stored, nothing was dead-lettered.
    let total = symbols
        .iter()
        .map(|s| {
            sim_bar_count(
                std::slice::from_ref(s),
                alpaca_sim::bars::Frame::Day,
                START.parse().unwrap(),
                END.parse().unwrap(),
            )
        })
        .sum::<usize>();
    let done = eventually(Duration::from_secs(120), || async { stored_bars(&stack) >= total }).await;
    assert!(
        done,
        "stored {} of {total}\n{}",
        stored_bars(&stack),
        stack.worker_logs()
    );
    assert_eq!(stored_bars(&stack), total, "every bar once");
    assert_eq!(
        queue_depth(&stack.topology().dead_letter_queue()).await.unwrap(),
        0,
        "nothing dead-lettered"
    );
    assert!(
        stack.worker_logs().contains("The dependency answers again"),
        "{}",
        stack.worker_logs()
    );
    assert!(stack.worker(0).try_wait().unwrap().is_none());
    stack.cleanup().await;
}
