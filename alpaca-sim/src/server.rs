//! The HTTP side of the simulator: routing, auth, the per-key rate limit,
//! fault injection, and the control and stats endpoints under `/_sim`.
//!
//! Every API request goes through the same steps in the order the real
//! service applies them: authentication, the outage switch, the rate limit
//! (a sliding window per key and API), added latency, injected 5xx, the
//! handler, and injected body corruption.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::actions::{self, Factors, SimAction};
use crate::bars::{bar_json, for_each_bar_time, scale, Frame, Market, Series};
use crate::universe::{self, SimAsset};

/// The simulator's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the universe and the bars.
    pub seed: u64,
    /// Number of assets in the universe.
    pub assets: usize,
    /// The accepted key id.
    pub key: String,
    /// The accepted secret key.
    pub secret: String,
    /// Calls per window per key and API; 0 turns the limit off.
    pub limit: u32,
    /// Window length.
    pub window: Duration,
    /// Frozen data horizon; the wall clock when `None`.
    pub now: Option<DateTime<Utc>>,
    /// A free plan: recent `sip` data is refused with 403.
    pub free_plan: bool,
    /// List some equities without their deprecated fields
    /// ([`universe::roughen`]); off by default, as the real API sends them.
    pub hostile_assets: bool,
    /// Faults active from the start.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            assets: 12_000,
            key: "sim-key".into(),
            secret: "sim-secret".into(),
            limit: 200,
            window: Duration::from_secs(60),
            now: None,
            free_plan: false,
            hostile_assets: false,
            faults: Faults::default(),
        }
    }
}

/// Injected faults. `PUT /_sim/faults` replaces them; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Probability (0–1) that an admitted request fails with 500/502/503/504.
    #[serde(default)]
    pub error_rate: f64,
    /// Latency added to every admitted request, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Probability (0–1) that a 200 body is cut in half (invalid JSON).
    #[serde(default)]
    pub malformed_rate: f64,
    /// Probability (0–1) that a 200 body is complete JSON of the wrong
    /// shape (a string where an object or array belongs).
    #[serde(default)]
    pub mismatch_rate: f64,
    /// Keep only this fraction (0–1) of every asset listing.
    #[serde(default)]
    pub truncate_assets: Option<f64>,
    /// Keep only this fraction (0–1) of the listings of one asset class,
    /// e.g. `{"crypto": 0.0}` for an empty crypto listing (HTTP 200, `[]`).
    #[serde(default)]
    pub truncate_class: BTreeMap<String, f64>,
    /// The listing of one asset class answers with this HTTP status,
    /// e.g. `{"crypto": 422}` for a page that fails permanently.
    #[serde(default)]
    pub fail_class: BTreeMap<String, u16>,
    /// An outage: every API request gets a gateway 503 for this many seconds from now.
    #[serde(default)]
    pub outage_secs: Option<f64>,
    /// Every API request gets a 429 for this many seconds from now, with that reset time.
    #[serde(default)]
    pub rate_limit_secs: Option<f64>,
    /// Crypto bar pages repeat some timestamps (seen in real responses).
    #[serde(default)]
    pub duplicate_crypto_bars: bool,
    /// A page reached with a page token starts again at the last bar of
    /// the page before it, so that bar comes twice, across the boundary.
    #[serde(default)]
    pub repeat_page_boundary: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Api {
    Trading,
    Data,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Trading => "trading",
            Api::Data => "data",
        }
    }
}

#[derive(Debug, Default)]
struct ApiStats {
    accepted: u64,
    rate_limited: u64,
    max_in_window: usize,
    recent: VecDeque<Instant>,
    /// Accepted calls per consecutive window since the first accepted call.
    first: Option<Instant>,
    per_window: Vec<u64>,
}

#[derive(Debug, Default)]
struct Stats {
    apis: BTreeMap<Api, ApiStats>,
    requests: BTreeMap<(String, u16), u64>,
}

#[derive(Debug, Default)]
struct ActiveFaults {
    faults: Faults,
    outage_until: Option<SystemTime>,
    rate_limited_until: Option<SystemTime>,
}

