//! The extractors of the console's handlers: [`LoggedIn`] for a page (a
//! live session, or a redirect to the login page) and [`Action`] for an
//! action (session, CSRF token and role, or an error page).

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

use super::render::error_page;
use super::sessions::Login;
use crate::auth::RoleMark;
use crate::Shared;

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
