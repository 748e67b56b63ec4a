//! Logs, traces and metrics.
//!
//! - Logs: `tracing`, filtered by `RUST_LOG`, written to stderr as JSON (one
//!   object a line, with the current span's fields) or as pretty text;
//!   `SIGNAL9_LOG_FORMAT=auto|json|pretty`, where `auto` (the default) means
//!   pretty on a terminal and JSON otherwise.
//! - Traces: OpenTelemetry, exported over OTLP/HTTP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`OTEL_EXPORTER_OTLP_PROTOCOL`
//!   `http/protobuf`, the default, or `http/json`). W3C trace context travels
//!   in AMQP message headers ([`inject`], [`extract`]), so a job's trace runs
//!   from the producer through the queue, retries included, to the worker.
//! - Metrics: Prometheus, in one registry per process ([`metrics`]); the
//!   worker serves it on `/metrics`.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub mod events;
pub mod metrics;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line: for log collectors.
    Json,
    /// Human-readable lines: for a terminal.
    Pretty,
}

impl LogFormat {
    /// `SIGNAL9_LOG_FORMAT`: `json`, `pretty`, or `auto`/unset (pretty on a
    /// terminal, JSON otherwise). An unknown value is JSON, with a warning.
    pub fn from_env() -> (Self, Option<String>) {
        let auto = if std::io::stderr().is_terminal() {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        };
        match std::env::var("SIGNAL9_LOG_FORMAT").ok().as_deref().map(str::trim) {
            None | Some("") | Some("auto") => (auto, None),
            Some("json") => (LogFormat::Json, None),
            Some("pretty") => (LogFormat::Pretty, None),
            Some(other) => (
                LogFormat::Json,
                Some(format!(
                    "SIGNAL9_LOG_FORMAT={other:?} is not auto, json or pretty; writing JSON"
                )),
            ),
        }
    }
}

/// Keeps the trace exporter alive; dropping it flushes the spans not yet
/// sent. Hold it until the process ends.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown_with_timeout(std::time::Duration::from_secs(5)) {
                eprintln!("warning: could not flush the last spans: {error}");
            }
        }
    }
}

fn exporter() -> Result<SdkTracerProvider, String> {
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok().as_deref() {
        Some("http/json") => opentelemetry_otlp::Protocol::HttpJson,
        None | Some("") | Some("http/protobuf") => opentelemetry_otlp::Protocol::HttpBinary,
        Some(other) => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: this build speaks http/protobuf and http/json"
            ))
        }
    };
    // The endpoint comes from OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name())
                .build(),
        )
        .build())
}

fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "signal9".into())
    })
}

/// Sets up logs and traces for a process. `default_filter` applies when
/// `RUST_LOG` is unset. Spans of signal9's own crates reach the trace
/// exporter at `info` whatever `RUST_LOG` says, so quiet logs keep full traces.
pub fn init(default_filter: &str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let (format, format_warning) = LogFormat::from_env();
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter())
    });
    let pretty = (format == LogFormat::Pretty).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
    });
    let wants_export = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_ok_and(|v| !v.is_empty());
    let (provider, export_error) = if wants_export {
        match exporter() {
            Ok(provider) => (Some(provider), None),
            Err(error) => (None, Some(error)),
        }
    } else {
        (None, None)
    };
    let otel = provider.as_ref().map(|provider| {
        let tracer = provider.tracer("signal9");
        let spans = tracing_subscriber::filter::Targets::new()
            .with_target("signal9_alpaca", tracing::Level::INFO)
            .with_target("signal9_shared", tracing::Level::INFO)
            .with_target("signal9_worker", tracing::Level::INFO)
            .with_target("signal9_producer", tracing::Level::INFO);
        // Only what a trace needs: no source locations, thread ids, targets
        // or busy/idle timers on every span (they cost a job ~5 µs), and no
        // context activation on every enter (propagation reads the span's
        // own context).
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(spans)
    });
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    let _ = tracing_subscriber::registry()
        .with(json)
        .with(pretty)
        .with(otel)
        .try_init();
    if let Some(warning) = format_warning {
        tracing::warn!("{warning}");
    }
    if let Some(error) = export_error {
        tracing::warn!(%error, "Traces are not exported");
    }
    log_panics();
    Telemetry { provider }
}

/// Panics go to the log as one line, in the log's format and with the span
/// they happened in (the job's or the request's), instead of a backtrace
/// on stderr. The worker and the API catch them at their task boundary and
/// carry on; this only tells of them.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let message: String = message.chars().filter(|c| !c.is_control()).take(300).collect();
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(panic = %message, %location, "A task panicked; it is caught at its task boundary");
    }));
}

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(ShortString::from(key), AMQPValue::LongString(LongString::from(value)));
    }
}

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(&ShortString::from(key))? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the trace context of `span` (`traceparent`, `tracestate`) into
/// message headers. Without an exporter there is no context and nothing is
/// written.
pub fn inject(span: &tracing::Span, headers: &mut FieldTable) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

/// The trace context carried by message headers (empty when there is none).
pub fn extract(headers: Option<&FieldTable>) -> opentelemetry::Context {
    match headers {
        Some(headers) => opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers))),
        None => opentelemetry::Context::new(),
    }
}

/// Makes `span` a child of the trace carried by `headers`, when they carry one.
pub fn continue_trace(span: &tracing::Span, headers: Option<&FieldTable>) {
    let cx = extract(headers);
    use opentelemetry::trace::TraceContextExt;
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the trace carried by `headers` (a batch serving jobs of
/// several traces links to each of them).
pub fn link_trace(span: &tracing::Span, headers: Option<&FieldTable>) {
    use opentelemetry::trace::TraceContextExt;
    let cx = extract(headers);
    let context = cx.span().span_context().clone();
    if context.is_valid() {
        span.add_link(context);
    }
}

/// The trace id of `span` as 32 hex digits, when it has one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let context = cx.span().span_context().clone();
    context.is_valid().then(|| context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_span_context_travels_through_message_headers() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let producer = tracing::info_span!("publish");
            let mut headers = FieldTable::default();
            inject(&producer, &mut headers);
            let sent = trace_id(&producer).expect("the producer's span has a trace");
            assert!(headers.inner().contains_key(&ShortString::from("traceparent")));

            let worker = tracing::info_span!("job");
            continue_trace(&worker, Some(&headers));
            assert_eq!(
                trace_id(&worker).as_deref(),
                Some(sent.as_str()),
                "the worker continues the trace"
            );

            let batch = tracing::info_span!("batch");
            link_trace(&batch, Some(&headers));
            assert_ne!(
                trace_id(&batch).as_deref(),
                Some(sent.as_str()),
                "a link is not a parent"
            );

            let orphan = tracing::info_span!("job");
            continue_trace(&orphan, None);
            continue_trace(&orphan, Some(&FieldTable::default()));
            assert!(
                trace_id(&orphan).is_some_and(|t| t != sent),
                "no header: a trace of its own"
            );
        });
    }
}
