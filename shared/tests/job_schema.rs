//! The JSON Schema that other services read and the Rust types the worker
//! parses with agree: on valid examples both accept, on malformed ones both
//! refuse, and the checks the schema cannot express are listed apart.

use serde_json::{json, Value};
use signal9_shared::job::Job;

fn validator() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/job.schema.json")).expect("schema file");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

fn envelope(kind: &str, payload: Value) -> Value {
    json!({"v": 1, "id": "job-1", "kind": kind, "enqueued_at": "2026-11-23T04:00:00Z", "payload": payload})
}

fn bars(symbol: &str, timeframe: &str) -> Value {
    envelope(
        "fetch-bars",
        json!({"symbol": symbol, "timeframe": timeframe, "start": "2026-11-20T00:00:00Z", "end": "2026-11-21T00:00:00Z"}),
    )
}

fn with(mut v: Value, path: &[&str], value: Value) -> Value {
    let mut at = &mut v;
    for key in &path[..path.len() - 1] {
        at = &mut at[*key];
    }
    at[path[path.len() - 1]] = value;
    v
}

fn valid_examples() -> Vec<Value> {
    let mut out = vec![
        bars("AAPL", "1Day"),
        bars("BRK.B", "15T"),
        bars("BTC/USD", "1Hour"),
        bars("ABCDW", "59Min"),
        bars("AAPL240119C00150000", "12Month"),
        with(
            bars("AAPL", "1Week"),
            &["payload", "adjustment"],
            json!("split,dividend"),
        ),
        with(bars("AAPL", "3M"), &["payload", "feed"], json!("sip")),
        with(bars("AAPL", "1Day"), &["priority"], json!("interactive")),
        with(bars("AAPL", "1Day"), &["run_id"], json!("2026-11-23")),
        envelope("status-check", json!({"symbol": "BF.B"})),
        envelope("sync-page", json!({"asset_class": "us_equity"})),
        envelope(
            "sync-page",
            json!({"asset_class": "crypto", "exchange": "CRYPTO", "status": "active"}),
        ),
    ];
    out.push(with(bars("AAPL", "1Day"), &["future_top_level_field"], json!(true)));
    out
}

fn invalid_examples() -> Vec<Value> {
    vec![
        bars("../x", "1Day"),
        bars("A;DROP", "1Day"),
        bars("aapl", "1Day"),
        bars("A/B/C", "1Day"),
        bars(&"Z".repeat(22), "1Day"),
        bars("AAPL", "2Day"),
        bars("AAPL", "60Min"),
        bars("AAPL", "5Month"),
        with(bars("AAPL", "1Day"), &["v"], json!(2)),
        with(bars("AAPL", "1Day"), &["kind"], json!("delete-all")),
        with(bars("AAPL", "1Day"), &["id"], json!("has space")),
        with(bars("AAPL", "1Day"), &["id"], json!("")),
        with(bars("AAPL", "1Day"), &["enqueued_at"], json!("yesterday")),
        with(bars("AAPL", "1Day"), &["priority"], json!("urgent")),
        with(bars("AAPL", "1Day"), &["payload", "start"], json!(1763614800)),
        with(bars("AAPL", "1Day"), &["payload", "start"], json!("2026-13-45")),
        with(bars("AAPL", "1Day"), &["payload", "adjustment"], json!("none")),
        with(bars("AAPL", "1Day"), &["payload", "feed"], json!("nyse")),
        with(bars("AAPL", "1Day"), &["payload", "unexpected"], json!(1)),
        envelope("status-check", json!({})),
        envelope("sync-page", json!({"asset_class": "forex"})),
        json!({"v": 1, "id": "x", "kind": "status-check", "payload": {"symbol": "A"}}),
        json!("just a string"),
    ]
}

#[test]
fn valid_examples_pass_both() {
    let schema = validator();
    for example in valid_examples() {
        assert!(schema.is_valid(&example), "schema refused {example}");
        Job::parse(example.to_string().as_bytes()).unwrap_or_else(|e| panic!("types refused {example}: {e}"));
    }
}

