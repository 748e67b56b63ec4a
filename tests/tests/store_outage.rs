//! A store outage stops the spending (issue 26, item 2): while the store
//! cannot take writes, a worker spends no more Alpaca calls than were in
//! flight when the outage began, dead-letters nothing, and finishes the work
//! by itself once the store answers. The outage is real: another process
//! holds SQLite's write lock for 30 s, past the worker's 1 s busy timeout
//! (`SIGNAL9_SQLITE_BUSY_TIMEOUT_MS`), so its writes and its probe fail;
//! and on DynamoDB (moto) behind a TCP proxy the test cuts for 30 s.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal9_e2e::{active_symbols, aws_endpoint, eventually, fetch_iex_days, queue_depth, sim_bar_count, text, Stack};
use signal9_shared::store::BarStore;
use signal9_shared::store::SeriesKey;

const START: &str = "2026-11-02T00:00:00Z";
const END: &str = "2026-11-20T23:59:59Z";
const CONCURRENCY: u64 = 4;

/// Starts one worker (four jobs in flight, one call each) and publishes
/// daily-bar jobs for `n` symbols; returns once the run is under way.
async fn start_run(stack: &mut Stack, n: usize) -> Vec<String> {
    stack
        .start_worker(&["--concurrency", &CONCURRENCY.to_string(), "--coalesce-max", "1"])
        .unwrap();
    let symbols = active_symbols(42, 12_000, n);
    let file = stack.symbols_file(&symbols);
    let out = stack.producer(&fetch_iex_days(&file, START, END, None)).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stack.await_data_calls(40, Duration::from_secs(30)).await,
        "the run started"
    );
    symbols
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
    let symbols = start_run(&mut stack, 400).await;

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
    let total = sim_bar_count(
        &symbols,
        alpaca_sim::bars::Frame::Day,
        START.parse().unwrap(),
        END.parse().unwrap(),
    );
    let done = eventually(Duration::from_secs(120), || async { stack.stored_bar_count() >= total }).await;
    assert!(
        done,
        "stored {} of {total}\n{}",
        stack.stored_bar_count(),
        stack.worker_logs()
    );
    assert_eq!(stack.stored_bar_count(), total, "every bar once");
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

/// A TCP proxy to moto that the test can cut: while cut it closes every
/// open connection and refuses new ones, as a network partition would.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if flag.load(Ordering::Relaxed) {
                    continue;
                }
                let (upstream, flag) = (upstream.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let watch = async {
                        while !flag.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = watch => {}
                    }
                });
            }
        });
        Proxy { port, cut }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_outage_stops_the_spending_and_the_work_resumes_by_itself() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    let store = stack.use_dynamodb().await.unwrap();
    let upstream = aws_endpoint().trim_start_matches("http://").to_owned();
    let proxy = Proxy::start(upstream).await;
    stack.extra_env.extend(
        [
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", proxy.port)),
            ("SIGNAL9_DATA_LIMIT", "20".to_owned()),
            ("SIGNAL9_DATA_WINDOW_SECS", "1".to_owned()),
            ("RUST_LOG", "warn,signal9_worker=info".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let symbols = start_run(&mut stack, 300).await;

    proxy.cut.store(true, Ordering::Relaxed);
    let calls_at_start = stack.data_calls().await.unwrap();
    let held = eventually(Duration::from_secs(29), || async {
        stack.worker_logs().contains("A failing dependency holds the worker")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(Duration::from_secs(1))).await;
    let spent = stack.data_calls().await.unwrap() - calls_at_start;
    proxy.cut.store(false, Ordering::Relaxed);
    println!("DynamoDB cut 30 s: {spent} calls spent meanwhile (at most {CONCURRENCY} were in flight when it began); the worker stopped consuming: {held}");
    assert!(held, "the worker stopped consuming\n{}", stack.worker_logs());
    assert!(spent <= CONCURRENCY, "{spent} calls spent during the outage");

    let (start, end) = (START.parse().unwrap(), END.parse().unwrap());
    let stored = |symbol: &String| {
        let key = SeriesKey {
            symbol: signal9_alpaca::Symbol::parse(symbol).unwrap(),
            timeframe: signal9_alpaca::Timeframe::DAY,
            adjustment: signal9_alpaca::Adjustment::raw(),
            feed: Some(signal9_alpaca::Feed::Iex),
        };
        let store = &store;
        async move { store.bars(&key, start, end).await.map_or(0, |b| b.len()) }
    };
    let expected: Vec<usize> = symbols
        .iter()
        .map(|s| sim_bar_count(std::slice::from_ref(s), alpaca_sim::bars::Frame::Day, start, end))
        .collect();
    // Done when every symbol holds its bars (the check stops at the first
    // that does not yet).
    let done = eventually(Duration::from_secs(120), || async {
        for (symbol, n) in symbols.iter().zip(&expected) {
            if stored(symbol).await != *n {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        done,
        "the work resumed and every bar is stored once\n{}",
        stack.worker_logs()
    );
    assert_eq!(
        queue_depth(&stack.topology().dead_letter_queue()).await.unwrap(),
        0,
        "nothing dead-lettered"
    );
    stack.cleanup().await;
}
