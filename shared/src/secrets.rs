//! The Alpaca key pair from AWS Secrets Manager.
//!
//! The secret is a JSON string `{"apiKey": "...", "secretKey": "...",
//! "paper": true}`. [`SecretsSource`] fetches it, caches it for a TTL, and
//! fetches it again when the API refuses the key it holds (a rotation): the
//! client then repeats the refused call once with the new key. Reads are
//! single-flight and bounded by a timeout, and past the TTL the cached pair
//! serves while one read runs in the background. Nothing here
//! ever puts a key value into a message: errors name the secret and the
//! field, never what it holds.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal9_alpaca::{AlpacaError, CredentialSource, Credentials};

/// After a refetch that brought back the very key the API refused, further
/// refusals of that key within this time do not fetch again (a free plan's
/// 403 on `sip` data would otherwise fetch the secret on every call).
const REFUSED_QUIET: Duration = Duration::from_secs(60);

/// What the secret holds. Its Debug output shows no key.
#[derive(Clone, PartialEq, Eq)]
pub struct AlpacaSecret {
    /// The key pair.
    pub credentials: Credentials,
    /// True for a paper account, false for a live one.
    pub paper: bool,
}

impl fmt::Debug for AlpacaSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlpacaSecret")
            .field("credentials", &self.credentials)
            .field("paper", &self.paper)
            .finish()
    }
}

impl AlpacaSecret {
    /// The trading API base this account uses.
    pub fn trading_url(&self) -> &'static str {
        signal9_alpaca::urls::trading(self.paper)
    }
}

/// Why the secret could not be had. No variant carries a key value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager has no secret of that name (or it is scheduled for deletion).
    #[error("Secrets Manager has no secret {name:?} (SIGNAL9_ALPACA_SECRET); create it or fix the name")]
    Missing {
        /// The secret's name.
        name: String,
    },
    /// The secret exists but is not what signal9 expects.
    #[error(
        "secret {name:?} is not a usable Alpaca key: {problem}; expected JSON {{\"apiKey\": string, \"secretKey\": string, \"paper\": true|false}}"
    )]
    Malformed {
        /// The secret's name.
        name: String,
        /// What is wrong, naming fields, never values.
        problem: String,
    },
    /// Secrets Manager could not be asked (network, permissions, throttling).
    #[error("cannot read secret {name:?} from Secrets Manager: {detail}")]
    Unavailable {
        /// The secret's name.
        name: String,
        /// The SDK's description (it holds no secret value).
        detail: String,
        /// True when asking again later may work.
        transient: bool,
    },
}

impl SecretError {
    fn into_alpaca(self) -> AlpacaError {
        let retry = matches!(self, SecretError::Unavailable { transient: true, .. });
        AlpacaError::Credentials {
            detail: self.to_string(),
            retry,
        }
    }
}

/// Parses the secret's text. Errors name fields only: a serde message could
/// quote a value, so none is passed on.
pub(crate) fn parse_secret(name: &str, text: &str) -> Result<AlpacaSecret, SecretError> {
    let malformed = |problem: String| SecretError::Malformed {
        name: name.to_owned(),
        problem,
    };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| malformed(format!("not valid JSON (line {}, column {})", e.line(), e.column())))?;
    let object = value.as_object().ok_or_else(|| malformed("not a JSON object".into()))?;
    let text_field = |field: &str| -> Result<String, SecretError> {
        match object.get(field) {
            None => Err(malformed(format!("field {field:?} is missing"))),
            Some(serde_json::Value::String(v)) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
            Some(serde_json::Value::String(_)) => Err(malformed(format!("field {field:?} is empty"))),
            Some(_) => Err(malformed(format!("field {field:?} is not a string"))),
        }
    };
    let key_id = text_field("apiKey")?;
    let secret_key = text_field("secretKey")?;
    let paper = match object.get("paper") {
        Some(serde_json::Value::Bool(paper)) => *paper,
        None => return Err(malformed("field \"paper\" is missing".into())),
        Some(_) => return Err(malformed("field \"paper\" is not true or false".into())),
    };
    Ok(AlpacaSecret {
        credentials: Credentials::new(key_id, secret_key),
        paper,
    })
}

#[derive(Clone)]
struct Cached {
    secret: AlpacaSecret,
    fetched: Instant,
    /// When a refetch last brought back a key the API had refused.
    refused_again: Option<Instant>,
}

/// The longest a Secrets Manager call may take by default.
pub(crate) const DEFAULT_SECRET_TIMEOUT: Duration = Duration::from_secs(5);

