//! `telemetry::init` in a process of its own (this test binary): logs as
//! JSON, spans exported over OTLP/HTTP to a collector inside the test, the
//! exporter flushed when the handle drops, and the warnings for settings
//! it cannot use. One test, since it sets process-wide environment
//! variables and the global subscriber.
#![allow(clippy::unwrap_used)]

use axum::routing::post;
use signal9_shared::telemetry::{self, LogFormat};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_exports_spans_to_the_collector_and_flushes_on_drop() {
    // The format setting, read before anything else uses the environment.
    std::env::set_var("SIGNAL9_LOG_FORMAT", "pretty");
    assert_eq!(LogFormat::from_env(), (LogFormat::Pretty, None));
    std::env::set_var("SIGNAL9_LOG_FORMAT", "json");
    assert_eq!(LogFormat::from_env(), (LogFormat::Json, None));
    std::env::set_var("SIGNAL9_LOG_FORMAT", "xml");
    let (format, warning) = LogFormat::from_env();
    assert_eq!(format, LogFormat::Json);
    assert!(warning.unwrap().contains("\"xml\""));

    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = Arc::clone(&bodies);
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let keep = Arc::clone(&keep);
            async move {
                keep.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    std::env::set_var("OTEL_SERVICE_NAME", "telemetry-test");
    let handle = telemetry::init("info");
    assert!(handle.exporting(), "an endpoint is set: spans are exported");
    let trace = {
        let span = tracing::info_span!(target: "signal9_shared", "telemetry test span", job_id = "j-1");
        let _entered = span.enter();
        tracing::info!("Inside the span");
        telemetry::trace_id(&span).expect("an exported span has a trace id")
    };
    // The exporter runs on threads of its own; dropping the handle flushes it.
    tokio::task::spawn_blocking(move || drop(handle)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let seen = bodies.lock().unwrap().join("\n");
        if seen.contains("telemetry test span") || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        found.contains("telemetry test span"),
        "the span reached the collector: {found}"
    );
    assert!(found.contains(&trace), "with its trace id {trace}: {found}");
    assert!(found.contains("telemetry-test"), "with the service name: {found}");

    // A protocol this build does not speak: no export, and a warning rather
    // than a failed start.
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let without = telemetry::init("info");
    assert!(!without.exporting());
    // No endpoint: nothing is exported.
    std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
    std::env::remove_var("OTEL_EXPORTER_OTLP_PROTOCOL");
    assert!(!telemetry::init("info").exporting());
}
