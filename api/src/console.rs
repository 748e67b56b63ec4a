//! The operator console at `/console`: server-rendered pages, no script.
//!
//! - `/console`: job queues, retry tiers and dead letters with depths; live
//!   workers from their heartbeats; both budgets with a chart of the calls
//!   of each minute (one window) over the last hour; the recent sync runs.
//! - `/console/dlq`: dead letters with filters (id, kind, symbol, error
//!   class), `show`, replay (at most `--replay-rate` a second, one action at
//!   a time) and purge (after a confirmation page).
//!
//! Logging in takes a token (any role); the session is a random id in an
//! `HttpOnly`, `SameSite=Strict` cookie (`Secure` and named `__Host-…`
//! when served over TLS: `SIGNAL9_API_SECURE_COOKIE`), held in this
//! process's memory for 12 hours, at most `SIGNAL9_API_MAX_SESSIONS` at
//! once. Failed logins are throttled per address
//! (`SIGNAL9_API_LOGIN_ATTEMPTS` a minute). Actions need the `operate` role
//! and the session's CSRF token in the form; so do dead-letter bodies (the
//! `read` role sees counts and metadata).

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::Rng;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal9_alpaca::Api;
use signal9_shared::ops::dead_letters::{self as dlq, Filter};
use signal9_shared::ops::status;
use signal9_shared::ops::Session as BrokerSession;
use signal9_shared::reply::{Detail, ReplyOutcome};

use crate::auth::Role;
use crate::AppState;

type Shared = Arc<AppState>;

const COOKIE: &str = "signal9_console";
/// The cookie's name when it is `Secure`: the browser then also insists on
/// `Path=/`, no `Domain` and HTTPS.
const SECURE_COOKIE: &str = "__Host-signal9_console";
/// How long failed logins are counted against an address.
const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at most (a flood of addresses
/// forgets them all rather than grow).
const MAX_TRACKED_ADDRESSES: usize = 10_000;
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
struct Login {
    role: Role,
    /// The token's hash: a session ends when its token leaves the file.
    token: String,
    csrf: String,
    expires: Instant,
    flash: Option<String>,
}

/// Console sessions, by cookie value, and failed logins by address.
#[derive(Debug)]
pub(crate) struct Sessions {
    inner: Mutex<HashMap<String, Login>>,
    max: usize,
    attempts: u32,
    failures: Mutex<HashMap<std::net::IpAddr, (Instant, u32)>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(1000, 10)
    }
}

