//! `signal9-api`: signal9 as the company's Alpaca endpoint, and its
//! operator console.
//!
//! - [`bars`]: Alpaca's bars routes, answered from the store; what the
//!   store lacks is fetched by interactive jobs through [`fetch`]; with
//!   `Accept: application/vnd.apache.arrow.stream`, the whole range as an
//!   Arrow IPC stream ([`ipc`]);
//! - [`assets`]: `/v2/assets` and `/v2/assets/{symbol_or_id}` from the store;
//! - [`auth`]: tokens with roles, from a file of SHA-256 hashes;
//! - [`console`]: the operator's pages at `/console`;
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
mod fetch;
mod ipc;
mod quota;
mod serve;
mod settings;

pub use auth::Tokens;
pub use bars::{decode_token, encode_token, BarsQuery, Market};
pub use settings::ApiSettings;

use anyhow::Context;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
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
use signal9_shared::store::{Store, StoreError};
use signal9_shared::telemetry::metrics;

use auth::{Denied, Role};

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

tokio::task_local! {
    /// The id of the request being served, for its error bodies and logs.
    static REQUEST_ID: String;
}

/// The id of the request this task serves (`-` outside one).
pub(crate) fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "-".to_owned())
}

/// An error answer, as Alpaca shapes them: `{"code": N, "message": "..."}`.
/// A server-side error's message names the request id, never its cause:
/// causes go to the log under that id.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// Seconds the client should wait (`Retry-After`), for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// With `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// A failure inside: logged with its cause under the request id; the
    /// client is told what failed and the id, not the cause.
    pub fn internal(status: StatusCode, what: &str, cause: &dyn std::fmt::Display) -> Self {
        let id = request_id();
        tracing::error!(request_id = %id, error = %cause, "{what}");
        ApiError::new(status, format!("{what} (request id {id})"))
    }

    /// The store failed.
    pub fn store(error: StoreError) -> Self {
        ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable", &error).retry_after(5)
    }

    fn denied(denied: Denied) -> Self {
        match denied {
            Denied::Unauthenticated(why) => ApiError::new(StatusCode::UNAUTHORIZED, why),
            Denied::Forbidden(role) => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this token lacks the `{}` role", role.as_str()),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = u32::from(self.status.as_u16()) * 100_000;
        let body = serde_json::json!({"code": code, "message": self.message});
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

type Shared = Arc<AppState>;

fn authorize(state: &AppState, headers: &HeaderMap, role: Role) -> Result<auth::Caller, ApiError> {
    state.tokens.current().check(headers, role).map_err(ApiError::denied)
}

async fn stock_bars(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    serve_bars(&state, &headers, Market::Stocks, None, &params).await
}

async fn stock_symbol_bars(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(symbol): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    serve_bars(&state, &headers, Market::Stocks, Some(&symbol), &params).await
}

async fn crypto_bars(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    serve_bars(&state, &headers, Market::Crypto, None, &params).await
}

async fn serve_bars(
    state: &Shared,
    headers: &HeaderMap,
    market: Market,
    single: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    use tracing::Instrument;
    // The request's span: the fetch jobs it publishes continue its trace.
    let span = tracing::info_span!(
        "read bars",
        market = ?market,
        symbols = %params.get("symbols").map_or(single.unwrap_or_default(), String::as_str).chars().take(200).collect::<String>(),
        timeframe = params.get("timeframe").map_or("", String::as_str),
        source = tracing::field::Empty
    );
    answer_bars(state, headers, market, single, params)
        .instrument(span)
        .await
}

async fn answer_bars(
    state: &Shared,
    headers: &HeaderMap,
    market: Market,
    single: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let caller = authorize(state, headers, Role::Read)?;
    let settings = &state.settings;
    let now = chrono::Utc::now();
    let query = BarsQuery::parse(market, single, params, now, settings.max_symbols)?;
    let arrow = ipc::wanted(headers);
    if arrow && (params.contains_key("limit") || params.contains_key("page_token")) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit and page_token do not apply to an Arrow stream: it carries the whole range",
        ));
    }
    if let Some(fault) = settings.fault_panic_symbol.as_deref().filter(|s| !s.is_empty()) {
        if query.symbols.iter().any(|s| s.as_str() == fault) {
            panic!("fault injected for {fault} (SIGNAL9_FAULT_PANIC_SYMBOL)");
        }
    }
    let plan = bars::plan(state, &query, now, settings.max_jobs_per_request).await?;
    if let Some(jobs) = plan.over_cap {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "this request would need at least {jobs} fetch jobs, more than the {} one request may cause \
                 (SIGNAL9_API_MAX_JOBS_PER_REQUEST): ask for a shorter range or fewer symbols, \
                 or load the history with `signal9-producer backfill` and read it from the store",
                settings.max_jobs_per_request
            ),
        ));
    }
    let calls = plan.calls();
    let source = plan.source();
    tracing::Span::current().record("source", source.as_str());
    if !plan.needs.is_empty() {
        state
            .fetcher
            .room(&plan.needs, settings.max_inflight_jobs)
            .map_err(|busy| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, busy.to_string()).retry_after(5))?;
        state
            .quota
            .take(&caller.hash, caller.calls, calls)
            .await
            .map_err(|refused| match refused {
                quota::Refused::Later { retry_secs, .. } => {
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, refused.to_string()).retry_after(retry_secs)
                }
                quota::Refused::TooDear { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, refused.to_string()),
                quota::Refused::Unavailable => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, refused.to_string()).retry_after(5)
                }
            })?;
        let wait = Duration::from_secs(settings.fetch_timeout_secs);
        match state.fetcher.fetch(&plan.needs, wait, settings.max_inflight_jobs).await {
            Ok(()) => {
                let mut fresh = state.fresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                fresh.extend(plan.fresh.iter().cloned());
                if fresh.len() > 100_000 {
                    fresh.clear();
                }
            }
            Err(error @ fetch::FetchError::Timeout { .. }) => {
                return Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, error.to_string()))
            }
            Err(error @ fetch::FetchError::Failed { .. }) => {
                return Err(ApiError::new(StatusCode::BAD_GATEWAY, error.to_string()))
            }
            Err(error @ fetch::FetchError::Busy { .. }) => {
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).retry_after(5))
            }
            Err(fetch::FetchError::Broker(error)) => {
                return Err(
                    ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "the job queue is unavailable", &error)
                        .retry_after(5),
                )
            }
        }
    }
    let cacheable = source == bars::Source::Store;
    metrics::get().read_bars.with_label_values(&[source.as_str()]).inc();
    let (content_type, body) = if arrow {
        (ipc::MEDIA_TYPE, ipc::body(Arc::clone(state), query))
    } else {
        let page = bars::page(state, &query, single.is_some(), cacheable).await?;
        ("application/json", axum::body::Body::from(page))
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::HeaderName::from_static("x-signal9-source"),
                HeaderValue::from_static(source.as_str()),
            ),
            (
                header::HeaderName::from_static("x-signal9-calls"),
                HeaderValue::from(calls),
            ),
        ],
        body,
    )
        .into_response())
}

async fn list_assets(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Role::Read)?;
    assets::list(&state, &params).await
}

async fn one_asset(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(wanted): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Role::Read)?;
    assets::one(&state, &wanted).await
}

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
        .route("/v2/stocks/bars", get(stock_bars))
        .route("/v2/stocks/{symbol}/bars", get(stock_symbol_bars))
        .route("/v1beta3/crypto/us/bars", get(crypto_bars))
        .route("/v2/assets", get(list_assets))
        .route("/v2/assets/{symbol_or_id}", get(one_asset))
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