/// The key pair from a Secrets Manager secret, cached for a TTL.
///
/// No caller ever waits on Secrets Manager while a pair is held: past the
/// TTL, the cached pair keeps serving and one refresh runs in the
/// background. Reads of the secret are single-flight (one at a time per
/// process) and each is bounded by a timeout, so a hung call costs one
/// timeout, counted in `signal9_secret_refresh_failures_total`, never a
/// stalled process. Only the first read (nothing cached yet) and a
/// refusal of the held key wait for a read, and for at most the timeout.
pub struct SecretsSource {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    name: String,
    ttl: Duration,
    timeout: Duration,
    /// Held only to copy or replace the pair, never across an await.
    cache: std::sync::Mutex<Option<Cached>>,
    /// Single flight: held while Secrets Manager is being asked.
    flight: tokio::sync::Mutex<()>,
    /// True while a background refresh is running.
    refreshing: AtomicBool,
}

impl fmt::Debug for SecretsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsSource")
            .field("name", &self.inner.name)
            .field("ttl", &self.inner.ttl)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl SecretsSource {
    /// A source for secret `name`, kept for `ttl` before it is fetched
    /// again, each fetch bounded by [`DEFAULT_SECRET_TIMEOUT`].
    pub fn new(config: &aws_config::SdkConfig, name: impl Into<String>, ttl: Duration) -> Self {
        SecretsSource {
            inner: Arc::new(Inner {
                client: Client::new(config),
                name: name.into(),
                ttl,
                timeout: DEFAULT_SECRET_TIMEOUT,
                cache: std::sync::Mutex::new(None),
                flight: tokio::sync::Mutex::new(()),
                refreshing: AtomicBool::new(false),
            }),
        }
    }

    /// The same source with each Secrets Manager call bounded by `timeout`
    /// (call it before the source is shared).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.timeout = timeout;
        }
        self
    }

    /// The secret's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Fetches and parses the secret now, bypassing the cache (bounded by
    /// the timeout; failures are counted).
    pub async fn fetch(&self) -> Result<AlpacaSecret, SecretError> {
        self.inner.fetch().await
    }

    /// The secret: the cached pair while it is younger than the TTL; past
    /// it, still the cached pair, while one background refresh reads the
    /// secret again (a failed refresh is logged and counted, and the pair
    /// keeps serving). With nothing cached, one read, bounded by the
    /// timeout, shared by every caller that arrives meanwhile.
    pub async fn secret(&self) -> Result<AlpacaSecret, SecretError> {
        if let Some(cached) = self.inner.cached() {
            if cached.fetched.elapsed() >= self.inner.ttl {
                self.refresh_in_background();
            }
            return Ok(cached.secret);
        }
        let _flight = self.inner.flight.lock().await;
        // Another caller may have read it while this one waited.
        if let Some(cached) = self.inner.cached() {
            return Ok(cached.secret);
        }
        let secret = self.inner.fetch().await?;
        self.inner.store(secret.clone(), false);
        Ok(secret)
    }

    fn refresh_in_background(&self) {
        if self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let flight = inner.flight.lock().await;
            // A refusal may have read it meanwhile.
            let stale = inner.cached().is_none_or(|c| c.fetched.elapsed() >= inner.ttl);
            if stale {
                match inner.fetch().await {
                    Ok(secret) => inner.store(secret, false),
                    Err(error) => {
                        tracing::warn!(secret = %inner.name, %error, "Keeping the cached Alpaca key: the secret could not be read again");
                    }
                }
            }
            drop(flight);
            inner.refreshing.store(false, Ordering::Release);
        });
    }
}

impl Inner {
    fn cached(&self) -> Option<Cached> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn store(&self, secret: AlpacaSecret, refused_again: bool) {
        *self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Cached {
            secret,
            fetched: Instant::now(),
            refused_again: refused_again.then(Instant::now),
        });
    }

    async fn fetch(&self) -> Result<AlpacaSecret, SecretError> {
        let result = match tokio::time::timeout(self.timeout, self.fetch_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(SecretError::Unavailable {
                name: self.name.clone(),
                detail: format!(
                    "no answer within {:.1} s (SIGNAL9_ALPACA_SECRET_TIMEOUT_SECS)",
                    self.timeout.as_secs_f64()
                ),
                transient: true,
            }),
        };
        if let Err(error) = &result {
            let reason = match error {
                SecretError::Unavailable { detail, .. } if detail.starts_with("no answer within") => "timeout",
                SecretError::Unavailable { .. } => "unavailable",
                SecretError::Missing { .. } => "missing",
                SecretError::Malformed { .. } => "malformed",
            };
            crate::telemetry::events::Emit::emit(crate::telemetry::events::SecretRefreshFailed { reason });
        }
        result
    }

    async fn fetch_unbounded(&self) -> Result<AlpacaSecret, SecretError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.name)
            .send()
            .await
            .map_err(|error| {
                let service = error.as_service_error();
                if service.is_some_and(|e| e.is_resource_not_found_exception()) {
                    return SecretError::Missing {
                        name: self.name.clone(),
                    };
                }
                let transient = !service.is_some_and(|e| {
                    e.is_invalid_parameter_exception() || e.is_invalid_request_exception() || e.is_decryption_failure()
                });
                SecretError::Unavailable {
                    name: self.name.clone(),
                    detail: crate::aws::describe(&error),
                    transient,
                }
            })?;
        let text = output.secret_string().ok_or_else(|| SecretError::Malformed {
            name: self.name.clone(),
            problem: "it has no string value (a binary secret)".into(),
        })?;
        parse_secret(&self.name, text)
    }
}