fn random_hex() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// At most `max` sessions; `attempts` failed logins per address a minute.
    pub(crate) fn new(max: usize, attempts: u32) -> Self {
        Sessions {
            inner: Mutex::new(HashMap::new()),
            max: max.max(1),
            attempts: attempts.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Login>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds until `address` may try again, if its failures are used up.
    fn throttled(&self, address: std::net::IpAddr) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (since, count) = failures.get(&address)?;
        let left = LOGIN_WINDOW.checked_sub(since.elapsed())?;
        (*count >= self.attempts).then(|| left.as_secs().max(1))
    }

    fn failed(&self, address: std::net::IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, (since, _)| since.elapsed() < LOGIN_WINDOW);
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                failures.clear();
            }
        }
        let entry = failures.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= LOGIN_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// How many sessions are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn open(&self, role: Role, token: String) -> String {
        let id = random_hex();
        let mut map = self.lock();
        map.retain(|_, l| l.expires > Instant::now());
        while map.len() >= self.max {
            // Full: the session closest to expiring (the oldest) ends.
            let Some(oldest) = map.iter().min_by_key(|(_, l)| l.expires).map(|(k, _)| k.clone()) else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Login {
                role,
                token,
                csrf: random_hex(),
                expires: Instant::now() + SESSION_TTL,
                flash: None,
            },
        );
        id
    }

    /// The live session of a request whose token `tokens` still hold,
    /// with the token's role now.
    fn get(&self, headers: &HeaderMap, tokens: &crate::auth::Tokens) -> Option<(String, Login)> {
        let id = cookie(headers)?;
        let mut map = self.lock();
        let login = map.get_mut(&id).filter(|l| l.expires > Instant::now())?;
        let Some(role) = tokens.role_of_hash(&login.token) else {
            map.remove(&id);
            return None;
        };
        login.role = role;
        Some((id, login.clone()))
    }

    fn take_flash(&self, id: &str) -> Option<String> {
        self.lock().get_mut(id).and_then(|l| l.flash.take())
    }

    fn set_flash(&self, id: &str, message: String) {
        if let Some(login) = self.lock().get_mut(id) {
            login.flash = Some(message);
        }
    }

    fn close(&self, id: &str) {
        self.lock().remove(id);
    }
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE || *name == SECURE_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// HTML-escapes text.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header a{color:#cfe0ff;text-decoration:none}header .who{margin-left:auto;font-size:13px}
main{padding:16px 20px;max-width:1200px}h2{font-size:17px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;font-size:13px;width:100%}
td,th{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eef1f5}
.num{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#b00020;font-weight:600}.ok{color:#17663a}
.flash{background:#e7f6ec;border:1px solid #9bd3ae;padding:8px 12px;margin:8px 0}
.warn{background:#fff4e5;border:1px solid #f0c27b;padding:8px 12px;margin:8px 0}
form.inline{display:inline}button{cursor:pointer}pre{background:#fff;border:1px solid #dde1e7;padding:8px;overflow:auto}
.charts{display:flex;gap:24px;flex-wrap:wrap}.chart{background:#fff;border:1px solid #dde1e7;padding:8px}";

fn page(title: &str, login: Option<&Login>, body: &str) -> Html<String> {
    let who = login.map_or(String::new(), |l| {
        format!(
            "<span class=\"who\">role: {} <form class=\"inline\" method=\"post\" action=\"/console/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form></span>",
            l.role.as_str(),
            esc(&l.csrf)
        )
    });
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · signal9</title><style>{STYLE}</style></head>\
         <body><header><strong>signal9</strong><a href=\"/console\">Overview</a><a href=\"/console/dlq\">Dead letters</a>{who}</header><main>{body}</main></body></html>",
        esc(title)
    ))
}

fn error_page(status: StatusCode, login: Option<&Login>, message: &str) -> Response {
    (
        status,
        page(
            "Error",
            login,
            &format!("<h2>{}</h2><p class=\"bad\">{}</p>", status, esc(message)),
        ),
    )
        .into_response()
}

/// The console's routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/console", get(overview))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/dlq", get(dead_letters))
        .route("/console/dlq/show", get(show))
        .route("/console/dlq/replay", post(replay))
        .route("/console/dlq/purge", get(purge_confirm).post(purge))
}

fn login_page(message: Option<&str>) -> Html<String> {
    let note = message.map_or(String::new(), |m| format!("<p class=\"bad\">{}</p>", esc(m)));
    page(
        "Log in",
        None,
        &format!(
            "<h2>Log in</h2>{note}<form method=\"post\" action=\"/console/login\">\
             <label>Token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" size=\"48\"></label> \
             <button type=\"submit\" id=\"login\">Log in</button></form>\
             <p>A token of the <code>read</code> role shows the pages; <code>operate</code> may also replay and purge.</p>"
        ),
    )
}

async fn login_form() -> Html<String> {
    login_page(None)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(state): State<Shared>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let address = peer.map(|axum::Extension(ConnectInfo(addr))| addr.ip());
    if let Some(wait) = address.and_then(|a| state.sessions.throttled(a)) {
        tracing::warn!("Console login refused: too many failed logins from one address");
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            login_page(Some("Too many failed logins from your address; wait a minute.")),
        )
            .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, wait.into());
        return response;
    }
    let Some(role) = state.tokens.current().role_of(form.token.trim()) else {
        if let Some(address) = address {
            state.sessions.failed(address);
        }
        tracing::warn!("Console login refused: the token is not valid");
        return (StatusCode::UNAUTHORIZED, login_page(Some("That token is not valid."))).into_response();
    };
    let id = state.sessions.open(role, crate::auth::hash(form.token.trim()));
    tracing::info!(role = role.as_str(), "Console login");
    let secure = match state.settings.secure_cookie.as_str() {
        "on" => true,
        "off" => false,
        _ => headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https")),
    };
    let cookie = if secure {
        format!(
            "{SECURE_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_TTL.as_secs()
        )
    } else {
        format!(
            "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_TTL.as_secs()
        )
    };
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, "/console".to_owned())],
    )
        .into_response()
}

