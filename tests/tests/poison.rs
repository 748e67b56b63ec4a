//! Poison jobs and panicking handlers (issue 25): a message no worker can
//! serve is dead-lettered with its reason within seconds, and the worker
//! that received it keeps serving; a handler that panics dead-letters its
//! job and nothing else. Real RabbitMQ, the simulator, worker processes.
#![allow(clippy::unwrap_used)]

use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions};
use lapin::BasicProperties;
use std::collections::HashMap;
use std::time::Duration;

use signal9_e2e::{eventually, fetch_iex_days, queue_depth, text, Stack};
use signal9_shared::broker::{header_str, HEADER_ERROR_CLASS, HEADER_LAST_ERROR};

const START: &str = "2026-11-02T00:00:00Z";
const END: &str = "2026-11-20T23:59:59Z";

fn job(id: &str, kind: &str, payload: serde_json::Value) -> Vec<u8> {
    serde_json::json!({"v":1,"id":id,"kind":kind,"enqueued_at":"2026-11-23T04:00:00Z","payload":payload})
        .to_string()
        .into_bytes()
}

fn bars(id: &str, symbol: &str, timeframe: &str, start: &str, end: &str) -> Vec<u8> {
    job(
        id,
        "fetch-bars",
        serde_json::json!({"symbol":symbol,"timeframe":timeframe,"start":start,"end":end}),
    )
}

