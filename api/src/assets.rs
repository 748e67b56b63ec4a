//! `GET /v2/assets` and `GET /v2/assets/{symbol_or_id}`, as the trading API
//! answers them, from the assets the daily sync stored. Assets a sync no
//! longer sees (delisted by signal9) are not listed, as the API no longer
//! lists them; one asked for by id is still found.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;

use signal9_alpaca::{AssetClass, AssetStatus, Symbol};
use signal9_shared::store::{AssetFilter, StoredAsset};

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;

use crate::auth::{Read, RequireRole};
use crate::{ApiError, AppState, Shared};

fn unprocessable(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// The asset as the trading API writes it. Flags the stored record lacks
/// (real listings leave some out) are written `false`, which is what
/// alpaca-py's model requires.
fn json(stored: &StoredAsset) -> Value {
    let mut value = serde_json::to_value(&stored.asset).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        for flag in ["marginable", "shortable", "easy_to_borrow", "fractionable"] {
            object.entry(flag).or_insert(Value::Bool(false));
        }
        object.entry("name").or_insert(Value::String(String::new()));
    }
    value
}

fn answer(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /v2/assets`: `status`, `asset_class` (default `us_equity`),
/// `exchange` and `attributes` (any of a comma list).
pub(crate) async fn list(state: &AppState, params: &HashMap<String, String>) -> Result<Response, ApiError> {
    let param = |k: &str| params.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let status = match param("status") {
        Some(s) => Some(
            s.parse::<AssetStatus>()
                .map_err(|_| unprocessable(format!("invalid status: {}", short(s))))?,
        ),
        None => None,
    };
    let class = match param("asset_class") {
        Some(c) => c
            .parse::<AssetClass>()
            .map_err(|_| unprocessable(format!("invalid asset_class: {}", short(c))))?,
        None => AssetClass::UsEquity,
    };
    let exchange = param("exchange");
    let attributes: Vec<&str> = param("attributes")
        .map(|a| a.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let filter = AssetFilter {
        class: Some(class),
        status,
        include_delisted: false,
    };
    let stored = state.store.list_assets(&filter).await.map_err(ApiError::store)?;
    let list: Vec<Value> = stored
        .iter()
        .filter(|a| exchange.is_none_or(|e| a.asset.exchange == e))
        .filter(|a| attributes.is_empty() || a.asset.attributes.iter().any(|x| attributes.contains(&x.as_str())))
        .map(json)
        .collect();
    Ok(answer(Value::Array(list).to_string()))
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// `GET /v2/assets/{symbol_or_id}`: by id, else by symbol (the listed
/// asset of a recycled ticker; `BTCUSD` finds `BTC/USD`).
pub(crate) async fn one(state: &AppState, wanted: &str) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("asset not found for {}", short(wanted)));
    if uuid::Uuid::parse_str(wanted).is_ok() {
        return match state
            .store
            .get_asset(&wanted.to_ascii_lowercase())
            .await
            .map_err(ApiError::store)?
        {
            Some(asset) => Ok(answer(json(&asset).to_string())),
            None => Err(not_found()),
        };
    }
    let mut candidates = Vec::new();
    if let Ok(symbol) = Symbol::parse(wanted) {
        candidates.push(symbol);
    }
    // `BTCUSD` → `BTC/USD` (and other quote currencies of three or four
    // letters). Only ASCII can be a symbol: anything else (a path of any
    // bytes) is not cut, where a cut could fall inside a character.
    if wanted.is_ascii() && !wanted.contains('/') && wanted.len() > 3 {
        for cut in [3, 4] {
            if let Some((base, quote)) = wanted.len().checked_sub(cut).and_then(|at| wanted.split_at_checked(at)) {
                if let Ok(pair) = Symbol::parse(&format!("{base}/{quote}")) {
                    candidates.push(pair);
                }
            }
        }
    }
    for symbol in candidates {
        let found = state.store.assets_by_symbol(&symbol).await.map_err(ApiError::store)?;
        let best = found
            .iter()
            .filter(|a| a.delisted_at.is_none())
            .max_by_key(|a| a.asset.status == AssetStatus::Active)
            .or_else(|| found.first());
        if let Some(asset) = best {
            return Ok(answer(json(asset).to_string()));
        }
    }
    Err(not_found())
}

/// The assets routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v2/assets", get(list_assets))
        .route("/v2/assets/{symbol_or_id}", get(one_asset))
}

/// `GET /v2/assets`.
async fn list_assets(
    State(state): State<Shared>,
    _: RequireRole<Read>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    list(&state, &params).await
}

/// `GET /v2/assets/{symbol_or_id}`.
async fn one_asset(
    State(state): State<Shared>,
    _: RequireRole<Read>,
    Path(wanted): Path<String>,
) -> Result<Response, ApiError> {
    one(&state, &wanted).await
}
