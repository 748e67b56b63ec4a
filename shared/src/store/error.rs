//! How a store fails, and which failures are worth a retry.

use signal9_alpaca::class::{Classify, ErrorClass};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (busy, I/O, connection): worth a retry.
    #[error("store backend failed: {0}")]
    Backend(String),
    /// Stored data could not be read back; a retry will not help.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A reference to something that is not stored.
    #[error("not found: {0}")]
    NotFound(String),
}

impl Classify for StoreError {
    fn dependency(&self) -> Option<&'static str> {
        matches!(self, StoreError::Backend(_)).then_some("store")
    }

    fn class(&self) -> ErrorClass {
        match self {
            StoreError::Backend(_) => ErrorClass::Transient,
            StoreError::Corrupt(_) | StoreError::NotFound(_) => ErrorClass::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_failures_retry_and_bad_data_does_not() {
        assert_eq!(StoreError::Backend("busy".into()).class(), ErrorClass::Transient);
        assert_eq!(StoreError::Corrupt("x".into()).class(), ErrorClass::Permanent);
        assert_eq!(StoreError::NotFound("run".into()).class(), ErrorClass::Permanent);
    }
}