/// The simulator's shared state.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    /// The accepted key pair; `PUT /_sim/keys` rotates it.
    keys: RwLock<(String, String)>,
    universe: RwLock<Vec<SimAsset>>,
    /// Corporate actions added by `POST /_sim/actions` (seeded ones are computed).
    actions: RwLock<Vec<SimAction>>,
    faults: Mutex<ActiveFaults>,
    windows: Mutex<HashMap<(String, Api), VecDeque<Instant>>>,
    stats: Mutex<Stats>,
    rng: Mutex<ChaCha8Rng>,
}

type Shared = Arc<Sim>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain counters; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sim {
    /// Builds the state: generates the universe and arms the initial faults.
    pub fn new(config: SimConfig) -> Self {
        let mut universe = universe::generate(config.seed, config.assets);
        if config.hostile_assets {
            universe::roughen(&mut universe, config.seed);
        }
        let faults = Mutex::new(ActiveFaults::default());
        let sim = Sim {
            keys: RwLock::new((config.key.clone(), config.secret.clone())),
            universe: RwLock::new(universe),
            actions: RwLock::new(Vec::new()),
            faults,
            windows: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(config.seed ^ 0x5EED)),
            config,
        };
        sim.set_faults(sim.config.faults.clone());
        sim
    }

    fn now(&self) -> DateTime<Utc> {
        self.config.now.unwrap_or_else(Utc::now)
    }

    fn set_faults(&self, faults: Faults) {
        let until = |secs: Option<f64>| {
            secs.filter(|s| *s > 0.0)
                .map(|s| SystemTime::now() + Duration::from_secs_f64(s))
        };
        let mut active = lock(&self.faults);
        active.outage_until = until(faults.outage_secs);
        active.rate_limited_until = until(faults.rate_limit_secs);
        active.faults = faults;
    }

    fn roll(&self, probability: f64) -> bool {
        probability > 0.0 && lock(&self.rng).random_bool(probability.min(1.0))
    }

    /// A snapshot of the universe as JSON, for ground truth in tests.
    pub fn assets_json(&self) -> Vec<Value> {
        self.universe
            .read()
            .map(|u| u.iter().map(SimAsset::to_json).collect())
            .unwrap_or_default()
    }
}

/// Builds the router for a simulator state.
pub fn router(sim: Shared) -> Router {
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/stats", get(stats))
        .route("/_sim/stats/reset", post(reset_stats))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/assets", post(change_assets))
        .route("/_sim/keys", put(put_keys))
        .route("/_sim/actions", post(add_actions))
        .fallback(api)
        .with_state(sim)
}

/// A simulator serving on a local port, stopped when dropped.
#[derive(Debug)]
pub struct RunningSim {
    /// The bound address.
    pub addr: SocketAddr,
    /// The state, for ground truth.
    pub sim: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSim {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a simulator on `127.0.0.1:port` (0 picks a free port) in this runtime.
pub async fn spawn(config: SimConfig, port: u16) -> std::io::Result<RunningSim> {
    spawn_on(config, std::net::IpAddr::from([127, 0, 0, 1]), port).await
}

/// Starts a simulator on `host:port` (a container binds 0.0.0.0).
pub async fn spawn_on(config: SimConfig, host: std::net::IpAddr, port: u16) -> std::io::Result<RunningSim> {
    let listener = tokio::net::TcpListener::bind((host, port)).await?;
    let addr = listener.local_addr()?;
    let sim = Arc::new(Sim::new(config));
    let app = router(Arc::clone(&sim));
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "Simulator server stopped");
        }
    });
    Ok(RunningSim { addr, sim, task })
}

