//! The queue end to end: real RabbitMQ, the simulator as a process, worker
//! processes, the producer binary, and the SQLite store they share.
#![allow(clippy::unwrap_used)]

use alpaca_sim::bars::{bar_times, Frame, Market, Series};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions};
use lapin::BasicProperties;
use signal9_alpaca::{Adjustment, Feed, Symbol, Timeframe};
use signal9_e2e::{active_symbols, eventually, fetch_iex_days, queue_depth, text, Stack, SIM_NOW};
use signal9_shared::broker::{header_str, HEADER_ERROR_CLASS, HEADER_LAST_ERROR};
use signal9_shared::store::AssetStore;
use signal9_shared::store::BarStore;
use signal9_shared::store::{SeriesKey, SqliteStore};
use std::time::Duration;

const START: &str = "2026-11-02T00:00:00Z";
const END: &str = "2026-11-20T23:59:59Z";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn expected_bars(symbol: &str) -> usize {
    let series = Series {
        seed: 42,
        symbol,
        market: Market::Stocks,
        frame: Frame::Day,
    };
    bar_times(series, t(START), t(END), t(SIM_NOW)).len()
}

async fn stored_bars(stack: &Stack, symbol: &str) -> usize {
    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let key = SeriesKey {
        symbol: Symbol::parse(symbol).unwrap(),
        timeframe: Timeframe::DAY,
        adjustment: Adjustment::raw(),
        feed: Some(Feed::Iex),
    };
    store.bars(&key, t(START), t(END)).await.unwrap().len()
}

fn fetch_args<'a>(file: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = fetch_iex_days(file, START, END, None);
    args.extend_from_slice(extra);
    args
}

