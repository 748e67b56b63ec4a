//! `signal9-api`: signal9 as the company's Alpaca endpoint, and its
//! operator console.
//!
//! - [`bars`]: Alpaca's bars routes, answered from the store; what the
//!   store lacks is fetched by interactive jobs through [`fetch`];
//! - [`assets`]: `/v2/assets` and `/v2/assets/{symbol_or_id}` from the store;
//! - [`auth`]: tokens with roles, from a file of SHA-256 hashes;
//! - [`console`]: the operator's pages at `/console`;
//! - `/metrics`, `/healthz`.

pub mod assets;
pub mod auth;
pub mod bars;
pub mod cache;
pub mod console;
pub mod fetch;
pub mod settings;

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

use signal9_shared::guard::ApiGuard;
use signal9_shared::shutdown::Shutdown;
use signal9_shared::store::{Store, StoreError};
use signal9_shared::telemetry::metrics;

use auth::{Denied, Role};
use bars::{BarsQuery, Market};
use settings::ApiSettings;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The settings.
    pub settings: ApiSettings,
    /// The accepted tokens (the file, read again when it changes).
    pub tokens: auth::TokenFile,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Publishes fetch jobs and waits for them.
    pub fetcher: fetch::Fetcher,
    /// The budgets (read by the console).
    pub guard: Arc<ApiGuard>,
    /// Recently read covered ranges.
    pub cache: Arc<cache::Cache>,
    /// Unsettled ranges this process fetched lately, by series.
    pub fresh: Mutex<HashMap<String, bars::Fresh>>,
    /// Console sessions.
    pub sessions: console::Sessions,
    /// One console action (replay, purge) at a time.
    pub action: tokio::sync::Mutex<()>,
}

/// An error answer, as Alpaca shapes them: `{"code": N, "message": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// The store failed.
    pub fn store(error: StoreError) -> Self {
        tracing::error!(%error, "Store read failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store is unavailable: {error}"),
        )
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
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

type Shared = Arc<AppState>;

fn authorize(state: &AppState, headers: &HeaderMap, role: Role) -> Result<Role, ApiError> {
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
    state: &AppState,
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
    state: &AppState,
    headers: &HeaderMap,
    market: Market,
    single: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    authorize(state, headers, Role::Read)?;
    let now = chrono::Utc::now();
    let query = BarsQuery::parse(market, single, params, now)?;
    let plan = bars::plan(state, &query, now).await?;
    let source = plan.source();
    tracing::Span::current().record("source", source.as_str());
    if !plan.needs.is_empty() {
        let wait = Duration::from_secs(state.settings.fetch_timeout_secs);
        match state.fetcher.fetch(&plan.needs, wait).await {
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
            Err(error @ fetch::FetchError::Broker(_)) => {
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()))
            }
        }
    }
    let cacheable = source == bars::Source::Store;
    let body = bars::page(state, &query, single.is_some(), cacheable).await?;
    metrics::get().read_bars.with_label_values(&[source.as_str()]).inc();
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                header::HeaderName::from_static("x-signal9-source"),
                HeaderValue::from_static(source.as_str()),
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

/// The routes on `state`.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v2/stocks/bars", get(stock_bars))
        .route("/v2/stocks/{symbol}/bars", get(stock_symbol_bars))
        .route("/v1beta3/crypto/us/bars", get(crypto_bars))
        .route("/v2/assets", get(list_assets))
        .route("/v2/assets/{symbol_or_id}", get(one_asset))
        .merge(console::routes())
        .route("/metrics", get(|| async { metrics::render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route_layer(axum::middleware::from_fn(record))
        .with_state(state)
}

/// Builds the shared state from `settings`: reads the tokens, opens the store
/// and the budgets (the broker is reached at the first fetch).
pub async fn state(settings: ApiSettings) -> anyhow::Result<Shared> {
    let tokens = auth::TokenFile::open(&settings.tokens_file)?;
    let store = settings.store.open().await.context("opening the store")?;
    let guard = Arc::new(
        settings
            .budget
            .guard(&settings.broker.namespace)
            .context("connecting to Redis")?,
    );
    Ok(Arc::new(AppState {
        fetcher: fetch::Fetcher::new(settings.broker.clone()),
        cache: Arc::new(cache::Cache::new(settings.cache_entries, Duration::from_secs(60))),
        tokens,
        store,
        guard,
        fresh: Mutex::new(HashMap::new()),
        sessions: console::Sessions::default(),
        action: tokio::sync::Mutex::new(()),
        settings,
    }))
}

/// Serves until `shutdown`. With port 0 the first line on stdout is
/// `LISTENING <port>`.
pub async fn run(settings: ApiSettings, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let addr = settings.addr;
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await
        .context("serving")?;
    Ok(())
}