async fn stats(State(sim): State<Shared>) -> Json<Value> {
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

async fn reset_stats(State(sim): State<Shared>) -> StatusCode {
    *lock(&sim.stats) = Stats::default();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(sim): State<Shared>) -> Json<Faults> {
    Json(lock(&sim.faults).faults.clone())
}

async fn put_faults(State(sim): State<Shared>, body: axum::body::Bytes) -> Response {
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
struct KeyRotation {
    key: String,
    secret: String,
}

async fn put_keys(State(sim): State<Shared>, body: axum::body::Bytes) -> Response {
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
struct AssetChanges {
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
struct SetOmit {
    symbol: String,
    omit: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SetActive {
    symbol: String,
    active: bool,
}

#[derive(Debug, Deserialize)]
struct SetTradable {
    symbol: String,
    tradable: bool,
}

#[derive(Debug, Deserialize)]
struct AddAsset {
    symbol: String,
    exchange: String,
    /// The listing's name; `"{symbol} Inc."` by default.
    #[serde(default)]
    name: Option<String>,
    /// Fields the listing leaves out, e.g. `["fractionable"]`.
    #[serde(default)]
    omit: Vec<String>,
}

async fn change_assets(State(sim): State<Shared>, body: axum::body::Bytes) -> Response {
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

async fn add_actions(State(sim): State<Shared>, body: axum::body::Bytes) -> Response {
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

/// `GET /v1/corporate-actions`: the seeded and injected actions whose
/// ex-date lies in `[start, end]` (dates; today by default), of the given
/// symbols (every stock when absent) and types, ordered by ex-date then id,
/// `limit` a page (1–1000, default 100), grouped by kind.
fn corporate_actions(sim: &Sim, params: &HashMap<String, String>) -> Answer {
    let param = |k: &str| params.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let today = crate::calendar::ny_date(sim.now());
    let date = |k: &str| match param(k) {
        None => Ok(today),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("invalid {k}: {}", short(s))),
    };
    let (start, end) = match (date("start"), date("end")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(m), _) | (_, Err(m)) => return data_error(StatusCode::BAD_REQUEST, m),
    };
    if end < start {
        return data_error(StatusCode::BAD_REQUEST, "end should not be before start");
    }
    let types: Vec<&str> = match param("types") {
        Some(list) => list.split(',').collect(),
        None => actions::KNOWN_TYPES.to_vec(),
    };
    if let Some(bad) = types.iter().find(|t| !actions::KNOWN_TYPES.contains(t)) {
        return data_error(StatusCode::BAD_REQUEST, format!("invalid types: {}", short(bad)));
    }
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return data_error(StatusCode::BAD_REQUEST, "invalid limit: must be between 1 and 1000"),
    };
    let desc = match param("sort") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return data_error(StatusCode::BAD_REQUEST, "invalid sort: must be asc or desc"),
    };
    let after = match param("page_token") {
        None => None,
        Some(token) => match base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
        {
            Some(position) => Some(position),
            None => return data_error(StatusCode::BAD_REQUEST, "invalid page token"),
        },
    };
    let symbols: Vec<String> = match param("symbols") {
        Some(list) => {
            let list: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
            if let Some(bad) = list.iter().find(|s| !valid_symbol(s)) {
                return data_error(StatusCode::BAD_REQUEST, format!("invalid symbol: {}", short(bad)));
            }
            list
        }
        None => match sim.universe.read() {
            Ok(u) => u
                .iter()
                .filter(|a| a.class == "us_equity")
                .map(|a| a.symbol.clone())
                .collect(),
            Err(_) => return data_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
        },
    };
    let seed = sim.config.seed;
    let mut found: Vec<SimAction> = symbols
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .flat_map(|symbol| actions::seeded(seed, symbol, start, end))
        .collect();
    if let Ok(injected) = sim.actions.read() {
        found.extend(
            injected
                .iter()
                .filter(|a| (start..=end).contains(&a.ex_date))
                .filter(|a| param("symbols").is_none() || symbols.contains(&a.symbol))
                .cloned(),
        );
    }
    found.retain(|a| types.contains(&a.kind.type_name()));
    let position = |a: &SimAction| format!("{}|{}", a.ex_date, a.id);
    found.sort_by_key(position);
    if desc {
        found.reverse();
    }
    if let Some(after) = &after {
        found.retain(|a| {
            if desc {
                position(a) < *after
            } else {
                position(a) > *after
            }
        });
    }
    let more = found.len() > limit;
    found.truncate(limit);
    let token = more
        .then(|| {
            found
                .last()
                .map(|a| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position(a)))
        })
        .flatten();
    let mut groups: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for action in &found {
        groups
            .entry(action.kind.group())
            .or_default()
            .push(action.to_json(seed));
    }
    Answer {
        status: StatusCode::OK,
        body: json!({"corporate_actions": groups, "next_page_token": token}),
    }
}

/// A response in the making: status, JSON body, and whether it may be corrupted.
struct Answer {
    status: StatusCode,
    body: Value,
}

fn trading_error(status: StatusCode, code: u32, message: impl Into<String>) -> Answer {
    Answer {
        status,
        body: json!({"code": code, "message": message.into()}),
    }
}

fn data_error(status: StatusCode, message: impl Into<String>) -> Answer {
    Answer {
        status,
        body: json!({"message": message.into()}),
    }
}

fn html(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    (status, [("content-type", "text/html")], page).into_response()
}

fn route(path: &str) -> Option<(Api, &'static str)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v2", "account"] => Some((Api::Trading, "/v2/account")),
        ["v2", "assets"] => Some((Api::Trading, "/v2/assets")),
        ["v2", "assets", ..] => Some((Api::Trading, "/v2/assets/{symbol_or_id}")),
        ["v2", "stocks", "bars"] => Some((Api::Data, "/v2/stocks/bars")),
        ["v2", "stocks", _, "bars"] => Some((Api::Data, "/v2/stocks/{symbol}/bars")),
        ["v1beta3", "crypto", "us", "bars"] => Some((Api::Data, "/v1beta3/crypto/us/bars")),
        ["v1", "corporate-actions"] => Some((Api::Data, "/v1/corporate-actions")),
        _ => None,
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn record(sim: &Sim, template: &str, status: u16) {
    *lock(&sim.stats)
        .requests
        .entry((template.to_owned(), status))
        .or_default() += 1;
}

async fn api(State(sim): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let Some((api, template)) = route(uri.path()) else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    if method != Method::GET {
        record(&sim, template, 405);
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(json!({"message": "method not allowed"})),
        )
            .into_response();
    }
    let response = serve(&sim, api, template, &uri, &headers).await;
    record(&sim, template, response.status().as_u16());
    response
}

async fn serve(sim: &Sim, api: Api, template: &'static str, uri: &Uri, headers: &HeaderMap) -> Response {
    if let Some(denied) = authenticate(sim, api, headers) {
        return denied;
    }
    let (outage, forced_429) = {
        let faults = lock(&sim.faults);
        let now = SystemTime::now();
        (
            faults.outage_until.is_some_and(|u| now < u),
            faults.rate_limited_until.filter(|u| now < *u),
        )
    };
    if outage {
        return html(StatusCode::SERVICE_UNAVAILABLE);
    }
    if let Some(until) = forced_429 {
        lock(&sim.stats).apis.entry(api).or_default().rate_limited += 1;
        let body = trading_error(StatusCode::TOO_MANY_REQUESTS, 42910000, "rate limit exceeded");
        // The forced window answers like the real API even when the sim's own limit is off.
        let reset = unix_secs(until)
            + u64::from(
                until
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.subsec_nanos() > 0)
                    .unwrap_or(false),
            );
        let headers = rate_headers(sim.config.limit.max(1), 0, reset);
        return with_headers((body.status, Json(body.body)).into_response(), headers);
    }
    let rate = match admit(sim, api) {
        Ok(rate) => rate,
        Err(rate) => {
            let body = trading_error(StatusCode::TOO_MANY_REQUESTS, 42910000, "rate limit exceeded");
            return with_headers((body.status, Json(body.body)).into_response(), rate);
        }
    };
    let (latency, error_rate, malformed_rate, mismatch_rate) = {
        let f = &lock(&sim.faults).faults;
        (f.latency_ms, f.error_rate, f.malformed_rate, f.mismatch_rate)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if sim.roll(error_rate) {
        let status = [500u16, 502, 503, 504][lock(&sim.rng).random_range(0..4)];
        let response = if status == 500 {
            let body = match api {
                Api::Trading => trading_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    50010000,
                    "internal server error occurred",
                ),
                Api::Data => data_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
            };
            (body.status, Json(body.body)).into_response()
        } else {
            html(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
        };
        return with_headers(response, rate);
    }
    let params: HashMap<String, String> = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let answer = match template {
        "/v2/account" => account(),
        "/v2/assets" => list_assets(sim, &params),
        "/v2/assets/{symbol_or_id}" => one_asset(sim, uri.path()),
        "/v2/stocks/bars" => bars(sim, Market::Stocks, None, &params),
        "/v1beta3/crypto/us/bars" => bars(sim, Market::Crypto, None, &params),
        "/v1/corporate-actions" => corporate_actions(sim, &params),
        _ => {
            let symbol = uri.path().split('/').nth(3).unwrap_or_default();
            let symbol = percent_encoding::percent_decode_str(symbol)
                .decode_utf8_lossy()
                .into_owned();
            bars(sim, Market::Stocks, Some(symbol), &params)
        }
    };
    let mut body = answer.body.to_string().into_bytes();
    if answer.status == StatusCode::OK && sim.roll(mismatch_rate) {
        body = br#""not the documented schema""#.to_vec();
    }
    if answer.status == StatusCode::OK && sim.roll(malformed_rate) {
        body.truncate(body.len() / 2);
    }
    let response = (answer.status, [("content-type", "application/json")], Body::from(body)).into_response();
    with_headers(response, rate)
}

fn authenticate(sim: &Sim, api: Api, headers: &HeaderMap) -> Option<Response> {
    let key = headers.get("apca-api-key-id").and_then(|v| v.to_str().ok());
    let secret = headers.get("apca-api-secret-key").and_then(|v| v.to_str().ok());
    let accepted = {
        let keys = sim.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        matches!((key, secret), (Some(k), Some(s)) if k == keys.0 && s == keys.1)
    };
    let answer = match (api, key, secret) {
        _ if accepted => return None,
        (Api::Trading, _, _) => trading_error(StatusCode::UNAUTHORIZED, 40110000, "request is not authorized"),
        (Api::Data, None, _) | (Api::Data, _, None) => data_error(StatusCode::UNAUTHORIZED, "unauthorized."),
        (Api::Data, _, _) => data_error(StatusCode::FORBIDDEN, "forbidden"),
    };
    Some((answer.status, Json(answer.body)).into_response())
}

/// The sliding window: admits the request if fewer than `limit` were
/// admitted in the last `window`, and records it. Returns the rate headers.
/// Rate-limit headers to add to a response.
type RateHeaders = Vec<(&'static str, String)>;

fn admit(sim: &Sim, api: Api) -> Result<RateHeaders, RateHeaders> {
    let limit = sim.config.limit;
    let window = sim.config.window;
    let now = Instant::now();
    let reset_of = |oldest: Option<Instant>| {
        let wait = oldest.map_or(window, |o| (o + window).saturating_duration_since(now));
        unix_secs(SystemTime::now() + wait) + u64::from(wait.subsec_nanos() > 0)
    };
    let admitted = {
        let mut windows = lock(&sim.windows);
        let recent = windows.entry((sim.config.key.clone(), api)).or_default();
        while recent.front().is_some_and(|t| now.duration_since(*t) >= window) {
            recent.pop_front();
        }
        if limit > 0 && recent.len() >= limit as usize {
            Err(rate_headers(limit, 0, reset_of(recent.front().copied())))
        } else {
            recent.push_back(now);
            let remaining = limit.saturating_sub(recent.len() as u32);
            Ok(rate_headers(limit, remaining, reset_of(recent.front().copied())))
        }
    };
    let mut stats = lock(&sim.stats);
    let s = stats.apis.entry(api).or_default();
    match &admitted {
        Ok(_) => {
            s.accepted += 1;
            s.recent.push_back(now);
            while s.recent.front().is_some_and(|t| now.duration_since(*t) >= window) {
                s.recent.pop_front();
            }
            s.max_in_window = s.max_in_window.max(s.recent.len());
            let first = *s.first.get_or_insert(now);
            let index = (now.duration_since(first).as_secs_f64() / window.as_secs_f64()) as usize;
            if s.per_window.len() <= index {
                s.per_window.resize(index + 1, 0);
            }
            s.per_window[index] += 1;
        }
        Err(_) => s.rate_limited += 1,
    }
    admitted
}

fn rate_headers(limit: u32, remaining: u32, reset: u64) -> RateHeaders {
    if limit == 0 {
        return Vec::new();
    }
    vec![
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ]
}

fn with_headers(mut response: Response, headers: RateHeaders) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// `GET /v2/account`: a paper account in good standing, with every field
/// the real API always sends (numbers as strings, as it sends them).
fn account() -> Answer {
    Answer {
        status: StatusCode::OK,
        body: json!({
            "id": "8b5e2f0a-3c1d-4e6f-9a7b-51de0c2a9e10",
            "admin_configurations": {},
            "user_configurations": null,
            "account_number": "PA3SIM0042",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "options_approved_level": 0,
            "options_trading_level": 0,
            "currency": "USD",
            "buying_power": "200000",
            "regt_buying_power": "200000",
            "daytrading_buying_power": "0",
            "effective_buying_power": "200000",
            "non_marginable_buying_power": "100000",
            "options_buying_power": "100000",
            "bod_dtbp": "0",
            "cash": "100000",
            "accrued_fees": "0",
            "portfolio_value": "100000",
            "pattern_day_trader": false,
            "trading_blocked": false,
            "transfers_blocked": false,
            "account_blocked": false,
            "created_at": "2024-01-02T15:04:05.123456Z",
            "trade_suspended_by_user": false,
            "multiplier": "2",
            "shorting_enabled": true,
            "equity": "100000",
            "last_equity": "100000",
            "long_market_value": "0",
            "short_market_value": "0",
            "position_market_value": "0",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
            "balance_asof": "2026-11-19",
            "crypto_tier": 1,
            "intraday_adjustments": "0",
            "pending_reg_taf_fees": "0"
        }),
    }
}

fn list_assets(sim: &Sim, params: &HashMap<String, String>) -> Answer {
    let status = params.get("status").map(String::as_str).filter(|s| !s.is_empty());
    if let Some(s) = status.filter(|s| !matches!(*s, "active" | "inactive")) {
        return trading_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42210000,
            format!("invalid status: {}", short(s)),
        );
    }
    let class = params
        .get("asset_class")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("us_equity");
    if !matches!(class, "us_equity" | "crypto" | "us_option") {
        return trading_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42210000,
            format!("invalid asset_class: {}", short(class)),
        );
    }
    let exchange = params.get("exchange").filter(|s| !s.is_empty());
    let attributes: Vec<&str> = params
        .get("attributes")
        .map(|a| a.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let Ok(universe) = sim.universe.read() else {
        return trading_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            50010000,
            "internal server error occurred",
        );
    };
    let mut list: Vec<Value> = universe
        .iter()
        .filter(|a| a.class == class)
        .filter(|a| status.is_none_or(|s| a.status() == s))
        .filter(|a| exchange.is_none_or(|e| a.exchange == *e))
        .filter(|a| attributes.is_empty() || a.attributes.iter().any(|x| attributes.contains(x)))
        .map(SimAsset::to_json)
        .collect();
    let faults = lock(&sim.faults).faults.clone();
    if let Some(status) = faults.fail_class.get(class) {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return trading_error(status, u32::from(status.as_u16()) * 100_000, "injected failure");
    }
    if let Some(keep) = faults.truncate_assets {
        list.truncate((list.len() as f64 * keep.clamp(0.0, 1.0)).ceil() as usize);
    }
    if let Some(keep) = faults.truncate_class.get(class) {
        list.truncate((list.len() as f64 * keep.clamp(0.0, 1.0)).ceil() as usize);
    }
    Answer {
        status: StatusCode::OK,
        body: Value::Array(list),
    }
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

fn one_asset(sim: &Sim, path: &str) -> Answer {
    let raw = path.trim_start_matches("/v2/assets/");
    let wanted = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned();
    let Ok(universe) = sim.universe.read() else {
        return trading_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            50010000,
            "internal server error occurred",
        );
    };
    let by_id = universe.iter().find(|a| a.id.eq_ignore_ascii_case(&wanted));
    // A recycled ticker resolves to its active listing; `BTCUSD` to `BTC/USD`.
    let by_symbol = || {
        let matches = |a: &&SimAsset| a.symbol == wanted || a.symbol.replace('/', "") == wanted;
        universe.iter().filter(matches).max_by_key(|a| a.active)
    };
    match by_id.or_else(by_symbol) {
        Some(asset) => Answer {
            status: StatusCode::OK,
            body: asset.to_json(),
        },
        None => trading_error(
            StatusCode::NOT_FOUND,
            40410000,
            format!("asset not found for {}", short(&wanted)),
        ),
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn valid_symbol(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 21
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'/' | b'-'))
}

fn encode_token(symbol: &str, t: DateTime<Utc>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{symbol}\u{1f}{}", t.timestamp()))
}

fn decode_token(token: &str) -> Option<(String, DateTime<Utc>)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (symbol, secs) = text.split_once('\u{1f}')?;
    Some((symbol.to_owned(), DateTime::from_timestamp(secs.parse().ok()?, 0)?))
}

