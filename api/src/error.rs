//! The API's one error type: Alpaca's error shape (`{"code", "message"}`),
//! the status, `Retry-After` when a retry helps; and the request id every
//! error body and log line names.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use signal9_shared::store::StoreError;

use crate::auth::Denied;

tokio::task_local! {
    /// The id of the request being served, for its error bodies and logs.
    pub(crate) static REQUEST_ID: String;
}

/// The id of the request this task serves (`-` outside one).
pub(crate) fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "-".to_owned())
}

/// An error answer, as Alpaca shapes them: `{"code": N, "message": "..."}`.
/// A server-side error's message names the request id, never its cause:
/// causes go to the log under that id.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// Seconds the client should wait (`Retry-After`), for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// With `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// A failure inside: logged with its cause under the request id; the
    /// client is told what failed and the id, not the cause.
    pub fn internal(status: StatusCode, what: &str, cause: &dyn std::fmt::Display) -> Self {
        let id = request_id();
        tracing::error!(request_id = %id, error = %cause, "{what}");
        ApiError::new(status, format!("{what} (request id {id})"))
    }

    /// The store failed.
    pub fn store(error: StoreError) -> Self {
        ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable", &error).retry_after(5)
    }

    pub(crate) fn denied(denied: Denied) -> Self {
        match denied {
            Denied::Unauthenticated(why) => ApiError::new(StatusCode::UNAUTHORIZED, why),
            Denied::Forbidden(role) => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this token lacks the `{}` role", role.as_str()),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = u32::from(self.status.as_u16()) * 100_000;
        let body = serde_json::json!({"code": code, "message": self.message});
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
