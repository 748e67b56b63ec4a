//! Every API request's path through the simulator, in the order the real
//! service applies its steps: route, authentication, the outage switch,
//! the rate limit, latency, injected 5xx, the handler, body corruption.

use super::answer::*;
use super::handlers::*;
use super::*;

pub(super) fn route(path: &str) -> Option<(Api, &'static str)> {
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

pub(super) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(super) fn record(sim: &Sim, template: &str, status: u16) {
    *lock(&sim.stats)
        .requests
        .entry((template.to_owned(), status))
        .or_default() += 1;
}

pub(super) async fn api(State(sim): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
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

pub(super) async fn serve(sim: &Sim, api: Api, template: &'static str, uri: &Uri, headers: &HeaderMap) -> Response {
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

pub(super) fn authenticate(sim: &Sim, api: Api, headers: &HeaderMap) -> Option<Response> {
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
pub(super) type RateHeaders = Vec<(&'static str, String)>;

pub(super) fn admit(sim: &Sim, api: Api) -> Result<RateHeaders, RateHeaders> {
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

pub(super) fn rate_headers(limit: u32, remaining: u32, reset: u64) -> RateHeaders {
    if limit == 0 {
        return Vec::new();
    }
    vec![
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ]
}

pub(super) fn with_headers(mut response: Response, headers: RateHeaders) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
