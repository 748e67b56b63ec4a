//! Broker failover on a three-node RabbitMQ cluster (issue 26): workers and
//! the producer given every node's address keep going when the node they
//! are connected to stops. The cluster is `scripts/lib.sh
//! ensure_rabbitmq_cluster` (nodes `signal9-c1..3@localhost` on ports
//! 5681-5683, `SIGNAL9_TEST_RABBIT_CLUSTER`), which `scripts/test` starts.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use signal9_e2e::{active_symbols, fetch_iex_days, sim_bar_count, text, Stack};
use signal9_shared::store::BarStore;
use signal9_shared::store::{SeriesKey, SqliteStore};

const START: &str = "2026-11-02T00:00:00Z";
const END: &str = "2026-11-20T23:59:59Z";

fn cluster() -> String {
    std::env::var("SIGNAL9_TEST_RABBIT_CLUSTER").unwrap_or_else(|_| {
        "amqp://guest:guest@127.0.0.1:5681/%2f,amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f"
            .to_owned()
    })
}

/// `rabbitmqctl` against a node of the local cluster, by its port.
fn ctl(port: u16, action: &str) {
    let node = format!("signal9-c{}@localhost", port - 5680);
    let out = Command::new("rabbitmqctl")
        .args(["-n", &node, action])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rabbitmqctl -n {node} {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The port of the node a worker said it connected to, from its log.
fn connected_port(logs: &str) -> Option<u16> {
    logs.lines()
        .filter(|l| l.contains("Connected to the broker"))
        .filter_map(|l| l.split("127.0.0.1:").nth(1))
        .filter_map(|rest| rest.get(..4).and_then(|p| p.parse().ok()))
        .next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_the_producer_go_on_when_their_node_stops() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    stack.extra_env.extend(
        [
            ("SIGNAL9_AMQP_URL", cluster().as_str()),
            // One call per job, at most 400 a second: the run lasts 10-20 s.
            ("SIGNAL9_DATA_LIMIT", "400"),
            ("SIGNAL9_DATA_WINDOW_SECS", "1"),
            ("RUST_LOG", "warn,signal9_shared::broker=info"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    for _ in 0..2 {
        stack
            .start_worker(&["--concurrency", "8", "--coalesce-max", "1"])
            .unwrap();
    }
    let symbols = active_symbols(42, 12_000, 4000);
    let (first, second) = symbols.split_at(2000);
    let file = stack.symbols_file(first);
    let out = stack.producer(&fetch_iex_days(&file, START, END, None)).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let started = Instant::now();

    let mut node = None;
    for _ in 0..100 {
        node = connected_port(&stack.worker_logs());
        if node.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let node = node.unwrap_or_else(|| panic!("no worker said where it connected\n{}", stack.worker_logs()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_stop = stack.data_calls().await.unwrap();
    ctl(node, "stop_app");
    let stopped = Instant::now();
    // The producer publishes the other half while the node is down (it
    // tries the addresses in order: the stopped node first).
    let file = stack.symbols_file(second);
    let out = stack.producer(&fetch_iex_days(&file, START, END, None)).await.unwrap();
    let published = out.status.success();
    let total = sim_bar_count(
        &symbols,
        alpaca_sim::bars::Frame::Day,
        START.parse().unwrap(),
        END.parse().unwrap(),
    );
    let mut done = false;
    while stopped.elapsed() < Duration::from_secs(30) {
        if stack.stored_bar_count() >= total {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = stopped.elapsed().as_secs_f64();
    let calls_during = stack.data_calls().await.unwrap() - before_stop;
    println!(
        "node {node} stopped {:.1} s into the run: {calls_during} jobs in the {during:.1} s after ({:.0} jobs/s); before it, {before_stop} in {:.1} s ({:.0} jobs/s)",
        stopped.duration_since(started).as_secs_f64(),
        calls_during as f64 / during,
        stopped.duration_since(started).as_secs_f64(),
        before_stop as f64 / stopped.duration_since(started).as_secs_f64()
    );
    if stopped.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(30) - stopped.elapsed()).await;
    }
    ctl(node, "start_app");
    assert!(published, "the producer published during the stop: {}", text(&out));
    assert!(
        done,
        "the run completed while the node was down\n{}",
        stack.worker_logs()
    );

    // The node is back: nothing changes; every symbol's bars, once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let (start, end) = (START.parse().unwrap(), END.parse().unwrap());
    for symbol in &symbols {
        let key = SeriesKey {
            symbol: signal9_alpaca::Symbol::parse(symbol).unwrap(),
            timeframe: signal9_alpaca::Timeframe::DAY,
            adjustment: signal9_alpaca::Adjustment::raw(),
            feed: Some(signal9_alpaca::Feed::Iex),
        };
        let stored = store.bars(&key, start, end).await.unwrap().len();
        let expected = sim_bar_count(std::slice::from_ref(symbol), alpaca_sim::bars::Frame::Day, start, end);
        assert_eq!(stored, expected, "{symbol}");
    }
    assert!(stack.worker(0).try_wait().unwrap().is_none() && stack.worker(1).try_wait().unwrap().is_none());
    stack.cleanup().await;
}