/// The session of a page request, or a redirect to the login page.
fn session(state: &AppState, headers: &HeaderMap) -> Result<(String, Login), Box<Response>> {
    state
        .sessions
        .get(headers, &state.tokens.current())
        .ok_or_else(|| Box::new(Redirect::to("/console/login").into_response()))
}

/// The session of an action: logged in, with the CSRF token, and the role.
fn action_session(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
    role: Role,
) -> Result<(String, Login), Box<Response>> {
    let Some((id, login)) = state.sessions.get(headers, &state.tokens.current()) else {
        return Err(Box::new(error_page(StatusCode::UNAUTHORIZED, None, "Log in first.")));
    };
    if csrf.is_empty() || csrf != login.csrf {
        tracing::warn!("Console action refused: CSRF token missing or wrong");
        return Err(Box::new(error_page(
            StatusCode::FORBIDDEN,
            Some(&login),
            "The form's CSRF token is missing or wrong; reload the page and try again.",
        )));
    }
    if login.role < role {
        return Err(Box::new(error_page(
            StatusCode::FORBIDDEN,
            Some(&login),
            &format!(
                "This needs the `{}` role; your token has `{}`.",
                role.as_str(),
                login.role.as_str()
            ),
        )));
    }
    Ok((id, login))
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(state): State<Shared>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    match action_session(&state, &headers, &form.csrf, Role::Read) {
        Ok((id, _)) => {
            state.sessions.close(&id);
            Redirect::to("/console/login").into_response()
        }
        Err(response) => *response,
    }
}

async fn broker(state: &AppState) -> Result<BrokerSession, String> {
    BrokerSession::open(&state.settings.broker, "signal9-api-console", false)
        .await
        .map_err(|e| hidden("RabbitMQ is unavailable", &format!("{e:#}")))
}

/// What a page says of a failure inside: what failed and the request id;
/// the cause goes to the log under that id, not to the browser.
fn hidden(what: &str, cause: &dyn std::fmt::Display) -> String {
    let id = crate::request_id();
    tracing::error!(request_id = %id, error = %cause, "Console: {what}");
    format!("{what} (request id {id})")
}

fn depth(n: Option<u32>) -> String {
    n.map_or_else(|| "<span class=\"bad\">missing</span>".into(), |n| n.to_string())
}

/// An SVG bar chart of calls per minute over the last hour, with the limit.
fn chart(title: &str, history: &[(i64, u64)], limit: u32, now_minute: i64) -> String {
    let (w, h, bar) = (600.0_f64, 140.0_f64, 10.0_f64);
    let top = history
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0)
        .max(u64::from(limit))
        .max(1) as f64;
    let mut svg = format!(
        "<div class=\"chart\"><div><strong>{}</strong> calls per minute, last hour (limit {limit})</div>\
         <svg width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"{} calls per minute\">",
        esc(title),
        h + 18.0,
        esc(title)
    );
    for (minute, n) in history {
        let age = now_minute - minute;
        if !(0..60).contains(&age) {
            continue;
        }
        let x = w - (age as f64 + 1.0) * bar;
        let height = (*n as f64 / top) * h;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"#4a7bd0\"><title>{n} calls</title></rect>",
            h - height,
            bar - 1.0
        );
    }
    let y = h - (f64::from(limit) / top) * h;
    let _ = write!(
        svg,
        "<line x1=\"0\" x2=\"{w}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#b00020\" stroke-dasharray=\"4 3\"/>\
         <text x=\"0\" y=\"{}\" font-size=\"11\">-60 min</text><text x=\"{}\" y=\"{}\" font-size=\"11\">now</text></svg></div>",
        h + 14.0,
        w - 24.0,
        h + 14.0
    );
    svg
}