#[test]
fn invalid_examples_fail_both() {
    let schema = validator();
    for example in invalid_examples() {
        assert!(!schema.is_valid(&example), "schema accepted {example}");
        assert!(
            Job::parse(example.to_string().as_bytes()).is_err(),
            "types accepted {example}"
        );
    }
}

#[test]
fn semantic_checks_beyond_the_schema_are_the_documented_ones() {
    let schema = validator();
    let reversed = with(bars("AAPL", "1Day"), &["payload", "end"], json!("2026-11-01T00:00:00Z"));
    let crypto_feed = with(bars("BTC/USD", "1Day"), &["payload", "feed"], json!("iex"));
    for example in [reversed, crypto_feed] {
        assert!(schema.is_valid(&example), "the schema cannot see this: {example}");
        assert!(
            Job::parse(example.to_string().as_bytes()).is_err(),
            "the worker must refuse {example}"
        );
    }
}

fn reply_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/reply.schema.json"))
        .expect("reply schema file");
    let schema: Value = serde_json::from_str(&text).expect("reply schema is JSON");
    jsonschema::options().build(&schema).expect("reply schema compiles")
}

/// The replies a worker writes (through the typed `JobReply`) pass the
/// published schema, and malformed ones fail both the schema and the type.
#[test]
fn replies_the_worker_writes_pass_the_reply_schema_and_malformed_ones_fail_both() {
    use signal9_alpaca::AssetStatus;
    use signal9_shared::reply::{BarsSource, Detail, FetchBarsDetail, JobReply, StatusCheckDetail, SyncPageDetail};
    use signal9_shared::store::AssetChange;
    let written = [
        JobReply::succeeded(
            "j1",
            Detail::FetchBars(FetchBarsDetail {
                symbol: "AAPL".into(),
                bars: 21,
                source: BarsSource::Api,
                calls: Some(2),
                batch: Some("b1".into()),
                resumed: Some(true),
            }),
        ),
        JobReply::succeeded(
            "j2",
            Detail::StatusCheck(StatusCheckDetail {
                symbol: "AAPL".into(),
                id: "a-1".into(),
                status: AssetStatus::Active,
                tradable: false,
                change: AssetChange::Updated {
                    status: None,
                    tradable: Some((true, false)),
                    relisted: false,
                },
            }),
        ),
        JobReply::succeeded(
            "j3",
            Detail::SyncPage(SyncPageDetail {
                listed: 2,
                new: 2,
                updated: 0,
                unchanged: 0,
                status_changes: vec![],
                rejected: 0,
                rejected_seen: 0,
                rejections: vec![],
            }),
        ),
        JobReply::dead_lettered(Some("j4".into()), "permanent", "no such symbol".into()),
        JobReply::dead_lettered(None, "transient", "broker gone".into()),
    ];
    let schema = reply_validator();
    for reply in &written {
        let value: Value = serde_json::from_str(&reply.to_json()).expect("JSON");
        assert_eq!(value["v"], 1, "{value}");
        assert!(schema.is_valid(&value), "the schema refuses {value}");
    }
    let malformed = [
        json!({"v": 1, "id": "j", "status": "succeeded"}),
        json!({"v": 1, "id": "j", "status": "dead-lettered", "error": "x"}),
        json!({"v": 1, "id": "j", "status": "maybe"}),
        json!({"v": 2, "id": "j", "status": "dead-lettered", "error_class": "transient", "error": "x"}),
        json!({"v": 1, "id": "j", "status": "succeeded", "detail": {"symbol": "AAPL", "bars": -1, "source": "api"}}),
    ];
    for value in malformed {
        assert!(!schema.is_valid(&value), "the schema takes {value}");
    }
    // The type refuses what has no valid shape at all.
    for value in [
        &json!({"v": 1, "id": "j", "status": "succeeded"}),
        &json!({"status": "maybe"}),
    ] {
        assert!(
            JobReply::parse(value.to_string().as_bytes()).is_none(),
            "the type takes {value}"
        );
    }
}
