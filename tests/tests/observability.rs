//! Observability against running processes: a worker's /metrics, /healthz
//! and /readyz; `signal9-producer status`; and one trace from the producer
//! through the queue (and a retry) to the worker's spans, received by an
//! OTLP/HTTP collector in this test.
#![allow(clippy::unwrap_used)]

use axum::routing::post;
use serde_json::Value;
use signal9_e2e::{active_symbols, eventually, fetch_day, queue_depth, text, Stack};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn status(stack: &Stack) -> Value {
    let out = stack.producer(&["status", "--json"]).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// The metrics address of the one live worker, once its heartbeat is there.
async fn worker_metrics_addr(stack: &Stack) -> String {
    let mut addr = None;
    for _ in 0..100 {
        let s = status(stack).await;
        if let Some(a) = s["workers"][0]["metrics_addr"].as_str() {
            addr = Some(a.to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    addr.unwrap_or_else(|| panic!("no heartbeat: {}", stack.worker_logs()))
}

/// The value of one sample line (`name{labels} value`), 0 when absent.
fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn get(url: String) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_serves_health_and_metrics_that_move_with_its_work() {
    let mut stack = Stack::start(&["--assets", "400", "--limit", "0"]).unwrap();
    stack.start_worker(&[]).unwrap();
    let addr = worker_metrics_addr(&stack).await;
    assert_eq!(get(format!("http://{addr}/healthz")).await.0, 200);
    let ready = eventually(Duration::from_secs(20), || {
        let addr = addr.clone();
        async move { get(format!("http://{addr}/readyz")).await.0 == 200 }
    })
    .await;
    assert!(ready, "ready once the broker session is up: {}", stack.worker_logs());

    let (_, before) = get(format!("http://{addr}/metrics")).await;
    let jobs = "signal9_jobs_total{kind=\"fetch-bars\",outcome=\"succeeded\"}";
    assert_eq!(sample(&before, jobs), 0.0);
    assert!(before.contains("signal9_breaker_state{api=\"data\"} 0"), "{before}");

    let symbols = active_symbols(42, 400, 12);
    let file = stack.symbols_file(&symbols);
    let out = stack
        .producer(&fetch_day(&file, "2026-11-18", Some("60")))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // One hostile message: a dead letter of class permanent.
    let topology = stack.topology();
    let connection = signal9_e2e::amqp_connection().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_publish(
            topology.jobs_exchange().as_str().into(),
            "fetch-bars".into(),
            lapin::options::BasicPublishOptions::default(),
            b"{not json",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    let dead = eventually(Duration::from_secs(20), || async {
        queue_depth(&topology.dead_letter_queue()).await.unwrap_or(0) == 1
    })
    .await;
    assert!(dead);

    let (_, after) = get(format!("http://{addr}/metrics")).await;
    assert_eq!(sample(&after, jobs), 12.0, "{after}");
    assert_eq!(
        sample(
            &after,
            "signal9_jobs_total{kind=\"malformed\",outcome=\"dead_lettered\"}"
        ),
        1.0
    );
    assert_eq!(sample(&after, "signal9_dead_letters_total{class=\"permanent\"}"), 1.0);
    let calls = sample(
        &after,
        "signal9_api_calls_total{api=\"data\",endpoint=\"GET /v2/stocks/bars\",status=\"200\"}",
    );
    assert!(calls >= 1.0, "the bars calls are counted: {after}");
    assert!(
        sample(
            &after,
            "signal9_api_latency_seconds_count{api=\"data\",endpoint=\"GET /v2/stocks/bars\"}"
        ) >= calls
    );
    assert!(sample(&after, "signal9_limiter_wait_seconds_count{api=\"data\"}") >= calls);
    assert!(sample(&after, "signal9_limiter_tokens_in_window{api=\"data\"}") >= 1.0);
    assert!(sample(&after, "signal9_job_duration_seconds_count{kind=\"fetch-bars\"}") >= 12.0);
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_queues_workers_budgets_and_the_last_sync() {
    let mut stack = Stack::start(&["--assets", "300", "--limit", "0"]).unwrap();
    // Jobs queued before any worker: the depth shows them, no consumer.
    let symbols = active_symbols(42, 300, 7);
    let file = stack.symbols_file(&symbols);
    let out = stack.producer(&fetch_day(&file, "2026-11-18", None)).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let s = status(&stack).await;
    let queue = |s: &Value, name: &str| {
        s["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {s}"))
    };
    let bulk = format!("{}.fetch-bars", stack.namespace);
    assert_eq!(queue(&s, &bulk)["messages"], 7);
    assert_eq!(queue(&s, &bulk)["consumers"], 0);
    assert_eq!(s["workers"].as_array().unwrap().len(), 0);
    assert_eq!(s["dead_letters"]["messages"], 0);
    assert!(s["last_sync_run"].is_null());

    stack.start_worker(&["--concurrency", "3"]).unwrap();
    let sync = stack
        .producer(&["sync", "--run-id", "status-1", "--wait", "--wait-timeout-secs", "60"])
        .await
        .unwrap();
    assert!(sync.status.success(), "{}", text(&sync));
    let drained = eventually(Duration::from_secs(30), || async {
        queue_depth(&bulk).await.unwrap_or(1) == 0
    })
    .await;
    assert!(drained);
    let s = status(&stack).await;
    let workers = s["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{s}");
    assert_eq!(workers[0]["concurrency"], 3);
    assert_eq!(workers[0]["breakers"]["data"], "closed");
    assert_eq!(workers[0]["broker_connected"], true);
    assert!(queue(&s, &bulk)["consumers"].as_u64().unwrap() >= 1);
    assert_eq!(s["last_sync_run"]["run_id"], "status-1");
    assert_eq!(s["last_sync_run"]["status"], "completed");
    assert!(s["budgets"]["trading"]["in_window"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["budgets"]["data"]["limit"], 200);

    // The screen version names the same things.
    let screen = text(&stack.producer(&["status"]).await.unwrap());
    for part in ["QUEUE", &bulk, "WORKERS (1 alive)", "BUDGETS", "status-1 completed"] {
        assert!(screen.contains(part), "{part} in:\n{screen}");
    }
    // A stopped worker's heartbeat goes with it.
    stack.signal_worker(0, "-TERM").unwrap();
    let gone = eventually(Duration::from_secs(30), || async {
        status(&stack).await["workers"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(gone, "the heartbeat is removed on a clean stop");
    stack.cleanup().await;
}

/// Every span object (one with a traceId and a name) in an OTLP/JSON body.
fn spans(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("traceId") && map.contains_key("name") {
                out.push(value.clone());
            }
            for v in map.values() {
                spans(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| spans(v, out)),
        _ => {}
    }
}

fn attribute(span: &Value, key: &str) -> Option<Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| a["value"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_producer_through_a_retry_to_the_worker() {
    // An OTLP/HTTP collector that keeps every span it is sent.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let keep = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let keep = Arc::clone(&keep);
            async move {
                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                    let mut found = Vec::new();
                    spans(&value, &mut found);
                    keep.lock().unwrap().extend(found);
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stack = Stack::start(&["--assets", "300", "--limit", "0"]).unwrap();
    stack.extra_env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), collector),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".to_string(), "http/json".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "200".to_string()),
    ]);
    stack.start_worker(&[]).unwrap();
    // The first attempt meets a 5xx and goes through a delay tier; the
    // retry succeeds.
    stack.set_faults(serde_json::json!({"error_rate": 1.0})).await.unwrap();
    let symbol = active_symbols(42, 300, 1).remove(0);
    let waiter = stack
        .producer_spawn(&["status-check", &symbol, "--wait", "--wait-timeout-secs", "60"])
        .unwrap();
    let failed_once = eventually(Duration::from_secs(30), || async {
        stack.worker_logs().contains("Job failed")
    })
    .await;
    assert!(failed_once, "{}", stack.worker_logs());
    stack.set_faults(serde_json::json!({})).await.unwrap();
    let out = waiter.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let traced = eventually(Duration::from_secs(30), || {
        let received = Arc::clone(&received);
        async move {
            let spans = received.lock().unwrap().clone();
            let Some(publish) = spans.iter().find(|s| s["name"] == "publish") else {
                return false;
            };
            let trace = &publish["traceId"];
            let jobs: Vec<&Value> = spans
                .iter()
                .filter(|s| s["name"] == "job" && s["traceId"] == *trace)
                .collect();
            let calls = spans
                .iter()
                .filter(|s| s["name"] == "alpaca call" && s["traceId"] == *trace)
                .count();
            let waits = spans
                .iter()
                .filter(|s| s["name"] == "limiter wait" && s["traceId"] == *trace)
                .count();
            jobs.len() >= 2 && jobs.iter().all(|j| j["parentSpanId"] == publish["spanId"]) && calls >= 2 && waits >= 2
        }
    })
    .await;
    let spans = received.lock().unwrap().clone();
    assert!(
        traced,
        "the worker's job spans (both attempts), their API calls and limiter waits carry the producer's trace id: {}",
        serde_json::to_string_pretty(&spans).unwrap_or_default()
    );
    let attempts: Vec<Value> = spans
        .iter()
        .filter(|s| s["name"] == "job")
        .filter_map(|s| attribute(s, "attempt"))
        .collect();
    assert!(attempts.len() >= 2, "both attempts are spans: {attempts:?}");
    stack.cleanup().await;
}
