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
//!
//! - `sessions`: the session store; `extract`: the extractors of a page
//!   and an action;
//! - `pages`: what a logged-in operator reads;
//! - `actions`: login, logout, replay, purge;
//! - `render`: the HTML.

mod actions;
mod extract;
mod pages;
mod render;
mod sessions;

use crate::{AppState, Shared};
use axum::routing::{get, post};
use axum::Router;
use render::hidden;
use signal9_shared::ops::Session as BrokerSession;

use actions::{login, logout, purge, purge_confirm, replay};
use pages::{dead_letters, login_form, overview, show, Filters};
pub(crate) use sessions::Sessions;

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

async fn broker(state: &AppState) -> Result<BrokerSession, String> {
    BrokerSession::open(&state.settings.broker, "signal9-api-console", false)
        .await
        .map_err(|e| hidden("RabbitMQ is unavailable", &format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::render::{enc, esc};
    use super::sessions::{cookie, Sessions};
    use crate::auth::Role;
    use axum::http::{header, HeaderMap};

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
