//! The reply to a job: what a worker sends to the job's `reply_to` queue
//! (correlation id = job id) once the job succeeded or was dead-lettered.
//! One typed, versioned contract for the worker that writes it and for
//! `--wait`, the API and the console that read it; its JSON Schema is
//! `shared/schema/reply.schema.json`, beside the job envelope's.
//!
//! ```json
//! {"v": 1, "id": "job-1", "status": "succeeded",
//!  "detail": {"symbol": "AAPL", "bars": 21, "source": "api", "calls": 1, "batch": "…", "resumed": false}}
//! {"v": 1, "id": "job-2", "status": "dead-lettered", "error_class": "permanent", "error": "…"}
//! ```

use serde::{Deserialize, Serialize};

use crate::store::AssetChange;
use crate::sync::StatusChange;
use signal9_alpaca::AssetStatus;

/// The version of the reply format this build writes.
pub const REPLY_VERSION: u32 = 1;

fn version_one() -> u32 {
    1
}

/// One job's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReply {
    /// The reply format's version (replies of workers before it had none:
    /// read as 1).
    #[serde(default = "version_one")]
    pub v: u32,
    /// The job id; `None` for a message that named none.
    pub id: Option<String>,
    /// What became of the job.
    #[serde(flatten)]
    pub outcome: ReplyOutcome,
}

/// Succeeded, with what the job did, or dead-lettered, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ReplyOutcome {
    /// The job is done.
    Succeeded {
        /// What it did, by kind.
        detail: Detail,
    },
    /// The job went to the dead-letter queue.
    DeadLettered {
        /// `transient` or `permanent`.
        error_class: String,
        /// The last error, cut to a bounded length.
        error: String,
    },
}

/// What a succeeded job did, by its kind (told apart by their fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Detail {
    /// A `sync-page` job.
    SyncPage(SyncPageDetail),
    /// A `status-check` job.
    StatusCheck(StatusCheckDetail),
    /// A `fetch-bars` job.
    FetchBars(FetchBarsDetail),
}

/// Where a fetch-bars job found its bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BarsSource {
    /// Fetched from Alpaca (and stored).
    Api,
    /// The store held the range in full; no call.
    Store,
}

/// What a fetch-bars job did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchBarsDetail {
    /// The symbol.
    pub symbol: String,
    /// Bars stored (or found stored) for it.
    pub bars: u64,
    /// Where they came from.
    pub source: BarsSource,
    /// Calls its batch spent (`source` api); count each batch once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    /// The batch the job was fetched in (`source` api).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// True when the batch went on from a checkpoint (`source` api).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<bool>,
}

/// What a status-check job found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusCheckDetail {
    /// The ticker.
    pub symbol: String,
    /// The asset id.
    pub id: String,
    /// Its status now.
    pub status: AssetStatus,
    /// Whether it is tradable now.
    pub tradable: bool,
    /// What the store did with it.
    pub change: AssetChange,
}

/// What a sync-page job listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncPageDetail {
    /// Assets the page listed, valid or not.
    pub listed: u32,
    /// New assets.
    pub new: u32,
    /// Changed assets.
    pub updated: u32,
    /// Assets exactly as stored.
    pub unchanged: u32,
    /// Status or tradable changes.
    pub status_changes: Vec<StatusChange>,
    /// Assets validation refused.
    pub rejected: u32,
    /// Of those, stored ones stamped seen (so not delisted).
    pub rejected_seen: usize,
    /// The first refusal reasons.
    pub rejections: Vec<String>,
}

impl JobReply {
    /// A succeeded job's reply.
    pub fn succeeded(id: &str, detail: Detail) -> Self {
        JobReply {
            v: REPLY_VERSION,
            id: Some(id.to_owned()),
            outcome: ReplyOutcome::Succeeded { detail },
        }
    }

    /// A dead-lettered job's reply.
    pub fn dead_lettered(id: Option<String>, error_class: &str, error: String) -> Self {
        JobReply {
            v: REPLY_VERSION,
            id,
            outcome: ReplyOutcome::DeadLettered {
                error_class: error_class.to_owned(),
                error,
            },
        }
    }

    /// Reads a reply; `None` for a message that is not one.
    pub fn parse(data: &[u8]) -> Option<Self> {
        serde_json::from_slice(data).ok()
    }

    /// The body a worker sends.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The job id, or "" when the reply names none.
    pub fn job_id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// What the job did, if it succeeded.
    pub fn detail(&self) -> Option<&Detail> {
        match &self.outcome {
            ReplyOutcome::Succeeded { detail } => Some(detail),
            ReplyOutcome::DeadLettered { .. } => None,
        }
    }

    /// One line of why it failed (`error (class)`), if it did.
    pub fn failure(&self) -> Option<String> {
        match &self.outcome {
            ReplyOutcome::Succeeded { .. } => None,
            ReplyOutcome::DeadLettered { error_class, error } => Some(format!("{error} ({error_class})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_back_as_written_for_every_kind() {
        let fetched = JobReply::succeeded(
            "j1",
            Detail::FetchBars(FetchBarsDetail {
                symbol: "AAPL".into(),
                bars: 21,
                source: BarsSource::Api,
                calls: Some(1),
                batch: Some("b".into()),
                resumed: Some(false),
            }),
        );
        let cached = JobReply::succeeded(
            "j2",
            Detail::FetchBars(FetchBarsDetail {
                symbol: "MSFT".into(),
                bars: 5,
                source: BarsSource::Store,
                calls: None,
                batch: None,
                resumed: None,
            }),
        );
        let checked = JobReply::succeeded(
            "j3",
            Detail::StatusCheck(StatusCheckDetail {
                symbol: "AAPL".into(),
                id: "x".into(),
                status: AssetStatus::Active,
                tradable: true,
                change: AssetChange::Unchanged,
            }),
        );
        let listed = JobReply::succeeded(
            "j4",
            Detail::SyncPage(SyncPageDetail {
                listed: 3,
                new: 1,
                updated: 1,
                unchanged: 1,
                status_changes: vec![],
                rejected: 0,
                rejected_seen: 0,
                rejections: vec![],
            }),
        );
        let dead = JobReply::dead_lettered(None, "permanent", "bad symbol".into());
        for reply in [fetched, cached, checked, listed, dead] {
            assert_eq!(JobReply::parse(reply.to_json().as_bytes()), Some(reply));
        }
    }

    #[test]
    fn a_reply_of_a_worker_before_versions_reads_as_version_one() {
        let old = br#"{"id":"j","status":"succeeded","detail":{"symbol":"AAPL","bars":2,"source":"store"}}"#;
        let reply = JobReply::parse(old).expect("reads");
        assert_eq!(reply.v, 1);
        assert!(matches!(reply.detail(), Some(Detail::FetchBars(d)) if d.bars == 2));
        let dead = br#"{"id":null,"status":"dead-lettered","error_class":"transient","error":"down"}"#;
        assert_eq!(
            JobReply::parse(dead).and_then(|r| r.failure()),
            Some("down (transient)".into())
        );
        assert_eq!(JobReply::parse(b"{\"status\":\"maybe\"}"), None);
    }
}