async fn assert_all_stored(stack: &Stack, symbols: &[String]) {
    for symbol in symbols {
        assert_eq!(
            stored_bars(stack, symbol).await,
            expected_bars(symbol),
            "{symbol}: every bar, once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_jobs_through_three_workers_store_every_bar_once() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    let symbols = active_symbols(42, 12_000, 500);
    for _ in 0..3 {
        stack
            .start_worker(&["--concurrency", "2", "--coalesce-max", "20"])
            .unwrap();
    }
    let file = stack.symbols_file(&symbols);
    let out = stack
        .producer(&fetch_args(&file, &["--wait", "--wait-timeout-secs", "180"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    assert!(
        text(&out).contains("succeeded 500, dead-lettered 0, no answer 0"),
        "{}",
        text(&out)
    );
    assert_all_stored(&stack, &symbols).await;
    assert_eq!(queue_depth(&stack.topology().dead_letter_queue()).await.unwrap(), 0);
    for i in 0..3 {
        assert!(
            stack.worker(i).try_wait().unwrap().is_none(),
            "worker {i} died: {}",
            stack.worker_logs()
        );
    }
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_nothing() {
    // Slow API calls keep jobs in flight when the worker dies.
    let mut stack = Stack::start(&["--limit", "0", "--latency-ms", "150"]).unwrap();
    let symbols = active_symbols(42, 12_000, 120);
    for _ in 0..3 {
        stack
            .start_worker(&["--concurrency", "2", "--coalesce-max", "4", "--coalesce-wait-ms", "20"])
            .unwrap();
    }
    let file = stack.symbols_file(&symbols);
    let producer = stack
        .producer_spawn(&fetch_args(&file, &["--wait", "--wait-timeout-secs", "180"]))
        .unwrap();
    let stats_ok = stack.await_data_calls(3, Duration::from_secs(30)).await;
    assert!(stats_ok, "work never started: {}", stack.worker_logs());
    stack.signal_worker(0, "-KILL").unwrap();
    let out = producer.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    assert!(text(&out).contains("succeeded 120, dead-lettered 0"), "{}", text(&out));
    assert_all_stored(&stack, &symbols).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_jobs_and_exits_zero() {
    let mut stack = Stack::start(&["--limit", "0", "--latency-ms", "1500"]).unwrap();
    let symbols = active_symbols(42, 12_000, 6);
    let worker = stack
        .start_worker(&["--concurrency", "2", "--coalesce-max", "1", "--coalesce-wait-ms", "0"])
        .unwrap();
    let file = stack.symbols_file(&symbols);
    let out = stack.producer(&fetch_args(&file, &[])).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Two jobs are in flight (1.5 s each) when the signal arrives.
    let started = stack.await_data_calls(2, Duration::from_secs(20)).await;
    assert!(started, "{}", stack.worker_logs());
    stack.signal_worker(worker, "-TERM").unwrap();
    let status = tokio::task::spawn_blocking({
        let mut child = std::mem::replace(
            stack.worker(worker),
            std::process::Command::new("true").spawn().unwrap(),
        );
        move || child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success(), "exit {status:?}: {}", stack.worker_logs());
    let done: Vec<usize> = futures::future::join_all(symbols.iter().map(|s| stored_bars(&stack, s))).await;
    let finished = done.iter().filter(|n| **n > 0).count();
    assert!(finished >= 2, "the in-flight jobs finished before exit: {done:?}");
    let queue = stack.topology().job_queue(
        signal9_shared::job::JobKind::FetchBars,
        signal9_shared::job::Priority::Bulk,
    );
    assert_eq!(
        queue_depth(&queue).await.unwrap() as usize,
        symbols.len() - finished,
        "the rest went back to the queue"
    );
    stack.cleanup().await;
}

async fn publish_raw(stack: &Stack, routing_key: &str, bodies: Vec<Vec<u8>>) {
    let exchange = stack.topology().jobs_exchange();
    publish_to(stack, &exchange, routing_key, bodies, BasicProperties::default()).await;
}

/// Publishes `bodies` with confirms to any exchange (`""`: straight to the
/// queue named `routing_key`).
async fn publish_to(
    stack: &Stack,
    exchange: &str,
    routing_key: &str,
    bodies: Vec<Vec<u8>>,
    properties: BasicProperties,
) {
    let connection = signal9_e2e::amqp_connection().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    stack.topology().declare(&channel).await.unwrap();
    // Confirmed, so none is still in the client's buffer when it closes.
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    for body in bodies {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    connection.close(200, "done".into()).await.unwrap();
}

fn hostile_bodies() -> Vec<Vec<u8>> {
    let job = |payload: serde_json::Value, kind: &str| {
        serde_json::json!({"v":1,"id":uuid::Uuid::new_v4().to_string(),"kind":kind,"enqueued_at":"2026-11-23T04:00:00Z","payload":payload})
            .to_string()
            .into_bytes()
    };
    let bars = |symbol: serde_json::Value| {
        job(
            serde_json::json!({"symbol":symbol,"timeframe":"1Day","start":START,"end":END}),
            "fetch-bars",
        )
    };
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for i in 0..20 {
        bodies.push(format!("not json {i}").into_bytes());
        bodies.push(b"{\"v\":1,\"id\":".to_vec());
        bodies.push(job(serde_json::json!({"symbol":"AAPL"}), "delete-everything"));
        bodies.push(bars(serde_json::json!("../x")));
        bodies.push(bars(serde_json::json!("A;DROP")));
        bodies.push(bars(serde_json::json!("Z".repeat(10_000))));
        bodies.push(bars(serde_json::json!(12345)));
        bodies.push(job(
            serde_json::json!({"symbol":"AAPL","timeframe":"2Day","start":START,"end":END}),
            "fetch-bars",
        ));
        bodies.push(job(
            serde_json::json!({"symbol":"AAPL","timeframe":"1Day","start":END,"end":START}),
            "fetch-bars",
        ));
        bodies.push(if i == 0 {
            vec![b'x'; 5 * 1024 * 1024]
        } else {
            serde_json::json!({"v": "1", "id": i}).to_string().into_bytes()
        });
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_with_a_reason_and_valid_jobs_succeed() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    let symbols = active_symbols(42, 12_000, 20);
    stack.start_worker(&["--concurrency", "2"]).unwrap();
    let hostile = hostile_bodies();
    assert_eq!(hostile.len(), 200);
    let (first, second) = hostile.split_at(100);
    publish_raw(&stack, "fetch-bars", first.to_vec()).await;
    let file = stack.symbols_file(&symbols);
    let producer = stack
        .producer_spawn(&fetch_args(&file, &["--wait", "--wait-timeout-secs", "120"]))
        .unwrap();
    publish_raw(&stack, "status-check", second.to_vec()).await;
    let out = producer.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    assert_all_stored(&stack, &symbols).await;

    let dlq = stack.topology().dead_letter_queue();
    let all_there = eventually(Duration::from_secs(60), || async {
        queue_depth(&dlq).await.unwrap_or(0) == 200
    })
    .await;
    assert!(
        all_there,
        "dead letters: {}\n{}",
        queue_depth(&dlq).await.unwrap(),
        stack.worker_logs()
    );
    let connection = signal9_e2e::amqp_connection().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut seen = 0;
    while let Some(message) = channel
        .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        let headers = message.delivery.properties.headers().as_ref();
        assert_eq!(header_str(headers, HEADER_ERROR_CLASS).as_deref(), Some("permanent"));
        let reason = header_str(headers, HEADER_LAST_ERROR).unwrap_or_default();
        assert!(reason.starts_with("malformed job:") && reason.len() <= 500, "{reason}");
        assert!(
            ["fetch-bars", "status-check"].contains(&message.delivery.routing_key.as_str()),
            "original routing key kept"
        );
        message
            .delivery
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .unwrap();
        seen += 1;
        if seen == 200 {
            break;
        }
    }
    assert_eq!(seen, 200);
    connection.close(200, "done".into()).await.unwrap();
    // The worker is still alive and serving.
    assert!(stack.worker(0).try_wait().unwrap().is_none(), "the worker survived");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_retry_through_the_tiers_then_dead_letter_and_replay() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    stack.retry_tiers = "1s,2s".into();
    stack
        .start_worker(&["--concurrency", "2", "--coalesce-wait-ms", "0"])
        .unwrap();

    // An outage shorter than the tiers: every job retries and succeeds.
    stack.set_faults(serde_json::json!({"outage_secs": 1.5})).await.unwrap();
    let symbols = active_symbols(42, 12_000, 5);
    let file = stack.symbols_file(&symbols);
    let out = stack
        .producer(&fetch_args(&file, &["--wait", "--wait-timeout-secs", "60"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    assert_all_stored(&stack, &symbols).await;
    let stats = stack.sim_stats().await.unwrap();
    let failed = stats["requests"].as_array().unwrap().iter().any(|r| r["status"] == 503);
    assert!(failed, "the outage was hit: {stats}");

    // A failure that outlasts every tier: dead-lettered after the last one.
    stack.set_faults(serde_json::json!({"error_rate": 1.0})).await.unwrap();
    let out = stack
        .producer(&["status-check", "MSFT", "--wait", "--wait-timeout-secs", "60"])
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("dead-lettered 1"), "{}", text(&out));
    let list = stack.producer(&["dlq", "list", "--json"]).await.unwrap();
    let line: serde_json::Value = serde_json::from_slice(list.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["error_class"], "transient");
    assert_eq!(line["attempts"], 3, "1 try + 2 retries");
    assert_eq!(line["symbol"], "MSFT");

    // The fault is gone: replay brings it back and it succeeds.
    stack.set_faults(serde_json::json!({})).await.unwrap();
    let dry = stack.producer(&["dlq", "replay", "--dry-run"]).await.unwrap();
    assert!(text(&dry).contains("would replay"), "{}", text(&dry));
    assert_eq!(
        queue_depth(&stack.topology().dead_letter_queue()).await.unwrap(),
        1,
        "a dry run changes nothing"
    );
    let replay = stack
        .producer(&["dlq", "replay", "--kind", "status-check"])
        .await
        .unwrap();
    assert!(replay.status.success(), "{}", text(&replay));
    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let stored = eventually(Duration::from_secs(20), || async {
        !store
            .assets_by_symbol(&Symbol::parse("MSFT").unwrap())
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    assert!(stored, "{}", stack.worker_logs());
    assert_eq!(queue_depth(&stack.topology().dead_letter_queue()).await.unwrap(), 0);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_job_overtakes_a_bulk_backlog() {
    let mut stack = Stack::start(&["--limit", "0", "--latency-ms", "100"]).unwrap();
    let bulk = active_symbols(42, 12_000, 5_000);
    assert_eq!(bulk.len(), 5_000);
    let file = stack.symbols_file(&bulk);
    let out = stack.producer(&fetch_args(&file, &[])).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The interactive job asks for another range, so it cannot ride along with bulk jobs.
    let interactive = stack
        .producer_spawn(&[
            "fetch-bars",
            "--symbols",
            "AAPL",
            "--timeframe",
            "1Hour",
            "--start",
            "2026-11-20",
            "--end",
            "2026-11-20",
            "--priority",
            "interactive",
            "--wait",
            "--wait-timeout-secs",
            "120",
        ])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack
        .start_worker(&["--concurrency", "1", "--coalesce-max", "5"])
        .unwrap();
    let out = interactive.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    let queue = stack.topology().job_queue(
        signal9_shared::job::JobKind::FetchBars,
        signal9_shared::job::Priority::Bulk,
    );
    let left = queue_depth(&queue).await.unwrap() as usize;
    // Prefetched bulk messages are not in the queue but not done either; count what was stored.
    let stats = stack.sim_stats().await.unwrap();
    let calls = stats["apis"]["data"]["accepted"].as_u64().unwrap();
    let bulk_done_at_most = (calls as usize).saturating_sub(1) * 5;
    eprintln!("data calls {calls}, bulk still queued {left}");
    assert!(
        bulk_done_at_most < 50,
        "{bulk_done_at_most} bulk jobs could have finished first ({left} still queued)"
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_spends_a_handful_of_calls_and_a_repeat_spends_none() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    let symbols = active_symbols(42, 12_000, 100);
    let file = stack.symbols_file(&symbols);
    let day = ["--timeframe", "1Day", "--start", "2026-11-20", "--end", "2026-11-20"];
    let publish = |wait: bool| {
        let mut args = vec!["fetch-bars", "--symbols-file", file.as_str()];
        args.extend_from_slice(&day);
        if wait {
            args.extend_from_slice(&["--wait", "--wait-timeout-secs", "60"]);
        }
        args
    };
    // Queued before any worker runs, so they can coalesce fully.
    let out = stack.producer(&publish(false)).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    stack
        .start_worker(&["--concurrency", "2", "--coalesce-max", "50"])
        .unwrap();
    let queue = stack.topology().job_queue(
        signal9_shared::job::JobKind::FetchBars,
        signal9_shared::job::Priority::Bulk,
    );
    let drained = eventually(Duration::from_secs(60), || async {
        queue_depth(&queue).await.unwrap_or(1) == 0
    })
    .await;
    assert!(drained);
    let calls = |s: serde_json::Value| s["apis"]["data"]["accepted"].as_u64().unwrap();
    let settled = eventually(Duration::from_secs(30), || async {
        let store = SqliteStore::open(stack.sqlite_path()).unwrap();
        let key = SeriesKey {
            symbol: Symbol::parse(&symbols[99]).unwrap(),
            timeframe: Timeframe::DAY,
            adjustment: Adjustment::raw(),
            feed: None,
        };
        store
            .covers(&key, t("2026-11-20T00:00:00Z"), t("2026-11-20T23:59:59Z"))
            .await
            .unwrap()
    })
    .await;
    assert!(settled, "{}", stack.worker_logs());
    let first = calls(stack.sim_stats().await.unwrap());
    assert!((1..=5).contains(&first), "100 jobs cost {first} calls");

    let out = stack.producer(&publish(true)).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        calls(stack.sim_stats().await.unwrap()),
        first,
        "a covered closed range costs no call"
    );
    stack.cleanup().await;
}

#[tokio::test]
async fn the_topology_declares_twice_without_error() {
    let stack = Stack::start(&["--assets", "100"]).unwrap();
    let connection = signal9_e2e::amqp_connection().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    stack.topology().declare(&channel).await.unwrap();
    stack.topology().declare(&channel).await.unwrap();
    // A message published to a retry tier comes back to its queue with its routing key.
    let job = signal9_shared::job::Job::new(
        "retry-probe",
        signal9_shared::job::Payload::StatusCheck(signal9_shared::job::StatusCheck {
            symbol: Symbol::parse("AAPL").unwrap(),
        }),
        signal9_shared::job::Priority::Interactive,
        None,
    );
    channel
        .basic_publish(
            stack.topology().retry_exchange(0).unwrap().as_str().into(),
            job.routing_key().as_str().into(),
            BasicPublishOptions::default(),
            &job.to_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let queue = stack.topology().job_queue(
        signal9_shared::job::JobKind::StatusCheck,
        signal9_shared::job::Priority::Interactive,
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            queue_depth(&queue).await.unwrap_or(0) == 1
        })
        .await
    );
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "probe".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let delivery = consumer.next().await.unwrap().unwrap();
    assert_eq!(signal9_shared::job::Job::parse(&delivery.data).unwrap(), job);
    let mut channel_stack = stack;
    channel_stack.cleanup().await;
}

fn status_check_body(symbol: &str) -> Vec<u8> {
    status_check_with_id(symbol, &uuid::Uuid::new_v4().to_string())
}

fn status_check_with_id(symbol: &str, id: &str) -> Vec<u8> {
    serde_json::json!({"v":1,"id":id,"kind":"status-check",
        "enqueued_at":"2026-11-23T04:00:00Z","payload":{"symbol":symbol}})
    .to_string()
    .into_bytes()
}

async fn asset_stored(stack: &Stack, symbol: &str, within: Duration) -> bool {
    let store = SqliteStore::open(stack.sqlite_path()).unwrap();
    let symbol = Symbol::parse(symbol).unwrap();
    eventually(within, || async {
        store
            .assets_by_symbol(&symbol)
            .await
            .map(|found| !found.is_empty())
            .unwrap_or(false)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_published_straight_to_its_queue_comes_back_after_a_transient_failure() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    stack.retry_tiers = "1s,2s".into();
    stack.start_worker(&["--concurrency", "2"]).unwrap();
    // Its first try meets an outage; its delay expires after the outage.
    stack.set_faults(serde_json::json!({"outage_secs": 2.0})).await.unwrap();
    let queue = stack.topology().job_queue(
        signal9_shared::job::JobKind::StatusCheck,
        signal9_shared::job::Priority::Bulk,
    );
    publish_to(
        &stack,
        "",
        &queue,
        vec![status_check_body("MSFT")],
        BasicProperties::default(),
    )
    .await;
    // Before, the retry went back to `{ns}.jobs` with the queue's name as its
    // key, which nothing binds, and the job was gone.
    assert!(
        asset_stored(&stack, "MSFT", Duration::from_secs(30)).await,
        "the job was lost\n{}",
        stack.worker_logs()
    );
    let stats = stack.sim_stats().await.unwrap();
    let failed = stats["requests"].as_array().unwrap().iter().any(|r| r["status"] == 503);
    assert!(failed, "the outage was hit: {stats}");
    assert_eq!(queue_depth(&stack.topology().dead_letter_queue()).await.unwrap(), 0);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_sends_a_letter_with_an_unbound_key_back_by_its_kind_and_keeps_what_no_queue_takes() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    stack.start_worker(&[]).unwrap();
    // Two dead letters whose recorded routing key nothing binds: a job, and
    // a body that is no job.
    let mut headers = lapin::types::FieldTable::default();
    signal9_shared::broker::set_str(&mut headers, signal9_shared::broker::HEADER_ROUTING_KEY, "no.such.key");
    // The job's id is 100 characters: ids may have up to 128.
    let long_id = format!("replay-{}", "x".repeat(93));
    publish_to(
        &stack,
        &stack.topology().dead_exchange(),
        "no.such.key",
        vec![status_check_with_id("MSFT", &long_id), b"not a job".to_vec()],
        BasicProperties::default().with_headers(headers),
    )
    .await;
    let dead = stack.topology().dead_letter_queue();
    assert_eq!(queue_depth(&dead).await.unwrap(), 2);
    // `dlq list` prints the whole id, and `dlq show` finds the letter by it.
    let list = text(&stack.producer(&["dlq", "list", "--json"]).await.unwrap());
    assert!(list.contains(&format!("\"{long_id}\"")), "{list}");
    let show = stack.producer(&["dlq", "show", &long_id]).await.unwrap();
    assert!(show.status.success(), "{}", text(&show));
    assert!(text(&show).contains("MSFT"), "{}", text(&show));

    let out = stack.producer(&["dlq", "replay"]).await.unwrap();
    let said = text(&out);
    // Before, both were published with the unbound key, confirmed, dropped
    // by the broker, and deleted from the dead-letter queue.
    assert!(!out.status.success(), "one letter cannot go back: {said}");
    assert!(said.contains("replayed 1 dead letters"), "{said}");
    assert!(said.contains("kept: ") && said.contains("not a job"), "{said}");
    assert!(
        asset_stored(&stack, "MSFT", Duration::from_secs(20)).await,
        "the replayed job did not run\n{said}\n{}",
        stack.worker_logs()
    );
    assert_eq!(
        queue_depth(&dead).await.unwrap(),
        1,
        "the letter no queue takes is kept"
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_reads_at_most_what_the_queue_held_at_its_start_and_ends_while_letters_keep_arriving() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let mut stack = Stack::start(&[]).unwrap();
    let dead_exchange = stack.topology().dead_exchange();
    let dead = stack.topology().dead_letter_queue();
    let bodies: Vec<Vec<u8>> = (0..500)
        .map(|i| status_check_with_id("MSFT", &format!("dl-{i:04}")))
        .collect();
    publish_to(
        &stack,
        &dead_exchange,
        "status-check",
        bodies,
        BasicProperties::default(),
    )
    .await;

    // --max bounds the work, not only the output: five read, five shown.
    let said = text(&stack.producer(&["dlq", "list", "--max", "5"]).await.unwrap());
    assert!(said.contains("5 shown of 500 dead letters"), "{said}");
    assert!(said.contains(", 5 read"), "{said}");

    // Letters arrive faster than a listing can read them. Before, the
    // listing took letters until the queue was empty, which never came.
    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, flooded, exchange) = (stop.clone(), flooded.clone(), dead_exchange.clone());
        tokio::spawn(async move {
            let connection = signal9_e2e::amqp_connection().await.unwrap();
            let channel = connection.create_channel().await.unwrap();
            channel
                .confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await
                .unwrap();
            let body = status_check_with_id("AAPL", "flood");
            while !stop.load(Ordering::Relaxed) {
                let mut confirms = Vec::with_capacity(200);
                for _ in 0..200 {
                    confirms.push(
                        channel
                            .basic_publish(
                                exchange.as_str().into(),
                                "status-check".into(),
                                BasicPublishOptions::default(),
                                &body,
                                BasicProperties::default(),
                            )
                            .await
                            .unwrap(),
                    );
                }
                for confirm in confirms {
                    confirm.await.unwrap();
                }
                flooded.fetch_add(200, Ordering::Relaxed);
            }
        })
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            flooded.load(Ordering::Relaxed) >= 2_000
        })
        .await
    );
    let listing = tokio::time::timeout(
        Duration::from_secs(180),
        stack.producer(&["dlq", "list", "--kind", "status-check", "--max", "100000000"]),
    )
    .await
    .expect("the listing did not end while letters kept arriving")
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    flood.await.unwrap();
    let said = text(&listing);
    assert!(listing.status.success(), "{said}");
    let summary = said.lines().rev().find(|l| l.contains(" shown of ")).unwrap();
    let total: u64 = summary
        .split(" shown of ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let all = 500 + flooded.load(Ordering::Relaxed);
    assert!(total >= 2_500 && total < all, "read {total} of {all}: {summary}");
    // Browsing changed nothing: every letter is back.
    assert!(
        eventually(Duration::from_secs(30), || async {
            u64::from(queue_depth(&dead).await.unwrap()) == all
        })
        .await,
        "{} letters in {dead}, {all} published",
        queue_depth(&dead).await.unwrap()
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_channel_the_broker_closes_is_rebuilt_and_every_job_completes_once() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    // One trading call per 3 s, and a job waits at most 2 s for it before it
    // is delayed through the first retry exchange.
    stack.extra_env.extend(
        [
            ("SIGNAL9_TRADING_LIMIT", "1"),
            ("SIGNAL9_TRADING_WINDOW_SECS", "3"),
            ("SIGNAL9_BUDGET_WAIT_SECS", "2"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    stack.start_worker(&[]).unwrap();
    // One job first, so the worker's session (and its topology) is up; it
    // also takes the window's one token.
    let out = stack
        .producer(&["status-check", "SPY", "--wait", "--wait-timeout-secs", "60"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());

    let symbols = active_symbols(42, 12_000, 5);
    let mut args = vec!["status-check"];
    args.extend(symbols.iter().map(String::as_str));
    args.extend(["--wait", "--wait-timeout-secs", "120"]);
    let producer = stack.producer_spawn(&args).unwrap();
    // The jobs are published and wait for tokens. Now someone deletes the
    // first retry exchange: the worker's next delay publishes there, the
    // broker answers with a channel error (404) and closes the worker's
    // publisher channel; the connection lives on.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let topology = stack.topology();
    let connection = signal9_e2e::amqp_connection().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(
            topology.retry_exchange(0).unwrap().as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    let out = producer.wait_with_output().await.unwrap();
    let said = text(&out);
    // Before, every finish failed on the dead channel, the jobs stayed
    // unacked on a live connection, and none was ever answered.
    assert!(out.status.success(), "{said}\n{}", stack.worker_logs());
    assert!(said.contains("succeeded 5, dead-lettered 0"), "{said}");
    let logs = stack.worker_logs();
    assert!(
        logs.contains("closed the publisher channel"),
        "the worker did not notice: {logs}"
    );
    for symbol in &symbols {
        assert!(asset_stored(&stack, symbol, Duration::from_secs(5)).await, "{symbol}");
    }
    // Nothing left behind: no job waits, unacked or dead.
    for priority in [
        signal9_shared::job::Priority::Bulk,
        signal9_shared::job::Priority::Interactive,
    ] {
        let queue = topology.job_queue(signal9_shared::job::JobKind::StatusCheck, priority);
        assert_eq!(queue_depth(&queue).await.unwrap(), 0, "{queue}");
    }
    assert_eq!(queue_depth(&topology.dead_letter_queue()).await.unwrap(), 0);
    // And the worker is ready again.
    let status = stack.producer(&["status", "--json"]).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["workers"][0]["broker_connected"], true, "{json}");
    stack.cleanup().await;
}