/// One page of bars for a multi-symbol (`single = None`) or single-symbol request.
fn bars(sim: &Sim, market: Market, single: Option<String>, params: &HashMap<String, String>) -> Answer {
    let param = |k: &str| params.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let mut symbols: Vec<String> = match &single {
        Some(s) => vec![s.clone()],
        None => match param("symbols") {
            Some(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
            None => return data_error(StatusCode::BAD_REQUEST, "missing symbols"),
        },
    };
    if let Some(bad) = symbols.iter().find(|s| !valid_symbol(s)) {
        return data_error(StatusCode::BAD_REQUEST, format!("invalid symbol: {}", short(bad)));
    }
    symbols.sort();
    symbols.dedup();
    let Some(frame) = param("timeframe").and_then(Frame::parse) else {
        return data_error(StatusCode::BAD_REQUEST, "invalid timeframe");
    };
    let now = sim.now();
    let day_start = match market {
        Market::Stocks => crate::calendar::ny_instant(crate::calendar::ny_date(now), 0),
        Market::Crypto => now.date_naive().and_hms_opt(0, 0, 0).map_or(now, |t| t.and_utc()),
    };
    let start = match param("start") {
        Some(s) => match parse_time(s) {
            Some(t) => t,
            None => return data_error(StatusCode::BAD_REQUEST, "invalid start"),
        },
        None => day_start,
    };
    let end = match param("end") {
        Some(s) => match parse_time(s) {
            Some(t) => t,
            None => return data_error(StatusCode::BAD_REQUEST, "invalid end"),
        },
        None => now,
    };
    if end < start {
        return data_error(StatusCode::BAD_REQUEST, "end should not be before start");
    }
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 1000,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => return data_error(StatusCode::BAD_REQUEST, "invalid limit: must be between 1 and 10000"),
    };
    let desc = match param("sort") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return data_error(StatusCode::BAD_REQUEST, "invalid sort: must be asc or desc"),
    };
    let mut components = Vec::new();
    if market == Market::Stocks {
        if let Some(adj) = param("adjustment") {
            let known = ["raw", "split", "dividend", "spin-off", "all"];
            if !adj.split(',').all(|a| known.contains(&a)) {
                return data_error(StatusCode::BAD_REQUEST, format!("invalid adjustment: {}", short(adj)));
            }
            components = actions::components(adj);
        }
        match param("feed") {
            None | Some("iex") | Some("otc") | Some("boats") => {}
            Some("sip") if sim.config.free_plan && end > now - chrono::Duration::minutes(15) => {
                return data_error(
                    StatusCode::FORBIDDEN,
                    "subscription does not permit querying recent SIP data",
                );
            }
            Some("sip") => {}
            Some(other) => return data_error(StatusCode::BAD_REQUEST, format!("invalid feed: {}", short(other))),
        }
    }
    let after = match param("page_token") {
        Some(token) => match decode_token(token) {
            Some(position) => Some(position),
            None => return data_error(StatusCode::BAD_REQUEST, "invalid page token"),
        },
        None => None,
    };
    let known: Vec<String> = match sim.universe.read() {
        Ok(u) => symbols
            .iter()
            .filter(|s| {
                u.iter()
                    .any(|a| a.symbol == **s && (a.class == "crypto") == (market == Market::Crypto))
            })
            .cloned()
            .collect(),
        Err(_) => return data_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
    };
    let duplicates = market == Market::Crypto && lock(&sim.faults).faults.duplicate_crypto_bars;
    let overlap = if lock(&sim.faults).faults.repeat_page_boundary {
        chrono::Duration::zero()
    } else {
        chrono::Duration::seconds(1)
    };
    let seed = sim.config.seed;
    fn series_of(seed: u64, market: Market, frame: Frame, symbol: &str) -> Series<'_> {
        Series {
            seed,
            symbol,
            market,
            frame,
        }
    }
    let series = |symbol| series_of(seed, market, frame, symbol);
    let injected: Vec<SimAction> = sim.actions.read().map(|a| a.clone()).unwrap_or_default();
    let (since, today) = (crate::calendar::ny_date(start), crate::calendar::ny_date(now));

    let mut page: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut count = 0usize;
    let mut last: Option<(String, DateTime<Utc>)> = None;
    for symbol in known.iter().filter(|s| after.as_ref().is_none_or(|(sym, _)| *s >= sym)) {
        let resume = after.as_ref().filter(|(sym, _)| sym == symbol).map(|(_, t)| *t);
        let mut times = Vec::new();
        if desc {
            for_each_bar_time(series(symbol), start, end, now, |t| {
                times.push(t);
                ControlFlow::Continue(())
            });
            times.reverse();
            times.retain(|t| resume.is_none_or(|r| *t < r));
            times.truncate(limit - count);
        } else {
            let from = resume.map_or(start, |r| r + overlap).max(start);
            for_each_bar_time(series(symbol), from, end, now, |t| {
                times.push(t);
                if times.len() + count >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
        }
        let factors = match market {
            Market::Stocks => Factors::new(seed, symbol, &injected, &components, since, today),
            Market::Crypto => Factors::default(),
        };
        let list = page.entry(symbol.clone()).or_default();
        for t in &times {
            let mut bar = bar_json(series(symbol), *t);
            if !factors.is_identity() {
                let (price, volume) = factors.at(crate::calendar::ny_date(*t));
                scale(&mut bar, price, volume);
            }
            list.push(bar);
            if duplicates && t.timestamp() % 7 == 0 {
                let mut twin = bar_json(
                    Series {
                        seed: seed ^ 1,
                        ..series(symbol)
                    },
                    *t,
                );
                twin["t"] = list.last().map_or(Value::Null, |b| b["t"].clone());
                list.push(twin);
            }
        }
        count += times.len();
        if let Some(t) = times.last() {
            last = Some((symbol.clone(), *t));
        }
        if count >= limit {
            break;
        }
    }
    page.retain(|_, bars| !bars.is_empty());
    // Like the real API, a full page carries a token even when nothing follows.
    let token = (count >= limit)
        .then(|| last.map(|(s, t)| encode_token(&s, t)))
        .flatten();
    let body = match single {
        Some(symbol) => {
            let bars = page.remove(&symbol).map_or(Value::Null, Value::from);
            json!({"bars": bars, "symbol": symbol, "next_page_token": token})
        }
        None => json!({"bars": page, "next_page_token": token}),
    };
    Answer {
        status: StatusCode::OK,
        body,
    }
}
