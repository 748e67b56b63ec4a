//! The job envelope: one versioned JSON shape for every job kind.
//!
//! ```json
//! {"v":1, "id":"…", "kind":"fetch-bars", "enqueued_at":"2026-11-23T04:00:00Z", "run_id":"2026-11-23",
//!  "priority":"interactive",
//!  "payload":{"symbol":"AAPL","timeframe":"1Day","start":"…","end":"…","adjustment":"raw","feed":"iex"}}
//! ```
//!
//! Messages come from other services, so [`Job::parse`] trusts nothing: the
//! size is bounded, every field is checked, and every refusal says why.
//! The JSON Schema in `shared/schema/job.schema.json` describes the same
//! shape for those services.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

use signal9_alpaca::class::{Classify, ErrorClass};
pub use signal9_alpaca::Priority;
use signal9_alpaca::{Adjustment, AssetClass, AssetStatus, BarRange, Feed, Symbol, Timeframe};

/// The envelope version this build reads and writes.
pub(crate) const ENVELOPE_VERSION: u32 = 1;
/// The largest message body accepted; real jobs are a few hundred bytes.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest job id accepted.
pub const MAX_ID_LEN: usize = 128;

/// The three kinds of work. The kind is also the routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// List one slice of the asset universe.
    SyncPage,
    /// Check one asset's status.
    StatusCheck,
    /// Fetch one symbol's bars.
    FetchBars,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 3] = [JobKind::SyncPage, JobKind::StatusCheck, JobKind::FetchBars];

    /// The wire name, also the routing key and the queue's suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SyncPage => "sync-page",
            JobKind::StatusCheck => "status-check",
            JobKind::FetchBars => "fetch-bars",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `fetch-bars`: one symbol's bars over one [`BarRange`]. On the wire the
/// range's fields sit beside `symbol` ([`FetchBarsWire`]: serde cannot
/// refuse unknown fields through a flattened struct, and the schema does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "FetchBarsWire", into = "FetchBarsWire")]
pub struct FetchBars {
    /// The symbol.
    pub symbol: Symbol,
    /// The range of its bars.
    pub range: BarRange,
}

/// The payload of a `fetch-bars` job as `shared/schema/job.schema.json`
/// spells it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchBarsWire {
    symbol: Symbol,
    timeframe: Timeframe,
    /// Inclusive start (RFC 3339).
    start: DateTime<Utc>,
    /// Inclusive end (RFC 3339).
    end: DateTime<Utc>,
    /// `raw` when absent.
    #[serde(default)]
    adjustment: Adjustment,
    /// The API's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    feed: Option<Feed>,
}

impl From<FetchBarsWire> for FetchBars {
    fn from(w: FetchBarsWire) -> Self {
        FetchBars {
            symbol: w.symbol,
            range: BarRange {
                timeframe: w.timeframe,
                start: w.start,
                end: w.end,
                adjustment: w.adjustment,
                feed: w.feed,
            },
        }
    }
}

impl From<FetchBars> for FetchBarsWire {
    fn from(f: FetchBars) -> Self {
        let BarRange {
            timeframe,
            start,
            end,
            adjustment,
            feed,
        } = f.range;
        FetchBarsWire {
            symbol: f.symbol,
            timeframe,
            start,
            end,
            adjustment,
            feed,
        }
    }
}

/// `status-check`: one asset, by symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCheck {
    /// The symbol.
    pub symbol: Symbol,
}

/// `sync-page`: one listing call's slice of the universe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncPage {
    /// The asset class to list.
    pub asset_class: AssetClass,
    /// Only this exchange, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// Only this status, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AssetStatus>,
}

/// A job's payload, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// See [`SyncPage`].
    SyncPage(SyncPage),
    /// See [`StatusCheck`].
    StatusCheck(StatusCheck),
    /// See [`FetchBars`].
    FetchBars(FetchBars),
}

impl Payload {
    /// The payload's kind.
    pub fn kind(&self) -> JobKind {
        match self {
            Payload::SyncPage(_) => JobKind::SyncPage,
            Payload::StatusCheck(_) => JobKind::StatusCheck,
            Payload::FetchBars(_) => JobKind::FetchBars,
        }
    }

    /// The symbol the job is about, if it is about one.
    pub fn symbol(&self) -> Option<&Symbol> {
        match self {
            Payload::SyncPage(_) => None,
            Payload::StatusCheck(p) => Some(&p.symbol),
            Payload::FetchBars(p) => Some(&p.symbol),
        }
    }
}

/// A parsed, checked job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Unique id (deterministic for scheduled work).
    pub id: String,
    /// When it was first enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// The sync run it belongs to, if any.
    pub run_id: Option<String>,
    /// Bulk or interactive.
    pub priority: Priority,
    /// What to do.
    pub payload: Payload,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u32,
    id: String,
    kind: String,
    enqueued_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
    #[serde(default)]
    priority: Priority,
    payload: serde_json::Value,
}

/// Why a message is not a job. Always permanent: the same bytes will never parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed job: {0}")]
pub struct JobError(pub String);

impl Classify for JobError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