async fn overview(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let (id, login) = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let mut body = String::new();
    if let Some(flash) = state.sessions.take_flash(&id) {
        let _ = write!(body, "<div class=\"flash\">{}</div>", esc(&flash));
    }
    let ns = &state.settings.broker.namespace;
    let _ = write!(
        body,
        "<p>namespace <code>{}</code> · store <code>{}</code></p>",
        esc(ns),
        esc(&state.settings.store.describe())
    );
    match broker(&state).await {
        Err(error) => {
            let _ = write!(body, "<div class=\"warn\">Queues unavailable: {}</div>", esc(&error));
        }
        Ok(session) => {
            let snap = status::snapshot(&session.connection, &session.topology, &state.gate, ns).await;
            let _ = session.connection.close(200, "console".into()).await;
            match snap {
                Err(error) => {
                    let _ = write!(
                        body,
                        "<div class=\"warn\">{}</div>",
                        esc(&hidden("Status unavailable", &format!("{error:#}")))
                    );
                }
                Ok(snap) => overview_tables(&mut body, &snap),
            }
        }
    }
    let now_minute = chrono::Utc::now().timestamp().div_euclid(60);
    body.push_str("<h2>Budgets</h2><div class=\"charts\">");
    for api in [Api::Data, Api::Trading] {
        let budget = state.gate.budget(api);
        match budget.history(60).await {
            Ok(history) => body.push_str(&chart(api.as_str(), &history, budget.size().limit, now_minute)),
            Err(error) => {
                let _ = write!(
                    body,
                    "<div class=\"warn\">{}</div>",
                    esc(&hidden(&format!("The {} budget is unavailable", api.as_str()), &error))
                );
            }
        }
    }
    body.push_str("</div>");
    body.push_str("<h2>Sync runs</h2>");
    match state.store.recent_runs(10).await {
        Err(error) => {
            let _ = write!(
                body,
                "<div class=\"warn\">{}</div>",
                esc(&hidden("The store is unavailable", &error))
            );
        }
        Ok(runs) if runs.is_empty() => body.push_str("<p>None yet.</p>"),
        Ok(runs) => {
            body.push_str("<table id=\"runs\"><tr><th>Run</th><th>Status</th><th>Pages</th><th>Started</th><th>Finished</th><th>Listed</th><th>New</th><th>Updated</th><th>Status changes</th><th>Delisted</th><th>Rejected</th></tr>");
            for run in runs {
                let r = run.result.clone().unwrap_or_default();
                let class = match run.status.as_str() {
                    "completed" => "ok",
                    "running" => "",
                    _ => "bad",
                };
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td class=\"{class}\">{}</td><td class=\"num\">{}/{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    esc(&run.run_id),
                    run.status.as_str(),
                    run.pages_done,
                    run.pages_total,
                    run.started_at.format("%Y-%m-%d %H:%M:%SZ"),
                    run.finished_at.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()),
                    r.listed,
                    r.new,
                    r.updated,
                    r.status_changes,
                    r.delisted,
                    r.rejected
                );
            }
            body.push_str("</table>");
        }
    }
    page("Overview", Some(&login), &body).into_response()
}

