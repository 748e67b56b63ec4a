//! Console sessions: a random id in a cookie, held in this process's
//! memory, bounded, throttled per address on failed logins; and the
//! extractors a page ([`LoggedIn`]) and an action ([`Action`]: session,
//! CSRF token, role) take.

use super::render::error_page;
use crate::auth::{Role, RoleMark};
use crate::Shared;
use axum::extract::Form;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rand::Rng;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, Request};

pub(super) const COOKIE: &str = "signal9_console";

/// The cookie's name when it is `Secure`: the browser then also insists on
/// `Path=/`, no `Domain` and HTTPS.
pub(super) const SECURE_COOKIE: &str = "__Host-signal9_console";

/// How long failed logins are counted against an address.
pub(super) const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// Addresses whose failures are remembered at most (a flood of addresses
/// forgets them all rather than grow).
pub(super) const MAX_TRACKED_ADDRESSES: usize = 10_000;

pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
pub(super) struct Login {
    pub(super) role: Role,
    /// The token's hash: a session ends when its token leaves the file.
    pub(super) token: String,
    pub(super) csrf: String,
    pub(super) expires: Instant,
    pub(super) flash: Option<String>,
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

pub(super) fn random_hex() -> String {
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Login>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds until `address` may try again, if its failures are used up.
    pub(super) fn throttled(&self, address: std::net::IpAddr) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (since, count) = failures.get(&address)?;
        let left = LOGIN_WINDOW.checked_sub(since.elapsed())?;
        (*count >= self.attempts).then(|| left.as_secs().max(1))
    }

    pub(super) fn failed(&self, address: std::net::IpAddr) {
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
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn open(&self, role: Role, token: String) -> String {
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
    pub(super) fn get(&self, headers: &HeaderMap, tokens: &crate::auth::Tokens) -> Option<(String, Login)> {
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

    pub(super) fn take_flash(&self, id: &str) -> Option<String> {
        self.lock().get_mut(id).and_then(|l| l.flash.take())
    }

    pub(super) fn set_flash(&self, id: &str, message: String) {
        if let Some(login) = self.lock().get_mut(id) {
            login.flash = Some(message);
        }
    }

    pub(super) fn close(&self, id: &str) {
        self.lock().remove(id);
    }
}

pub(super) fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE || *name == SECURE_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// A console page's logged-in session: the extractor of every page. A
/// request without a live session is sent to the login page.
#[derive(Debug)]
pub(super) struct LoggedIn {
    /// The session id (the cookie's value).
    pub(super) id: String,
    /// Who is logged in.
    pub(super) login: Login,
}

impl FromRequestParts<Shared> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Self::Rejection> {
        state
            .sessions
            .get(&parts.headers, &state.tokens.current())
            .map(|(id, login)| LoggedIn { id, login })
            .ok_or_else(|| Redirect::to("/console/login").into_response())
    }
}

/// A form that carries the session's CSRF token.
pub(super) trait WithCsrf {
    /// The token the form sent.
    fn csrf(&self) -> &str;
}

/// A console action: a live session, its form `F` with the session's CSRF
/// token, and a token of role `R` (or higher). The extractor of every
/// action; a request that lacks any is answered with an error page.
#[derive(Debug)]
pub(super) struct Action<F, R> {
    /// The session id.
    pub(super) id: String,
    /// Who is logged in.
    pub(super) login: Login,
    /// The form.
    pub(super) form: F,
    role: PhantomData<R>,
}

impl<F, R> FromRequest<Shared> for Action<F, R>
where
    F: DeserializeOwned + WithCsrf + Send,
    R: RoleMark,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        let Some((id, login)) = state.sessions.get(request.headers(), &state.tokens.current()) else {
            return Err(error_page(StatusCode::UNAUTHORIZED, None, "Log in first."));
        };
        let Form(form) = Form::<F>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let csrf = form.csrf();
        if csrf.is_empty() || csrf != login.csrf {
            tracing::warn!("Console action refused: CSRF token missing or wrong");
            return Err(error_page(
                StatusCode::FORBIDDEN,
                Some(&login),
                "The form's CSRF token is missing or wrong; reload the page and try again.",
            ));
        }
        if login.role < R::ROLE {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                Some(&login),
                &format!(
                    "This needs the `{}` role; your token has `{}`.",
                    R::ROLE.as_str(),
                    login.role.as_str()
                ),
            ));
        }
        Ok(Action {
            id,
            login,
            form,
            role: PhantomData,
        })
    }
}
