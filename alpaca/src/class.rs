//! The one decision every failure needs: try again later, or give up now.
//! Alpaca's errors and the validation rules classify themselves here; the
//! system's own errors (store, broker, budget) do the same.
//!
//! Every error that can reach the queue says which [`ErrorClass`] it is, so the
//! worker routes it without knowing where it came from: transient failures go
//! through the retry tiers, permanent ones straight to the dead-letter queue.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether a failed job may succeed if it is tried again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Timeouts, 5xx, 429, broker or store hiccups: retry after a delay.
    Transient,
    /// Malformed input, invalid symbol or range, 4xx other than 429, data
    /// that fails validation: retrying cannot help, dead-letter at once.
    Permanent,
}

impl ErrorClass {
    /// The lowercase name used in headers, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every error type that can decide a job's fate.
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;

    /// True when the job was not tried at all (the budget or the breaker
    /// held it back): it is delayed without counting an attempt.
    fn defers(&self) -> bool {
        false
    }

    /// The dependency (not Alpaca) whose failure this is, if it is one:
    /// `store` or `redis`. A worker counts these against its own breaker of
    /// that dependency, and defers the job rather than spend calls on it.
    fn dependency(&self) -> Option<&'static str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_names_are_the_ones_headers_and_metrics_carry() {
        assert_eq!(ErrorClass::Transient.to_string(), "transient");
        assert_eq!(ErrorClass::Permanent.as_str(), "permanent");
        let json = serde_json::to_string(&[ErrorClass::Transient, ErrorClass::Permanent]).unwrap_or_default();
        assert_eq!(json, r#"["transient","permanent"]"#);
        let back: ErrorClass = serde_json::from_str("\"permanent\"").unwrap_or(ErrorClass::Transient);
        assert_eq!(back, ErrorClass::Permanent);
    }

    struct Plain;

    impl Classify for Plain {
        fn class(&self) -> ErrorClass {
            ErrorClass::Transient
        }
    }

    #[test]
    fn an_error_defers_only_when_it_says_so() {
        assert!(!Plain.defers());
        assert_eq!(Plain.class(), ErrorClass::Transient);
    }
}