fn overview_tables(body: &mut String, snap: &status::Snapshot) {
    body.push_str("<h2>Queues</h2><table id=\"queues\"><tr><th>Queue</th><th class=\"num\">Ready</th><th class=\"num\">Consumers</th></tr>");
    for q in snap.queues.iter().chain(&snap.retry_queues) {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&q.name),
            depth(q.messages),
            depth(q.consumers)
        );
    }
    let dead = &snap.dead_letters;
    let _ = write!(
        body,
        "<tr><td><a href=\"/console/dlq\">{}</a> (dead letters)</td><td class=\"num\" id=\"dead-letters\">{}</td><td class=\"num\">{}</td></tr></table>",
        esc(&dead.name),
        depth(dead.messages),
        depth(dead.consumers)
    );
    let _ = write!(body, "<h2>Workers ({} alive)</h2>", snap.workers.len());
    if snap.workers.is_empty() {
        let _ = write!(
            body,
            "<p class=\"bad\">None: no worker has written a heartbeat in the last {} s.</p>",
            signal9_shared::workers::BEAT_TTL.as_secs()
        );
    } else {
        body.push_str("<table id=\"workers\"><tr><th>Id</th><th>Host:pid</th><th>Version</th><th class=\"num\">Concurrency</th><th>Broker</th><th class=\"num\">Jobs done</th><th>Breakers</th><th>Metrics</th><th>Started</th><th>Last beat</th></tr>");
        for w in &snap.workers {
            let breakers: Vec<String> = w.breakers.iter().map(|(api, s)| format!("{api} {s}")).collect();
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}:{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"{}\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&w.id),
                esc(&w.host),
                w.pid,
                esc(&w.version),
                w.concurrency,
                if w.broker_connected { "ok" } else { "bad" },
                if w.broker_connected { "connected" } else { "DISCONNECTED" },
                w.jobs_done,
                esc(&breakers.join(", ")),
                esc(w.metrics_addr.as_deref().unwrap_or("-")),
                w.started_at.format("%Y-%m-%d %H:%M:%SZ"),
                w.beat_at.format("%H:%M:%SZ")
            );
        }
        body.push_str("</table>");
    }
    body.push_str("<h2>Budget windows now</h2><table id=\"budgets\"><tr><th>API</th><th class=\"num\">In window</th><th class=\"num\">Limit</th><th class=\"num\">Window (s)</th><th>Paused</th></tr>");
    for (api, b) in &snap.budgets {
        let paused = b["paused_for_secs"].as_f64().unwrap_or(0.0);
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(api),
            b["in_window"],
            b["limit"],
            b["window_secs"],
            if paused > 0.0 { format!("<span class=\"bad\">{paused:.1} s more</span>") } else { "no".into() }
        );
    }
    body.push_str("</table>");
}

/// The dead-letter filters of a page or form.
#[derive(Debug, Default, Deserialize)]
struct Filters {
    #[serde(default)]
    id: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    symbol: String,
    #[serde(default)]
    error_class: String,
}

impl Filters {
    fn filter(&self, max: Option<usize>) -> Filter {
        let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Filter {
            id: some(&self.id),
            kind: some(&self.kind),
            symbol: some(&self.symbol),
            error_class: some(&self.error_class),
            max,
        }
    }

    fn hidden(&self) -> String {
        [
            ("id", &self.id),
            ("kind", &self.kind),
            ("symbol", &self.symbol),
            ("error_class", &self.error_class),
        ]
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
        .collect()
    }

    fn query(&self) -> String {
        format!(
            "id={}&kind={}&symbol={}&error_class={}",
            enc(&self.id),
            enc(&self.kind),
            enc(&self.symbol),
            enc(&self.error_class)
        )
    }

    fn is_empty(&self) -> bool {
        self.filter(None).id.is_none()
            && self.filter(None).kind.is_none()
            && self.filter(None).symbol.is_none()
            && self.filter(None).error_class.is_none()
    }
}

const DLQ_PAGE: usize = 100;

