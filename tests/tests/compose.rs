//! compose/ checked without a Docker engine: the file's structure, and the
//! settings in `.env.example` against the ones the binaries accept.
//! (`scripts/check-compose` validates it against the Compose schema.)
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

fn compose_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../compose")
}

fn compose() -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(compose_dir().join("docker-compose.yml")).unwrap();
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    // `<<: *signal9` merges, as Compose does.
    value.apply_merge().unwrap();
    for service in ["sim", "scheduler", "worker", "init-store", "api"] {
        value["services"][service].apply_merge().unwrap();
    }
    value
}

/// The variables a binary's `--help` names as `[env: NAME]`.
fn env_names(binary: &str, args: &[&str]) -> BTreeSet<String> {
    let out = std::process::Command::new(signal9_e2e::bin_dir().join(binary))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    help.split("env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

fn env_example() -> BTreeSet<String> {
    std::fs::read_to_string(compose_dir().join(".env.example"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

#[test]
fn the_compose_file_has_every_service_and_three_workers() {
    let file = compose();
    let services = file["services"].as_mapping().unwrap();
    for name in [
        "rabbitmq",
        "redis",
        "dynamodb",
        "secrets",
        "sim",
        "scheduler",
        "worker",
        "init-store",
        "api",
    ] {
        assert!(services.contains_key(name), "service {name}");
    }
    let api = &file["services"]["api"];
    assert_eq!(api["command"][0].as_str(), Some("signal9-api"));
    assert_eq!(
        api["ports"][0].as_str(),
        Some("127.0.0.1:8081:8081"),
        "the example tokens are public: loopback only"
    );
    let tokens = api["environment"]["SIGNAL9_API_TOKENS_FILE"].as_str().unwrap();
    assert!(
        api["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v.as_str().unwrap().ends_with(tokens) || v.as_str().unwrap().contains(&format!(":{tokens}"))),
        "the tokens file is mounted where the API reads it"
    );
    let lines = std::fs::read_to_string(compose_dir().join("api-tokens")).unwrap();
    assert!(lines.lines().any(|l| l.starts_with("operate ")), "{lines}");
    assert!(file["services"]["rabbitmq"]["image"]
        .as_str()
        .unwrap()
        .contains("management"));
    let worker = &file["services"]["worker"];
    assert_eq!(worker["deploy"]["replicas"].as_u64(), Some(3));
    assert_eq!(worker["command"][0].as_str(), Some("signal9-worker"));
    assert_eq!(file["services"]["scheduler"]["command"][1].as_str(), Some("schedule"));
    // The anchors resolve: every signal9 service builds the one image.
    for name in ["sim", "scheduler", "worker", "init-store", "api"] {
        assert_eq!(
            file["services"][name]["build"]["dockerfile"].as_str(),
            Some("compose/Dockerfile"),
            "{name}"
        );
    }
}

#[test]
fn env_example_names_every_setting_of_the_binaries_and_nothing_unknown() {
    let mut known = BTreeSet::new();
    known.extend(env_names("signal9-worker", &[]));
    known.extend(env_names("signal9-producer", &["schedule"]));
    known.extend(env_names("signal9-producer", &["fetch-bars"]));
    known.extend(env_names("signal9-api", &[]));
    let example = env_example();
    for name in env_names("signal9-api", &[]) {
        let set_on_the_service = [
            "SIGNAL9_API_ADDR",
            "SIGNAL9_API_TOKENS_FILE",
            "SIGNAL9_API_ALLOW_EXAMPLE_TOKENS",
        ]
        .contains(&name.as_str());
        assert!(
            example.contains(&name) || set_on_the_service,
            ".env.example lacks the API setting {name}"
        );
    }
    let worker = env_names("signal9-worker", &[]);
    for name in &worker {
        assert!(example.contains(name), ".env.example lacks the worker setting {name}");
    }
    let outside = [
        "COMPOSE_PROJECT_NAME",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "SIM_KEY_ID",
        "SIM_SECRET_KEY",
        "RUST_LOG",
        "SIGNAL9_LOG_FORMAT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ];
    for name in &example {
        assert!(
            known.contains(name) || outside.contains(&name.as_str()),
            ".env.example sets {name}, which no binary reads"
        );
    }
}

#[test]
fn the_dockerfile_is_multi_stage_and_ships_the_three_binaries() {
    let text = std::fs::read_to_string(compose_dir().join("Dockerfile")).unwrap();
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "a build stage and a runtime stage");
    for binary in ["signal9-producer", "signal9-worker", "signal9-api", "alpaca-sim"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("COPY --from=build") && l.contains(&format!("release/{binary}"))),
            "{binary} is copied into the runtime image"
        );
    }
    assert!(text.contains("USER "), "the runtime does not run as root");
}

#[test]
fn the_alert_rules_cover_the_platforms_alerts_and_name_real_metrics() {
    let text = std::fs::read_to_string(compose_dir().join("prometheus/alerts.yml")).unwrap();
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let alerts: Vec<&serde_yaml_ng::Value> = rules["groups"][0]["rules"].as_sequence().unwrap().iter().collect();
    let names: Vec<&str> = alerts.iter().filter_map(|r| r["alert"].as_str()).collect();
    for wanted in [
        "Signal9ApiFailureRateHigh",
        "Signal9RateLimited",
        "Signal9SyncFailureRateHigh",
        "Signal9BarFetchFailureRateHigh",
        "Signal9ApiLatencyHigh",
        "Signal9DeadLetterQueueGrowing",
        "Signal9NoWorkerAlive",
    ] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    // Every signal9 metric a rule reads is one the code registers.
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/src/telemetry/metrics.rs"),
    )
    .unwrap();
    for rule in &alerts {
        let expr = rule["expr"].as_str().unwrap();
        for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(name) = token.strip_prefix("signal9_") {
                let base = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum");
                assert!(
                    source.contains(&format!("\"signal9_{base}\"")),
                    "{} reads signal9_{base}, which no code registers",
                    rule["alert"].as_str().unwrap_or("?")
                );
            }
        }
    }
}
