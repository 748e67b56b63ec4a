//! `signal9-api`: signal9 as the company's Alpaca endpoint, and its
//! operator console.
//!
//! Each route module has its own `routes()`, merged by [`router`]'s layers:
//!
//! - [`bars`]: Alpaca's bars routes, answered from the store; what the
//!   store lacks is fetched by interactive jobs through [`fetch`]; with
//!   `Accept: application/vnd.apache.arrow.stream`, the whole range as an
//!   Arrow IPC stream (`bars/ipc.rs`);
//! - [`assets`]: `/v2/assets` and `/v2/assets/{symbol_or_id}` from the store;
//! - [`auth`]: tokens with roles, from a file of SHA-256 hashes, and the
//!   `RequireRole` extractor every read route takes;
//! - [`console`]: the operator's pages at `/console` (sessions, pages, actions);
//! - [`error`]: the one error type, [`ApiError`], Alpaca-shaped;
//! - [`quota`]: every fetching request priced in calls and paid from its
//!   token's quota;
//! - [`serve`]: the HTTP server and its hardening (timeouts, load shedding,
//!   panics caught, security headers);
//! - `/metrics`, `/healthz`.
//!
//! Every door bounds what it takes (`signal9_shared::bounds`): a request out
//! of bounds is a 4xx naming the reason, never a panic or unbounded work.

mod assets;
mod auth;
mod bars;
mod cache;
mod console;
mod error;
mod fetch;
mod quota;
mod serve;
mod settings;

pub use auth::Tokens;
pub use bars::{decode_token, encode_token, BarsQuery, Market};
pub(crate) use error::request_id;
pub use error::ApiError;
use error::REQUEST_ID;
pub use settings::ApiSettings;

use anyhow::Context;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal9_shared::gate::ApiGate;
use signal9_shared::services::Services;
use signal9_shared::shutdown::Shutdown;
use signal9_shared::store::Store;
use signal9_shared::telemetry::metrics;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    /// The settings.
    pub(crate) settings: ApiSettings,
    /// The accepted tokens (the file, read again when it changes).
    pub(crate) tokens: auth::TokenFile,
    /// The store.
    pub(crate) store: Arc<dyn Store>,
    /// Publishes fetch jobs and waits for them.
    pub(crate) fetcher: fetch::Fetcher,
    /// The budgets (read by the console).
    pub(crate) gate: Arc<ApiGate>,
    /// Recently read covered ranges.
    pub(crate) cache: Arc<cache::Cache>,
    /// Unsettled ranges this process fetched lately, by series.
    pub(crate) fresh: Mutex<HashMap<String, bars::Fresh>>,
    /// Console sessions.
    pub(crate) sessions: console::Sessions,
    /// One console action (replay, purge) at a time.
    pub(crate) action: tokio::sync::Mutex<()>,
    /// The price list's buckets.
    pub(crate) quota: quota::Quota,
}

/// The state every handler and extractor shares.
pub(crate) type Shared = Arc<AppState>;

async fn record(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let m = metrics::get();
    m.http_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    m.http_latency
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Gives the request an id (a new UUID, or the client's `X-Request-Id`
/// when it is a short token), serves it with the id in scope for its
/// logs and errors, and returns the id in `X-Request-Id`.
async fn with_request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The answer to a request whose handler panicked: a 500 with the request
/// id (the panic itself is logged by the panic hook).
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let id = request_id();
    tracing::error!(request_id = %id, "A request's handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error (request id {id})"),
    )
    .into_response()
}

/// The routes on `state`, with their layers; `/healthz` and `/metrics`
/// stay outside the concurrency limit and the request timeout, so they
/// answer while the API sheds load.
pub(crate) fn router(state: Shared) -> Router {
    let settings = &state.settings;
    let limited = Router::new()
        .merge(bars::routes())
        .merge(assets::routes())
        .merge(console::routes())
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(serve::shed))
                .load_shed()
                .concurrency_limit(settings.max_concurrent)
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_secs(settings.request_timeout_secs),
                )),
        );
    let routes = Router::new()
        .merge(limited)
        .route("/metrics", get(|| async { metrics::render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route_layer(axum::middleware::from_fn(record))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(with_request_id))
        .layer(axum::extract::DefaultBodyLimit::max(serve::MAX_BODY_BYTES))
        .with_state(state);
    serve::with_security_headers(routes)
}

/// Builds the shared state from `settings`: reads the tokens, opens the store
/// and the budgets (the broker is reached at the first fetch).
pub(crate) async fn state(settings: ApiSettings) -> anyhow::Result<Shared> {
    anyhow::ensure!(
        settings.request_timeout_secs > settings.fetch_timeout_secs,
        "SIGNAL9_API_REQUEST_TIMEOUT_SECS ({}) must exceed SIGNAL9_API_FETCH_TIMEOUT_SECS ({}): a request waits for its fetch",
        settings.request_timeout_secs,
        settings.fetch_timeout_secs
    );
    let tokens = auth::TokenFile::open(&settings.tokens_file, settings.allow_example_tokens)?;
    let Services { store, gate } =
        Services::open(&settings.store, &settings.budget, &settings.broker.namespace).await?;
    let quota = quota::Quota::new(
        gate.budget(signal9_alpaca::Api::Data).pool().clone(),
        &settings.broker.namespace,
        quota::QuotaSizes {
            token_calls: settings.token_calls,
            total_calls: settings.api_calls,
            window: Duration::from_secs(settings.quota_window_secs),
        },
    );
    Ok(Arc::new(AppState {
        fetcher: fetch::Fetcher::new(settings.broker.clone()),
        cache: Arc::new(cache::Cache::new(
            settings.cache_entries,
            settings.cache_bytes,
            Duration::from_secs(60),
        )),
        tokens,
        store,
        gate,
        fresh: Mutex::new(HashMap::new()),
        sessions: console::Sessions::new(settings.max_sessions, settings.login_attempts),
        action: tokio::sync::Mutex::new(()),
        quota,
        settings,
    }))
}

/// Serves until `shutdown`. With port 0 the first line on stdout is
/// `LISTENING <port>`.
pub async fn run(settings: ApiSettings, shutdown: Shutdown) -> anyhow::Result<()> {
    let addr = settings.addr;
    let header_timeout = Duration::from_secs(settings.header_timeout_secs);
    let state = state(settings).await?;
    if state.settings.cache_entries > 0 {
        tokio::spawn(cache::listen(state.cache.clone(), state.settings.broker.clone()));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    if addr.port() == 0 {
        println!("LISTENING {}", local.port());
    }
    tracing::info!(addr = %local, store = %state.settings.store.describe(), "signal9-api listening");
    serve::serve(listener, router(state), header_timeout, shutdown).await;
    Ok(())
}