async fn dead_letters(State(state): State<Shared>, headers: HeaderMap, Query(filters): Query<Filters>) -> Response {
    let (id, login) = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let mut body = String::from("<h2>Dead letters</h2>");
    if let Some(flash) = state.sessions.take_flash(&id) {
        let _ = write!(body, "<div class=\"flash\" id=\"flash\">{}</div>", esc(&flash));
    }
    let select = |name: &str, value: &str, options: &[&str]| {
        let mut s = format!("<select name=\"{name}\"><option value=\"\">any</option>");
        for o in options {
            let _ = write!(s, "<option{}>{o}</option>", if *o == value { " selected" } else { "" });
        }
        s.push_str("</select>");
        s
    };
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/console/dlq\" id=\"filters\">Kind {} Symbol <input name=\"symbol\" value=\"{}\" size=\"10\"> Class {} Id <input name=\"id\" value=\"{}\" size=\"20\"> <button>Filter</button> <a href=\"/console/dlq\">clear</a></form>",
        select("kind", &filters.kind, &["fetch-bars", "sync-page", "status-check"]),
        esc(&filters.symbol),
        select("error_class", &filters.error_class, &["transient", "permanent", "poison"]),
        esc(&filters.id)
    );
    let session = match broker(&state).await {
        Ok(s) => s,
        Err(error) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&login), &error),
    };
    let listing = dlq::browse(
        &session.connection,
        &session.topology.dead_letter_queue(),
        &filters.filter(None),
        DLQ_PAGE,
        true,
        |_| {},
    )
    .await;
    let _ = session.connection.close(200, "console".into()).await;
    let listing = match listing {
        Ok(l) => l,
        Err(error) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&login),
                &hidden("The dead-letter queue cannot be read", &format!("{error:#}")),
            )
        }
    };
    let operate = login.role >= Role::Operate;
    let _ = write!(
        body,
        "<p id=\"dlq-summary\">{} shown of {} dead letters ({} read){}.</p>",
        listing.letters.len(),
        listing.total,
        listing.read,
        if listing.letters.len() == DLQ_PAGE {
            "; narrow the filters to see others"
        } else {
            ""
        }
    );
    if !operate {
        body.push_str("<p class=\"warn\">Your token has the <code>read</code> role: replay and purge need <code>operate</code>.</p>");
    }
    if !listing.letters.is_empty() && operate {
        let _ = write!(
            body,
            "<p><form class=\"inline\" method=\"post\" action=\"/console/dlq/replay\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{}<button id=\"replay-all\">Replay all that match</button></form> \
             <a href=\"/console/dlq/purge?{}\" id=\"purge-link\">Purge all that match…</a> (at most {} a second, {} per action)</p>",
            esc(&login.csrf),
            filters.hidden(),
            filters.query(),
            state.settings.replay_rate,
            state.settings.action_max
        );
    }
    replays_table(&mut body, &state.fetcher.replays());
    body.push_str("<h2>In the queue</h2><table id=\"letters\"><tr><th>Id</th><th>Kind</th><th>Symbol</th><th>Class</th><th class=\"num\">Attempts</th><th>Last failure</th><th>Last error</th><th></th></tr>");
    for letter in &listing.letters {
        let replay = if operate {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/console/dlq/replay\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"id\" value=\"{}\"><button class=\"replay\" data-id=\"{}\">Replay</button></form>",
                esc(&login.csrf),
                esc(&letter.id),
                esc(&letter.id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr class=\"letter\" data-id=\"{}\"><td><a href=\"/console/dlq/show?id={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{replay}</td></tr>",
            esc(&letter.id),
            enc(&letter.id),
            esc(&letter.id),
            esc(&letter.kind),
            esc(&letter.symbol),
            esc(&letter.error_class),
            letter.attempts,
            esc(&letter.last_failure),
            esc(&letter.last_error.chars().take(160).collect::<String>())
        );
    }
    body.push_str("</table>");
    page("Dead letters", Some(&login), &body).into_response()
}

/// The jobs replayed from this console and what became of them.
fn replays_table(body: &mut String, replays: &[crate::fetch::Replay]) {
    if replays.is_empty() {
        return;
    }
    body.push_str("<h2>Replayed from this console</h2><table id=\"replays\"><tr><th>Job</th><th>Replayed</th><th>Outcome</th></tr>");
    for replay in replays {
        let (class, outcome) = match replay.outcome.as_deref() {
            None => ("", "waiting for a worker".to_owned()),
            Some(reply) => match &reply.outcome {
                ReplyOutcome::Succeeded { detail } => {
                    let what = match detail {
                        Detail::FetchBars(d) if d.bars == 1 => ": 1 bar".to_owned(),
                        Detail::FetchBars(d) => format!(": {} bars", d.bars),
                        Detail::SyncPage(d) => format!(": {} listed", d.listed),
                        Detail::StatusCheck(_) => String::new(),
                    };
                    ("ok", format!("succeeded{what}"))
                }
                ReplyOutcome::DeadLettered { error_class, error } => {
                    ("bad", format!("dead-lettered ({error_class}): {error}"))
                }
            },
        };
        let _ = write!(
            body,
            "<tr class=\"replay\" data-id=\"{}\"><td>{}</td><td>{}</td><td class=\"{class} outcome\">{}</td></tr>",
            esc(&replay.id),
            esc(&replay.id),
            replay.at.format("%H:%M:%SZ"),
            esc(&outcome)
        );
    }
    body.push_str("</table>");
}

#[derive(Debug, Deserialize)]
struct ShowQuery {
    id: String,
}

