//! The control and stats endpoints under `/_sim`: request counts, faults,
//! key rotation, changes to the universe, corporate actions to announce.

use super::*;

pub(super) async fn stats(State(sim): State<Shared>) -> Json<Value> {
    let stats = lock(&sim.stats);
    let apis: Map<String, Value> = [Api::Trading, Api::Data]
        .into_iter()
        .map(|api| {
            let s = stats.apis.get(&api);
            let v = json!({
                "accepted": s.map_or(0, |s| s.accepted),
                "rate_limited": s.map_or(0, |s| s.rate_limited),
                "max_in_window": s.map_or(0, |s| s.max_in_window),
                "per_window": s.map_or(Vec::new(), |s| s.per_window.clone()),
            });
            (api.name().to_owned(), v)
        })
        .collect();
    let requests: Vec<Value> = stats
        .requests
        .iter()
        .map(|((path, status), count)| json!({"path": path, "status": status, "count": count}))
        .collect();
    let total: u64 = stats.requests.values().sum();
    Json(json!({
        "limit": sim.config.limit,
        "window_secs": sim.config.window.as_secs_f64(),
        "apis": apis,
        "requests": requests,
        "total": total,
    }))
}

pub(super) async fn reset_stats(State(sim): State<Shared>) -> StatusCode {
    *lock(&sim.stats) = Stats::default();
    StatusCode::NO_CONTENT
}

pub(super) async fn get_faults(State(sim): State<Shared>) -> Json<Faults> {
    Json(lock(&sim.faults).faults.clone())
}

pub(super) async fn put_faults(State(sim): State<Shared>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            sim.set_faults(faults.clone());
            Json(faults).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": format!("invalid faults: {e}")})),
        )
            .into_response(),
    }
}

/// A new accepted key pair, as a rotation does: `PUT /_sim/keys` with
/// `{"key": .., "secret": ..}`. The old pair is refused from then on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyRotation {
    key: String,
    secret: String,
}

pub(super) async fn put_keys(State(sim): State<Shared>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<KeyRotation>(&body) {
        Ok(k) if !k.key.is_empty() && !k.secret.is_empty() => {
            *sim.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (k.key, k.secret);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(_) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "key and secret must not be empty"})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": format!("invalid keys: {e}")})),
        )
            .into_response(),
    }
}

/// Changes to the universe between two syncs: `POST /_sim/assets`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssetChanges {
    /// `[{"symbol": "X", "active": false}]`: flips status (inactive assets are not tradable).
    #[serde(default)]
    set_active: Vec<SetActive>,
    /// `[{"symbol": "X", "tradable": false}]`.
    #[serde(default)]
    set_tradable: Vec<SetTradable>,
    /// `[{"symbol": "NEWCO", "exchange": "NASDAQ"}]`: new active, tradable listings.
    #[serde(default)]
    add: Vec<AddAsset>,
    /// Symbols whose listings disappear from the API entirely.
    #[serde(default)]
    remove: Vec<String>,
    /// `[{"symbol": "X", "omit": ["status"]}]`: the listing of X leaves these
    /// fields out from now on (a listed asset our validation refuses).
    #[serde(default)]
    set_omit: Vec<SetOmit>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SetOmit {
    symbol: String,
    omit: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SetActive {
    symbol: String,
    active: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct SetTradable {
    symbol: String,
    tradable: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct AddAsset {
    symbol: String,
    exchange: String,
    /// The listing's name; `"{symbol} Inc."` by default.
    #[serde(default)]
    name: Option<String>,
    /// Fields the listing leaves out, e.g. `["fractionable"]`.
    #[serde(default)]
    omit: Vec<String>,
}

pub(super) async fn change_assets(State(sim): State<Shared>, body: axum::body::Bytes) -> Response {
    let changes: AssetChanges = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": format!("invalid changes: {e}")})),
            )
                .into_response()
        }
    };
    let Ok(mut universe) = sim.universe.write() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut missing = Vec::new();
    let mut changed = Vec::new();
    for change in &changes.set_active {
        match universe
            .iter_mut()
            .filter(|a| a.symbol == change.symbol)
            .max_by_key(|a| a.active)
        {
            Some(asset) => {
                asset.active = change.active;
                asset.tradable = change.active && asset.tradable;
                changed.push(asset.id.clone());
            }
            None => missing.push(change.symbol.clone()),
        }
    }
    for change in &changes.set_tradable {
        match universe
            .iter_mut()
            .filter(|a| a.symbol == change.symbol)
            .max_by_key(|a| a.active)
        {
            Some(asset) => {
                asset.tradable = change.tradable;
                changed.push(asset.id.clone());
            }
            None => missing.push(change.symbol.clone()),
        }
    }
    for change in &changes.set_omit {
        match universe.iter_mut().find(|a| a.symbol == change.symbol) {
            Some(asset) => {
                asset.omit = change.omit.clone();
                changed.push(asset.id.clone());
            }
            None => missing.push(change.symbol.clone()),
        }
    }
    for symbol in &changes.remove {
        let before = universe.len();
        universe.retain(|a| a.symbol != *symbol);
        if universe.len() == before {
            missing.push(symbol.clone());
        }
    }
    let mut added = Vec::new();
    for new in &changes.add {
        let mut asset = universe
            .iter()
            .find(|a| a.class == "us_equity" && a.active)
            .cloned()
            .unwrap_or_else(|| universe::generate(1, 200)[30].clone());
        asset.id = uuid::Uuid::new_v4().to_string();
        asset.symbol = new.symbol.clone();
        asset.exchange = new.exchange.clone();
        asset.name = Some(new.name.clone().unwrap_or_else(|| format!("{} Inc.", new.symbol)));
        asset.omit = new.omit.clone();
        asset.active = true;
        asset.tradable = true;
        added.push(asset.id.clone());
        universe.push(asset);
    }
    Json(json!({"changed": changed, "added": added, "not_found": missing})).into_response()
}

pub(super) async fn add_actions(State(sim): State<Shared>, body: axum::body::Bytes) -> Response {
    let added = serde_json::from_slice::<actions::NewActions>(&body)
        .map_err(|e| format!("invalid actions: {e}"))
        .and_then(actions::NewActions::into_actions);
    match added {
        Ok(added) => {
            let ids: Vec<String> = added.iter().map(|a| a.id.clone()).collect();
            if let Ok(mut list) = sim.actions.write() {
                list.extend(added);
            }
            Json(json!({"added": ids})).into_response()
        }
        Err(message) => (StatusCode::BAD_REQUEST, Json(json!({"message": message}))).into_response(),
    }
}
