//! What can go wrong talking to Alpaca, and which of it is worth retrying.

use chrono::{DateTime, Utc};

use crate::class::{Classify, ErrorClass};

/// A failed Alpaca call. Messages name the endpoint template (never a URL
/// with a query, never a credential) and quote at most a short, cleaned
/// excerpt of the API's own message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlpacaError {
    /// No answer within the client's timeout.
    #[error("{endpoint}: no answer within the timeout")]
    Timeout {
        /// The endpoint template, e.g. `GET /v2/assets`.
        endpoint: &'static str,
    },
    /// The connection could not be made or broke.
    #[error("{endpoint}: connection failed: {detail}")]
    Connect {
        /// The endpoint template.
        endpoint: &'static str,
        /// What the HTTP stack said.
        detail: String,
    },
    /// 429: the API's own budget is spent until `reset`.
    #[error("{endpoint}: rate limited by the API (429){}", reset.map(|r| format!(", resets at {}", r.to_rfc3339())).unwrap_or_default())]
    RateLimited {
        /// The endpoint template.
        endpoint: &'static str,
        /// From `X-RateLimit-Reset`, when the API sent it.
        reset: Option<DateTime<Utc>>,
    },
    /// 5xx (or 408): the API or its gateway failed.
    #[error("{endpoint}: server error {status}: {message}")]
    Server {
        /// The endpoint template.
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// The API's message, or a description of a non-JSON body.
        message: String,
    },
    /// A 4xx other than 429: the request itself is wrong (bad symbol, bad
    /// parameter, unknown asset, bad credentials).
    #[error("{endpoint}: rejected with {status}{}: {message}", code.map(|c| format!(" (code {c})")).unwrap_or_default())]
    Rejected {
        /// The endpoint template.
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// The trading API's numeric error code, when present.
        code: Option<i64>,
        /// The API's message.
        message: String,
    },
    /// A 2xx whose body ended early (JSON that stops mid-way, as when a
    /// proxy or the connection cuts it): asking again may well work.
    #[error("{endpoint}: response body cut short: {detail}")]
    CutBody {
        /// The endpoint template.
        endpoint: &'static str,
        /// Where the parser ran out of input.
        detail: String,
    },
    /// A complete 2xx body that is not what the API documents.
    #[error("{endpoint}: malformed response body: {detail}")]
    BadBody {
        /// The endpoint template.
        endpoint: &'static str,
        /// What did not parse.
        detail: String,
    },
    /// The request was refused before it was sent (bad query).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No key pair to send (Secrets Manager unreachable, the secret missing
    /// or malformed). The detail names the secret, never a key.
    #[error("Alpaca credentials unavailable: {detail}")]
    Credentials {
        /// What went wrong.
        detail: String,
        /// True when asking again later may work.
        retry: bool,
    },
    /// The call could not get past the gate (budget or breaker unavailable).
    #[error("call not admitted: {0}")]
    NotAdmitted(String),
}

impl AlpacaError {
    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            AlpacaError::RateLimited { .. } => Some(429),
            AlpacaError::Server { status, .. } | AlpacaError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Classify for AlpacaError {
    fn defers(&self) -> bool {
        matches!(self, AlpacaError::NotAdmitted(_))
    }

    fn class(&self) -> ErrorClass {
        match self {
            AlpacaError::Timeout { .. }
            | AlpacaError::Connect { .. }
            | AlpacaError::RateLimited { .. }
            | AlpacaError::Server { .. }
            | AlpacaError::CutBody { .. }
            | AlpacaError::NotAdmitted(_)
            | AlpacaError::Credentials { retry: true, .. } => ErrorClass::Transient,
            AlpacaError::Rejected { .. }
            | AlpacaError::BadBody { .. }
            | AlpacaError::InvalidRequest(_)
            | AlpacaError::Credentials { retry: false, .. } => ErrorClass::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_known_only_when_the_api_answered() {
        let rate = AlpacaError::RateLimited {
            endpoint: "e",
            reset: None,
        };
        assert_eq!(rate.status(), Some(429));
        let server = AlpacaError::Server {
            endpoint: "e",
            status: 503,
            message: String::new(),
        };
        assert_eq!(server.status(), Some(503));
        let rejected = AlpacaError::Rejected {
            endpoint: "e",
            status: 422,
            code: Some(1),
            message: String::new(),
        };
        assert_eq!(rejected.status(), Some(422));
        assert_eq!(AlpacaError::Timeout { endpoint: "e" }.status(), None);
        assert_eq!(AlpacaError::InvalidRequest("x".into()).status(), None);
        assert!(AlpacaError::NotAdmitted("budget".into()).defers());
        assert!(!rate.defers());
    }

    #[test]
    fn messages_name_endpoint_and_reset() {
        let reset = DateTime::from_timestamp(1_800_000_000, 0);
        let e = AlpacaError::RateLimited {
            endpoint: "GET /v2/assets",
            reset,
        };
        assert!(e.to_string().contains("GET /v2/assets"));
        assert!(e.to_string().contains("2027-01-15T08:00:00+00:00"), "{e}");
        assert_eq!(e.class(), ErrorClass::Transient);
    }
}