async fn show(State(state): State<Shared>, headers: HeaderMap, Query(query): Query<ShowQuery>) -> Response {
    let (_, login) = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let session = match broker(&state).await {
        Ok(s) => s,
        Err(error) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&login), &error),
    };
    let found = dlq::find(&session.connection, &session.topology.dead_letter_queue(), &query.id).await;
    let _ = session.connection.close(200, "console".into()).await;
    let shown = match found {
        Ok((Some(shown), _)) => shown,
        Ok((None, read)) => {
            return error_page(
                StatusCode::NOT_FOUND,
                Some(&login),
                &format!("No dead letter with id {:?} among the {read} in the queue.", query.id),
            )
        }
        Err(error) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&login),
                &hidden("The dead-letter queue cannot be read", &format!("{error:#}")),
            )
        }
    };
    let mut body = format!(
        "<h2>Dead letter {}</h2><p>routing key <code>{}</code> · {} · {} attempts</p><h2>Headers</h2><table>",
        esc(&shown.letter.id),
        esc(&shown.letter.routing_key),
        esc(&shown.letter.error_class),
        shown.letter.attempts
    );
    for (name, value) in &shown.headers {
        let _ = write!(body, "<tr><th>{}</th><td>{}</td></tr>", esc(name), esc(value));
    }
    if login.role >= Role::Operate {
        let _ = write!(
            body,
            "</table><h2>Body ({} bytes{})</h2><pre id=\"body\">{}</pre>",
            shown.body_bytes,
            if shown.body_is_json { "" } else { ", not JSON" },
            esc(&shown.body)
        );
    } else {
        let _ = write!(
            body,
            "</table><h2>Body ({} bytes)</h2><p class=\"warn\" id=\"body-hidden\">Message bodies need the <code>operate</code> role.</p>",
            shown.body_bytes
        );
    }
    if login.role >= Role::Operate {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/console/dlq/replay\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"id\" value=\"{}\"><button>Replay</button></form>",
            esc(&login.csrf),
            esc(&shown.letter.id)
        );
    }
    page("Dead letter", Some(&login), &body).into_response()
}

#[derive(Debug, Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
    #[serde(flatten)]
    filters: Filters,
}

/// The start of an action: the one-at-a-time lock and a broker session.
async fn begin_action<'a>(
    state: &'a AppState,
    login: &Login,
) -> Result<(tokio::sync::MutexGuard<'a, ()>, BrokerSession), Box<Response>> {
    let Ok(lock) = state.action.try_lock() else {
        return Err(Box::new(error_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(login),
            "Another replay or purge is running; try again when it ends.",
        )));
    };
    match broker(state).await {
        Ok(session) => Ok((lock, session)),
        Err(error) => Err(Box::new(error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(login),
            &error,
        ))),
    }
}

async fn replay(State(state): State<Shared>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    let (id, login) = match action_session(&state, &headers, &form.csrf, Role::Operate) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (_one_at_a_time, session) = match begin_action(&state, &login).await {
        Ok(started) => started,
        Err(r) => return *r,
    };
    let filter = form.filters.filter(Some(state.settings.action_max));
    // Replies come to the API's own reply queue, so the page can show each
    // replayed job's outcome; without it the replay still goes ahead.
    let reply_to = state.fetcher.reply_queue().await.ok();
    let result = dlq::replay_matching(
        &session.connection,
        &session.publisher,
        &session.topology,
        &filter,
        dlq::ReplayHow {
            rate: Some(state.settings.replay_rate),
            dry_run: false,
            reply_to: reply_to.as_deref(),
        },
        |_, _, _| {},
    )
    .await;
    if let Ok(report) = &result {
        if reply_to.is_some() {
            state.fetcher.watch(&report.job_ids);
        }
    }
    let _ = session.connection.close(200, "console".into()).await;
    let message = match result {
        Ok(report) => {
            tracing::info!(replayed = report.replayed, kept = report.kept.len(), "Console replay");
            let mut m = format!("Replayed {} dead letter(s).", report.replayed);
            if !report.kept.is_empty() {
                let _ = write!(
                    m,
                    " Kept {} no queue would take: {}.",
                    report.kept.len(),
                    report.kept.join("; ")
                );
            }
            if let Some(failure) = report.failure {
                let _ = write!(m, " Stopped early: {failure}.");
            }
            m
        }
        Err(error) => hidden("Replay failed", &format!("{error:#}")),
    };
    state.sessions.set_flash(&id, message);
    let back = if form.filters.filter(None).id.is_some() {
        String::new()
    } else {
        form.filters.query()
    };
    Redirect::to(&format!("/console/dlq?{back}")).into_response()
}