impl Job {
    /// Builds a new job with the current time.
    pub fn new(id: impl Into<String>, payload: Payload, priority: Priority, run_id: Option<String>) -> Self {
        Job {
            id: id.into(),
            enqueued_at: Utc::now(),
            run_id,
            priority,
            payload,
        }
    }

    /// The routing key: the kind, with `.interactive` for interactive jobs.
    pub fn routing_key(&self) -> String {
        routing_key(self.payload.kind(), self.priority)
    }

    /// Parses and checks a message body, its dates against the window of
    /// [`crate::bounds`] at the current time.
    pub fn parse(body: &[u8]) -> Result<Job, JobError> {
        Job::parse_at(body, Utc::now())
    }

    /// [`Job::parse`] at `now`.
    pub fn parse_at(body: &[u8], now: DateTime<Utc>) -> Result<Job, JobError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(JobError(format!(
                "body of {} bytes exceeds the {MAX_BODY_BYTES}-byte limit",
                body.len()
            )));
        }
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| JobError(format!("not a job envelope: {}", cut(&e.to_string()))))?;
        if wire.v != ENVELOPE_VERSION {
            return Err(JobError(format!(
                "envelope version {} is not supported (expected {ENVELOPE_VERSION})",
                wire.v
            )));
        }
        if !id_ok(&wire.id) {
            return Err(JobError(format!(
                "id must be 1-{MAX_ID_LEN} characters of A-Z a-z 0-9 - _ . : /"
            )));
        }
        if let Some(run) = &wire.run_id {
            if !id_ok(run) {
                return Err(JobError(
                    "run_id must be 1-128 characters of A-Z a-z 0-9 - _ . : /".into(),
                ));
            }
        }
        let kind = JobKind::parse(&wire.kind).ok_or_else(|| {
            JobError(format!(
                "unknown kind {:?} (expected sync-page, status-check or fetch-bars)",
                cut(&wire.kind)
            ))
        })?;
        let bad = |e: serde_json::Error| JobError(format!("{kind} payload: {}", cut(&e.to_string())));
        let payload = match kind {
            JobKind::SyncPage => Payload::SyncPage(serde_json::from_value(wire.payload).map_err(bad)?),
            JobKind::StatusCheck => Payload::StatusCheck(serde_json::from_value(wire.payload).map_err(bad)?),
            JobKind::FetchBars => {
                let p: FetchBars = serde_json::from_value(wire.payload).map_err(bad)?;
                crate::bounds::check_range(p.range.start, p.range.end, now)
                    .map_err(|e| JobError(format!("fetch-bars payload: {e}")))?;
                if p.symbol.is_crypto_pair() && (p.range.feed.is_some() || p.range.adjustment != Adjustment::raw()) {
                    return Err(JobError(
                        "fetch-bars payload: crypto bars take no feed or adjustment".into(),
                    ));
                }
                Payload::FetchBars(p)
            }
        };
        Ok(Job {
            id: wire.id,
            enqueued_at: wire.enqueued_at,
            run_id: wire.run_id,
            priority: wire.priority,
            payload,
        })
    }

    /// The message body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = match &self.payload {
            Payload::SyncPage(p) => serde_json::to_value(p),
            Payload::StatusCheck(p) => serde_json::to_value(p),
            Payload::FetchBars(p) => serde_json::to_value(p),
        }
        .unwrap_or_default();
        let wire = Wire {
            v: ENVELOPE_VERSION,
            id: self.id.clone(),
            kind: self.payload.kind().as_str().to_owned(),
            enqueued_at: self.enqueued_at,
            run_id: self.run_id.clone(),
            priority: self.priority,
            payload,
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// True when `key` is the routing key of some kind at some priority: the
/// keys `{ns}.jobs` binds, so a message sent there with it reaches a queue.
pub fn is_routing_key(key: &str) -> bool {
    JobKind::ALL.into_iter().any(|kind| {
        Priority::ALL
            .into_iter()
            .any(|priority| routing_key(kind, priority) == key)
    })
}

/// The routing key of a kind at a priority.
pub fn routing_key(kind: JobKind, priority: Priority) -> String {
    match priority {
        Priority::Bulk => kind.as_str().to_owned(),
        Priority::Interactive => format!("{}.interactive", kind.as_str()),
        Priority::Backfill => format!("{}.backfill", kind.as_str()),
    }
}

fn cut(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(160).collect();
    if s.chars().count() > 160 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fetch() -> serde_json::Value {
        json!({"v":1,"id":"j-1","kind":"fetch-bars","enqueued_at":"2026-11-23T04:00:00Z","run_id":"2026-11-23",
               "payload":{"symbol":"BRK.B","timeframe":"1Day","start":"2026-11-20T00:00:00Z","end":"2026-11-21T00:00:00Z",
                          "adjustment":"raw","feed":"iex"}})
    }

    #[test]
    fn a_valid_job_round_trips() {
        let job = Job::parse(fetch().to_string().as_bytes()).unwrap();
        assert_eq!(job.priority, Priority::Bulk);
        assert_eq!(job.routing_key(), "fetch-bars");
        assert_eq!(Job::parse(&job.to_bytes()).unwrap(), job);
    }

    #[test]
    fn malformed_jobs_say_why() {
        let mut cases: Vec<(serde_json::Value, &str)> = Vec::new();
        let mut v = fetch();
        v["kind"] = json!("delete-all");
        cases.push((v, "unknown kind"));
        let mut v = fetch();
        v["payload"]["symbol"] = json!("../x");
        cases.push((v, "invalid symbol"));
        let mut v = fetch();
        v["payload"]["symbol"] = json!("A;DROP");
        cases.push((v, "invalid symbol"));
        let mut v = fetch();
        v["payload"]["timeframe"] = json!("2Day");
        cases.push((v, "invalid timeframe"));
        let mut v = fetch();
        v["payload"]["end"] = json!("2026-11-01T00:00:00Z");
        cases.push((v, "before start"));
        let mut v = fetch();
        v["v"] = json!(2);
        cases.push((v, "version"));
        let mut v = fetch();
        v["id"] = json!("a b");
        cases.push((v, "id must be"));
        let mut v = fetch();
        v["payload"]["start"] = json!(12345);
        cases.push((v, "payload"));
        let mut v = fetch();
        v["payload"]["extra"] = json!(1);
        cases.push((v, "unknown field"));
        for (value, expected) in cases {
            let err = Job::parse(value.to_string().as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
        assert!(Job::parse(b"not json")
            .unwrap_err()
            .to_string()
            .contains("not a job envelope"));
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(Job::parse(&huge).unwrap_err().to_string().contains("exceeds"));
        let long = json!({"v":1,"id":"x".repeat(10_000),"kind":"status-check","enqueued_at":"2026-11-23T04:00:00Z","payload":{"symbol":"A"}});
        assert!(Job::parse(long.to_string().as_bytes()).unwrap_err().to_string().len() < 300);
    }

    #[test]
    fn dates_outside_the_window_are_malformed_and_permanent() {
        let now: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        for (start, end, expected) in [
            (
                "-0002-01-01T00:00:00Z",
                "-0002-01-02T00:00:00Z",
                "outside the accepted window",
            ),
            (
                "+262142-01-01T00:00:00Z",
                "+262142-01-02T00:00:00Z",
                "outside the accepted window",
            ),
            (
                "1986-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "start 1986-01-01T00:00:00Z",
            ),
            (
                "2026-01-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
                "end 2027-01-01T00:00:00Z",
            ),
            ("2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z", "before start"),
        ] {
            let mut v = fetch();
            v["payload"]["start"] = json!(start);
            v["payload"]["end"] = json!(end);
            let error = Job::parse_at(v.to_string().as_bytes(), now).unwrap_err();
            assert!(error.to_string().contains(expected), "{start}..{end}: {error}");
            assert_eq!(error.class(), ErrorClass::Permanent);
        }
        assert!(Job::parse_at(fetch().to_string().as_bytes(), now).is_ok());
    }

    #[test]
    fn interactive_jobs_route_to_their_own_queue() {
        let mut v = fetch();
        v["priority"] = json!("interactive");
        assert_eq!(
            Job::parse(v.to_string().as_bytes()).unwrap().routing_key(),
            "fetch-bars.interactive"
        );
    }

    #[test]
    fn every_kind_round_trips_and_names_its_symbol() {
        let symbol = Symbol::parse("BTC/USD").unwrap();
        let payloads = [
            Payload::SyncPage(SyncPage {
                asset_class: AssetClass::Crypto,
                exchange: Some("CRYPTO".into()),
                status: Some(AssetStatus::Active),
            }),
            Payload::StatusCheck(StatusCheck { symbol: symbol.clone() }),
        ];
        for (payload, kind, named) in [
            (payloads[0].clone(), JobKind::SyncPage, None),
            (payloads[1].clone(), JobKind::StatusCheck, Some(&symbol)),
        ] {
            let job = Job::new(
                "sync:run-1:crypto",
                payload,
                Priority::Interactive,
                Some("run-1".into()),
            );
            assert_eq!(job.payload.kind(), kind);
            assert_eq!(job.payload.symbol(), named);
            assert_eq!(Job::parse(&job.to_bytes()).unwrap(), job);
        }
        let fetch = Job::parse(fetch().to_string().as_bytes()).unwrap();
        assert_eq!(fetch.payload.symbol().map(Symbol::as_str), Some("BRK.B"));
        assert_eq!(Priority::Bulk.as_str(), "bulk");
        assert_eq!(Priority::Interactive.as_str(), "interactive");
    }

    #[test]
    fn a_bad_run_id_is_refused_and_every_refusal_is_permanent() {
        let mut v = fetch();
        v["run_id"] = json!("run id with spaces");
        let error = Job::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(error.to_string().contains("run_id must be"), "{error}");
        assert_eq!(error.class(), ErrorClass::Permanent);
        // Control characters are dropped from a quoted value and long ones cut.
        let mut v = fetch();
        v["kind"] = json!(format!("bad\u{7}{}", "k".repeat(300)));
        let message = Job::parse(v.to_string().as_bytes()).unwrap_err().to_string();
        assert!(!message.contains('\u{7}') && message.contains('…'), "{message}");
    }
}