/// Publishes `bodies` to the jobs exchange with confirms.
async fn publish(stack: &Stack, routing_key: &str, bodies: &[Vec<u8>]) {
    let connection = signal9_e2e::amqp_connection().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    stack.topology().declare(&channel).await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let exchange = stack.topology().jobs_exchange();
    for body in bodies {
        channel
            .basic_publish(
                exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    connection.close(200, "done".into()).await.unwrap();
}

/// Every dead letter's job id (or `?`) → (class, last error); the letters
/// go back to the queue.
async fn dead_letters(stack: &Stack) -> HashMap<String, (String, String)> {
    let connection = signal9_e2e::amqp_connection().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dlq = stack.topology().dead_letter_queue();
    let total = queue_depth(&dlq).await.unwrap();
    let mut letters = HashMap::new();
    let mut held = Vec::new();
    for _ in 0..total {
        let Some(message) = channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        else {
            break;
        };
        let headers = message.delivery.properties.headers().as_ref();
        let id = serde_json::from_slice::<serde_json::Value>(&message.delivery.data)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("?{}", message.delivery.data.len()));
        letters.insert(
            id,
            (
                header_str(headers, HEADER_ERROR_CLASS).unwrap_or_default(),
                header_str(headers, HEADER_LAST_ERROR).unwrap_or_default(),
            ),
        );
        held.push(message);
    }
    for message in held {
        message
            .delivery
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .unwrap();
    }
    connection.close(200, "done".into()).await.unwrap();
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_jobs_are_dead_lettered_with_their_reason_and_the_worker_keeps_serving() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    stack.start_worker(&["--concurrency", "2"]).unwrap();
    let mut huge = bars("huge-payload", "AAPL", "1Day", START, END);
    // A 10 MB message: the payload carries a 10 MB field.
    let pad = "x".repeat(10 * 1024 * 1024);
    huge = String::from_utf8(huge)
        .unwrap()
        .replacen("\"payload\":{", &format!("\"payload\":{{\"pad\":\"{pad}\","), 1)
        .into_bytes();
    let poison = [
        (
            "year-minus-2",
            bars(
                "year-minus-2",
                "AAPL",
                "1Day",
                "-0002-01-01T00:00:00Z",
                "-0002-01-02T00:00:00Z",
            ),
            "outside the accepted window",
        ),
        (
            "year-262142",
            bars(
                "year-262142",
                "AAPL",
                "1Day",
                "+262142-01-01T00:00:00Z",
                "+262142-01-02T00:00:00Z",
            ),
            "outside the accepted window",
        ),
        (
            "minutes-40-years",
            bars(
                "minutes-40-years",
                "AAPL",
                "1Min",
                "1986-11-01T00:00:00Z",
                "2026-11-01T00:00:00Z",
            ),
            "outside the accepted window",
        ),
        (
            "minutes-36-years",
            bars(
                "minutes-36-years",
                "AAPL",
                "1Min",
                "1990-01-01T00:00:00Z",
                "2026-11-01T00:00:00Z",
            ),
            "SIGNAL9_MAX_JOB_PAGES",
        ),
        (
            "end-before-start",
            bars("end-before-start", "AAPL", "1Day", END, START),
            "before start",
        ),
        (
            "unknown-timeframe",
            bars("unknown-timeframe", "AAPL", "7Fortnight", START, END),
            "timeframe",
        ),
        ("huge-payload", huge, "exceeds"),
    ];
    let bodies: Vec<Vec<u8>> = poison.iter().map(|(_, body, _)| body.clone()).collect();
    publish(&stack, "fetch-bars", &bodies).await;
    let dlq = stack.topology().dead_letter_queue();
    let all_dead = eventually(Duration::from_secs(30), || async {
        queue_depth(&dlq).await.unwrap_or(0) == 7
    })
    .await;
    assert!(
        all_dead,
        "dead letters: {}\n{}",
        queue_depth(&dlq).await.unwrap(),
        stack.worker_logs()
    );
    let letters = dead_letters(&stack).await;
    for (id, _, reason) in &poison {
        let key = if *id == "huge-payload" {
            letters
                .keys()
                .find(|k| k.starts_with('?') || k.as_str() == "huge-payload")
                .cloned()
                .unwrap()
        } else {
            (*id).to_owned()
        };
        let (class, error) = letters
            .get(&key)
            .unwrap_or_else(|| panic!("{id} is not dead-lettered: {letters:?}"));
        assert_eq!(class, "permanent", "{id}");
        assert!(error.contains(reason), "{id}: {error}");
    }
    assert!(
        stack.worker(0).try_wait().unwrap().is_none(),
        "the worker survived every poison job"
    );

    // It still serves a normal job, and a replay of the poison dead-letters
    // it again without harm.
    let file = stack.symbols_file(&["AAPL".to_owned()]);
    let out = stack
        .producer(&fetch_iex_days(&file, START, END, Some("60")))
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    let replay = stack
        .producer(&["dlq", "replay", "--kind", "fetch-bars"])
        .await
        .unwrap();
    assert!(replay.status.success(), "{}", text(&replay));
    let again = eventually(Duration::from_secs(30), || async {
        let letters = dead_letters(&stack).await;
        letters.len() == 7 && letters.values().all(|(class, _)| class == "permanent")
    })
    .await;
    assert!(again, "{:?}", dead_letters(&stack).await);
    assert!(
        stack.worker(0).try_wait().unwrap().is_none(),
        "the worker survived the replay"
    );
    assert!(
        !stack.worker_logs().contains("A task panicked"),
        "{}",
        stack.worker_logs()
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_panic_dead_letters_its_job_and_the_workers_other_jobs_complete() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    stack
        .start_worker(&["--concurrency", "4", "--fault-panic-symbol", "ZZPANIC"])
        .unwrap();
    // The panicking jobs: a bar job on a range of its own (its own batch)
    // and a status check (the unbatched path).
    publish(
        &stack,
        "fetch-bars",
        &[bars(
            "panic-bars",
            "ZZPANIC",
            "1Day",
            "2026-10-01T00:00:00Z",
            "2026-10-30T23:59:59Z",
        )],
    )
    .await;
    publish(
        &stack,
        "status-check",
        &[job(
            "panic-status",
            "status-check",
            serde_json::json!({"symbol":"ZZPANIC"}),
        )],
    )
    .await;
    let symbols: Vec<String> = ["AAPL", "MSFT", "NVDA", "AMZN"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let file = stack.symbols_file(&symbols);
    let out = stack
        .producer(&fetch_iex_days(&file, START, END, Some("60")))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the other jobs complete: {}\n{}",
        text(&out),
        stack.worker_logs()
    );
    let dlq = stack.topology().dead_letter_queue();
    assert!(
        eventually(Duration::from_secs(30), || async {
            queue_depth(&dlq).await.unwrap_or(0) == 2
        })
        .await,
        "{}",
        stack.worker_logs()
    );
    let letters = dead_letters(&stack).await;
    for id in ["panic-bars", "panic-status"] {
        let (class, error) = letters.get(id).unwrap_or_else(|| panic!("{id}: {letters:?}"));
        assert_eq!(class, "permanent");
        assert!(
            error.contains("panicked") && error.contains("fault injected"),
            "{error}"
        );
    }
    assert!(stack.worker(0).try_wait().unwrap().is_none(), "the worker survived");
    assert!(stack.worker_logs().contains("A task panicked"), "the panic is logged");
    stack.cleanup().await;
}