async fn purge_confirm(State(state): State<Shared>, headers: HeaderMap, Query(filters): Query<Filters>) -> Response {
    let (_, login) = match session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if login.role < Role::Operate {
        return error_page(StatusCode::FORBIDDEN, Some(&login), "Purging needs the `operate` role.");
    }
    let session = match broker(&state).await {
        Ok(s) => s,
        Err(error) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&login), &error),
    };
    let mut count = 0usize;
    let listing = dlq::browse(
        &session.connection,
        &session.topology.dead_letter_queue(),
        &filters.filter(None),
        state.settings.action_max,
        false,
        |_| count += 1,
    )
    .await;
    let _ = session.connection.close(200, "console".into()).await;
    let matching = match listing {
        Ok(l) => l,
        Err(error) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&login),
                &hidden("The dead-letter queue cannot be read", &format!("{error:#}")),
            )
        }
    };
    let scope = if filters.is_empty() {
        "<strong>every</strong> dead letter".to_owned()
    } else {
        format!("the dead letters matching <code>{}</code>", esc(&filters.query()))
    };
    let body = format!(
        "<h2>Purge dead letters?</h2><p class=\"warn\">This deletes {scope} for good: {count} of the {} in the queue match (at most {} per action). Replaying is usually what you want.</p>\
         <form method=\"post\" action=\"/console/dlq/purge\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"confirm\" value=\"yes\">{}\
         <button id=\"confirm-purge\">Yes, delete {count} dead letter(s)</button></form> <a href=\"/console/dlq?{}\">Cancel</a>",
        matching.total,
        state.settings.action_max,
        esc(&login.csrf),
        filters.hidden(),
        filters.query()
    );
    page("Purge", Some(&login), &body).into_response()
}

async fn purge(State(state): State<Shared>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    let (id, login) = match action_session(&state, &headers, &form.csrf, Role::Operate) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if form.confirm != "yes" {
        return error_page(
            StatusCode::BAD_REQUEST,
            Some(&login),
            "A purge needs its confirmation (confirm=yes from the confirmation page).",
        );
    }
    let (_one_at_a_time, session) = match begin_action(&state, &login).await {
        Ok(started) => started,
        Err(r) => return *r,
    };
    let filter = form.filters.filter(Some(state.settings.action_max));
    let result = dlq::purge_matching(&session.connection, &session.topology.dead_letter_queue(), &filter).await;
    let _ = session.connection.close(200, "console".into()).await;
    let message = match result {
        Ok(n) => {
            tracing::info!(purged = n, "Console purge");
            format!("Purged {n} dead letter(s).")
        }
        Err(error) => hidden("Purge failed", &format!("{error:#}")),
    };
    state.sessions.set_flash(&id, message);
    Redirect::to("/console/dlq").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html_and_for_queries() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(enc("BTC/USD a&b"), "BTC%2FUSD%20a%26b");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; signal9_console=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&headers).as_deref(), Some("abc"));
        headers.insert(header::COOKIE, "__Host-signal9_console=def".parse().unwrap());
        assert_eq!(cookie(&headers).as_deref(), Some("def"));
    }

    #[test]
    fn sessions_are_bounded_and_failed_logins_throttled_per_address() {
        let sessions = Sessions::new(3, 2);
        let ids: Vec<String> = (0..5).map(|_| sessions.open(Role::Read, "h".into())).collect();
        assert_eq!(sessions.len(), 3, "the oldest sessions ended");
        assert!(!sessions.lock().contains_key(&ids[0]));
        assert!(sessions.lock().contains_key(&ids[4]));
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(sessions.throttled(a), None);
        sessions.failed(a);
        assert_eq!(sessions.throttled(a), None, "one failure of two allowed");
        sessions.failed(a);
        assert!(sessions.throttled(a).is_some_and(|s| s <= 60));
        assert_eq!(sessions.throttled(b), None, "another address is not held");
    }
}
