//! The credentials check (the seed's `validateCredentials`): one
//! `GET /v2/account` through the gate, reduced to what an operator may see.
//! The report names the API base and the account's state, never a key,
//! and only the last four characters of the account number.

use std::fmt;

use super::{AlpacaClient, AlpacaError};

/// What `GET /v2/account` said about the account the key pair opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCheck {
    /// The trading API base that answered.
    pub base_url: String,
    /// `ACTIVE`, `ACCOUNT_UPDATED`, `ONBOARDING`, ... (the equities status).
    pub status: String,
    /// The crypto trading status, when the API sends one.
    pub crypto_status: Option<String>,
    /// The account number's last four characters, as `…1234`.
    pub account: String,
    /// Flags that would stop trading, by name (`trading_blocked`, ...).
    pub blocked: Vec<&'static str>,
}

impl AccountCheck {
    /// True when the account is `ACTIVE` and nothing is blocked.
    pub fn is_active(&self) -> bool {
        self.status == "ACTIVE" && self.blocked.is_empty()
    }
}

impl fmt::Display for AccountCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reached {} (account {}): status {}",
            self.base_url, self.account, self.status
        )?;
        if let Some(crypto) = &self.crypto_status {
            write!(f, ", crypto status {crypto}")?;
        }
        if !self.blocked.is_empty() {
            write!(f, "; blocked: {}", self.blocked.join(", "))?;
        }
        Ok(())
    }
}

/// Calls `GET /v2/account` once, through the client's gate and breaker,
/// and reads what it says. A refused key comes back as the call's error
/// (its message names the status, never the key).
pub async fn check_credentials(client: &AlpacaClient) -> Result<AccountCheck, AlpacaError> {
    let answer = client.account().await?;
    let body = &answer.body;
    let text = |field: &str| body.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    let Some(status) = text("status").filter(|s| !s.is_empty()) else {
        return Err(AlpacaError::BadBody {
            endpoint: "GET /v2/account",
            detail: "the answer has no \"status\"".into(),
        });
    };
    let number = text("account_number").unwrap_or_default();
    let tail: String = number
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let blocked = [
        "trading_blocked",
        "account_blocked",
        "transfers_blocked",
        "trade_suspended_by_user",
    ]
    .into_iter()
    .filter(|flag| body.get(*flag).and_then(serde_json::Value::as_bool) == Some(true))
    .collect();
    Ok(AccountCheck {
        base_url: client.trading_url().to_owned(),
        status,
        crypto_status: text("crypto_status"),
        account: format!("…{tail}"),
        blocked,
    })
}
