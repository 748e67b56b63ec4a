//! The HTTP side of the simulator: routing, auth, the per-key rate limit,
//! fault injection, and the control and stats endpoints under `/_sim`.
//!
//! Every API request goes through the same steps in the order the real
//! service applies them: authentication, the outage switch, the rate limit
//! (a sliding window per key and API), added latency, injected 5xx, the
//! handler, and injected body corruption.

mod answer;
mod control;
mod handlers;
mod serve;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use control::{add_actions, change_assets, get_faults, put_faults, put_keys, reset_stats, stats};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use serve::api;
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
