//! `GET /v2/stocks/bars`, `GET /v2/stocks/{symbol}/bars` and
//! `GET /v1beta3/crypto/us/bars`: Alpaca's parameters, JSON and pagination,
//! answered from the store.
//!
//! Per symbol, the range is cut where it stops being settled (see
//! `BarsRequest::settles_at`): the settled part is answered from the store
//! where its coverage reaches, and the rest of it is fetched by an
//! interactive job (and so becomes covered); the unsettled tail (today's
//! bars) is fetched by a job unless this process fetched it in the last
//! `--fresh-secs`. Then every bar comes from the store, paged as Alpaca
//! pages: `limit` bars across the symbols, in symbol order, with an opaque
//! `next_page_token`.
//!
//! - `query`: the parameters checked, the page token;
//! - `plan`: what the store holds and what interactive jobs fetch;
//! - `page`: the JSON page from the store;
//! - `ipc`: the whole range as an Arrow IPC stream.

mod ipc;
mod page;
mod plan;
mod query;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use signal9_shared::telemetry::metrics;

use crate::auth::{Caller, Read, RequireRole};
use crate::{fetch, quota, ApiError, Shared};

pub(crate) use plan::Fresh;
use plan::Source;
pub use query::{decode_token, encode_token, BarsQuery, Market};

/// The bars routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v2/stocks/bars", get(stock_bars))
        .route("/v2/stocks/{symbol}/bars", get(stock_symbol_bars))
        .route("/v1beta3/crypto/us/bars", get(crypto_bars))
}

async fn stock_bars(
    State(state): State<Shared>,
    RequireRole(caller, _): RequireRole<Read>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    serve_bars(&state, caller, &headers, Market::Stocks, None, &params).await
}

async fn stock_symbol_bars(
    State(state): State<Shared>,
    RequireRole(caller, _): RequireRole<Read>,
    headers: HeaderMap,
    Path(symbol): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    serve_bars(&state, caller, &headers, Market::Stocks, Some(&symbol), &params).await
}

async fn crypto_bars(
    State(state): State<Shared>,
    RequireRole(caller, _): RequireRole<Read>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    serve_bars(&state, caller, &headers, Market::Crypto, None, &params).await
}

async fn serve_bars(
    state: &Shared,
    caller: Caller,
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
    answer_bars(state, caller, headers, market, single, params)
        .instrument(span)
        .await
}

async fn answer_bars(
    state: &Shared,
    caller: Caller,
    headers: &HeaderMap,
    market: Market,
    single: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
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
    let plan = plan::plan(state, &query, now, settings.max_jobs_per_request).await?;
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
    let cacheable = source == Source::Store;
    metrics::get().read_bars.with_label_values(&[source.as_str()]).inc();
    let (content_type, body) = if arrow {
        (ipc::MEDIA_TYPE, ipc::body(Arc::clone(state), query))
    } else {
        let page = page::page(state, &query, single.is_some(), cacheable).await?;
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