#[async_trait]
impl CredentialSource for SecretsSource {
    async fn current(&self) -> Result<Credentials, AlpacaError> {
        self.secret()
            .await
            .map(|s| s.credentials)
            .map_err(SecretError::into_alpaca)
    }

    async fn refresh(&self, refused: &Credentials) -> Result<Option<Credentials>, AlpacaError> {
        // Callers of `current` are not held up by this: they read the
        // cache, which is never locked across the read below.
        let _flight = self.inner.flight.lock().await;
        if let Some(cached) = self.inner.cached() {
            if cached.secret.credentials != *refused {
                // Another call fetched the new key already.
                return Ok(Some(cached.secret.credentials));
            }
            if cached.refused_again.is_some_and(|at| at.elapsed() < REFUSED_QUIET) {
                return Ok(None);
            }
        }
        let secret = self.inner.fetch().await.map_err(SecretError::into_alpaca)?;
        let same = secret.credentials == *refused;
        if same {
            tracing::warn!(secret = %self.inner.name, "The API refused the key and the secret still holds that key");
        } else {
            tracing::info!(secret = %self.inner.name, "The API refused the cached key; using the key the secret holds now");
        }
        let credentials = secret.credentials.clone();
        self.inner.store(secret, same);
        Ok((!same).then_some(credentials))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AKSECRETVALUE0001";
    const SECRET: &str = "ssssSECRETVALUE0002";

    #[test]
    fn a_well_formed_secret_parses() {
        let text = format!(r#"{{"apiKey":"{KEY}","secretKey":"{SECRET}","paper":false}}"#);
        let secret = parse_secret("s", &text).expect("parses");
        assert_eq!(secret.credentials, Credentials::new(KEY, SECRET));
        assert!(!secret.paper);
        assert_eq!(secret.trading_url(), signal9_alpaca::urls::LIVE_TRADING);
    }

    #[test]
    fn every_malformed_secret_gets_a_reason_that_quotes_no_value() {
        let cases = [
            (
                format!("{{\"apiKey\":\"{KEY}\",\"secretKey\":\"{SECRET}\""),
                "not valid JSON",
            ),
            (format!("[\"{KEY}\"]"), "not a JSON object"),
            (
                format!("{{\"secretKey\":\"{SECRET}\",\"paper\":true}}"),
                "\"apiKey\" is missing",
            ),
            (
                format!("{{\"apiKey\":\"{KEY}\",\"paper\":true}}"),
                "\"secretKey\" is missing",
            ),
            (
                format!("{{\"apiKey\":\"{KEY}\",\"secretKey\":\"{SECRET}\"}}"),
                "\"paper\" is missing",
            ),
            (
                format!("{{\"apiKey\":\"{KEY}\",\"secretKey\":\"{SECRET}\",\"paper\":\"{SECRET}\"}}"),
                "\"paper\" is not true or false",
            ),
            (
                format!("{{\"apiKey\":1,\"secretKey\":\"{SECRET}\",\"paper\":true}}"),
                "\"apiKey\" is not a string",
            ),
            (
                format!("{{\"apiKey\":\"{KEY}\",\"secretKey\":\" \",\"paper\":true}}"),
                "\"secretKey\" is empty",
            ),
        ];
        for (text, reason) in cases {
            let error = parse_secret("prod/alpaca", &text).expect_err(&text);
            let message = error.to_string();
            assert!(message.contains(reason), "{message}");
            assert!(message.contains("prod/alpaca"), "{message}");
            assert!(!message.contains(KEY) && !message.contains(SECRET), "{message}");
            assert!(!format!("{error:?}").contains(SECRET));
        }
    }

    #[test]
    fn debug_output_hides_the_keys() {
        let secret = AlpacaSecret {
            credentials: Credentials::new(KEY, SECRET),
            paper: true,
        };
        let debug = format!("{secret:?}");
        assert!(!debug.contains(KEY) && !debug.contains(SECRET), "{debug}");
    }
}
