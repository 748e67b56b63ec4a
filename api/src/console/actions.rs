//! The console's actions: log in and out, replay and purge dead letters
//! (one at a time, `operate` role, CSRF token).

use super::extract::{Action, LoggedIn, WithCsrf};
use super::render::{error_page, esc, login_page, page};
use super::sessions::{Login, COOKIE, SECURE_COOKIE, SESSION_TTL};
use super::{broker, hidden, Filters};
use crate::auth::Role;
use crate::{AppState, Shared};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use signal9_shared::ops::dead_letters::{self as dlq};
use signal9_shared::ops::Session as BrokerSession;
use std::fmt::Write as _;

use crate::auth::{Operate, Read};

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

pub(super) async fn login(
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

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout(State(state): State<Shared>, action: Action<CsrfForm, Read>) -> Response {
    state.sessions.close(&action.id);
    Redirect::to("/console/login").into_response()
}

impl WithCsrf for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl WithCsrf for ActionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
    #[serde(flatten)]
    filters: Filters,
}

/// The start of an action: the one-at-a-time lock and a broker session.
pub(super) async fn begin_action<'a>(
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

pub(super) async fn replay(
    State(state): State<Shared>,
    Action { id, login, form, .. }: Action<ActionForm, Operate>,
) -> Response {
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

pub(super) async fn purge_confirm(
    State(state): State<Shared>,
    LoggedIn { login, .. }: LoggedIn,
    Query(filters): Query<Filters>,
) -> Response {
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

pub(super) async fn purge(
    State(state): State<Shared>,
    Action { id, login, form, .. }: Action<ActionForm, Operate>,
) -> Response {
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
