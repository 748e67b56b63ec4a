//! The checkpoint of an unfinished fetch, per series: how far its pages
//! reached and the token to resume from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use signal9_alpaca::validate::BarRejection;
use signal9_alpaca::Symbol;

/// How far one series of one fetch range got, kept in the store between
/// pages (see the module's documentation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The time of the last bar stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<DateTime<Utc>>,
    /// Bars stored so far.
    #[serde(default)]
    pub stored: usize,
    /// Every bar of the range is stored.
    #[serde(default)]
    pub done: bool,
    /// Why the series was rejected, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<BarRejection>,
    /// For the series a request stopped in: how that request goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
}

/// A request's next page: the token is valid only for the same query, so
/// the query's symbols come with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Resume {
    /// The next page token.
    pub token: String,
    /// The symbols of the request the token belongs to.
    pub symbols: Vec<Symbol>,
}

impl Checkpoint {
    pub(crate) fn started(&self) -> bool {
        self.done || self.rejected.is_some() || self.last.is_some() || self.stored > 0
    }
}
