//! The extractor every read route takes: [`RequireRole`] checks the
//! request's token against the tokens file for a role before the handler
//! runs, and hands the handler the verified [`Caller`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::marker::PhantomData;

use super::{Caller, Role};
use crate::{ApiError, Shared};

/// A role as a type, for [`RequireRole`].
pub(crate) trait RoleMark: Send + Sync {
    /// The role it stands for.
    const ROLE: Role;
}

/// The `read` role: bars, assets, the console's pages.
#[derive(Debug)]
pub(crate) struct Read;

impl RoleMark for Read {
    const ROLE: Role = Role::Read;
}

/// A request whose token holds role `R` (or a higher one); a request
/// without is answered 401 (no or unknown token) or 403 (too low a role)
/// before its handler runs.
#[derive(Debug)]
pub(crate) struct RequireRole<R: RoleMark>(pub(crate) Caller, pub(crate) PhantomData<R>);

impl<R: RoleMark> FromRequestParts<Shared> for RequireRole<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Self::Rejection> {
        let caller = state
            .tokens
            .current()
            .check(&parts.headers, R::ROLE)
            .map_err(ApiError::denied)?;
        Ok(RequireRole(caller, PhantomData))
    }
}

/// The `operate` role: the console's replay and purge.
#[derive(Debug)]
pub(crate) struct Operate;

impl RoleMark for Operate {
    const ROLE: Role = Role::Operate;
}
