//! No key value in any output: a whole job cycle at `trace` log level with
//! known key values, the key read from Secrets Manager, then the error paths
//! (a refused key, a missing secret, keys from the environment refused, the
//! dead letters and the operator commands that show them). Every byte the
//! processes print is collected and searched for both halves of the key.
#![allow(clippy::unwrap_used)]

use signal9_e2e::{active_symbols, eventually, fetch_day, put_secret, rotate_sim_keys, secret_json, text, Stack};
use std::time::Duration;

const KEY: &str = "AKLEAKCHECK7Q2W9E4R1";
const SECRET: &str = "leakcheck-Secret-9f8e7d6c5b4a3z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_value_appears_in_any_log_error_or_command_output() {
    let mut stack = Stack::start(&["--assets", "300", "--key", KEY, "--secret", SECRET]).unwrap();
    let name = format!("{}/alpaca", stack.namespace);
    put_secret(&name, &secret_json(KEY, SECRET, true)).await.unwrap();
    stack.use_secret(&name);
    stack.extra_env.push(("RUST_LOG".into(), "trace".into()));
    let mut captured = Vec::new();

    // The whole cycle: sync, bars, the worker at trace level throughout.
    stack.start_worker(&["--concurrency", "2"]).unwrap();
    let sync = stack
        .producer(&["sync", "--run-id", "leak-1", "--wait", "--wait-timeout-secs", "120"])
        .await
        .unwrap();
    assert!(sync.status.success(), "{}\n{}", text(&sync), stack.worker_logs());
    captured.push(text(&sync));
    let symbols = active_symbols(42, 300, 5);
    let file = stack.symbols_file(&symbols);
    let fetch = stack
        .producer(&fetch_day(&file, "2026-11-18", Some("60")))
        .await
        .unwrap();
    assert!(fetch.status.success(), "{}\n{}", text(&fetch), stack.worker_logs());
    captured.push(text(&fetch));

    // A refused key: the API stops accepting it and the secret still holds
    // it, so the job fails after one fresh read of the secret.
    rotate_sim_keys(&stack.sim.base_url(), "other-key", "other-secret")
        .await
        .unwrap();
    let refused = stack
        .producer(&fetch_day(&file, "2026-11-19", Some("60")))
        .await
        .unwrap();
    assert!(
        text(&refused).contains("dead-lettered"),
        "the refused jobs are dead-lettered: {}",
        text(&refused)
    );
    captured.push(text(&refused));
    let list = text(&stack.producer(&["dlq", "list"]).await.unwrap());
    let json = text(&stack.producer(&["dlq", "list", "--json"]).await.unwrap());
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap_or("{}")).unwrap_or_default();
    let id = first["id"].as_str().unwrap_or_default().to_owned();
    assert!(!id.is_empty(), "a dead letter is listed: {json}");
    let show = text(&stack.producer(&["dlq", "show", &id]).await.unwrap());
    let dead = format!("{list}\n{json}\n{show}");
    captured.push(dead.clone());
    assert!(
        dead.contains("401") || dead.contains("403"),
        "the dead letters name the refusal: {dead}"
    );

    // Keys from the environment, refused, in a process that fails outright.
    let mut direct = stack.producer(&["ingest-direct", "--days", "1"]).await.unwrap();
    captured.push(text(&direct));
    stack.extra_env.push(("SIGNAL9_ALPACA_SECRET".into(), String::new()));
    stack.extra_env.push(("APCA_API_KEY_ID".into(), KEY.into()));
    stack.extra_env.push(("APCA_API_SECRET_KEY".into(), SECRET.into()));
    direct = stack.producer(&["ingest-direct", "--days", "1"]).await.unwrap();
    assert!(!direct.status.success(), "a refused key fails the command");
    captured.push(text(&direct));
    // --help with the keys in the environment.
    for binary in ["signal9-producer", "signal9-worker"] {
        let help = std::process::Command::new(signal9_e2e::bin_dir().join(binary))
            .args(if binary == "signal9-producer" {
                vec!["ingest-direct", "--help"]
            } else {
                vec!["--help"]
            })
            .envs(stack.env())
            .output()
            .unwrap();
        captured.push(text(&help));
    }

    // A missing secret, at start.
    stack
        .extra_env
        .push(("SIGNAL9_ALPACA_SECRET".into(), format!("{}/missing", stack.namespace)));
    let index = stack.start_worker(&[]).unwrap();
    let stopped = eventually(Duration::from_secs(30), || {
        let done = stack.worker(index).try_wait().unwrap();
        async move { done.is_some() }
    })
    .await;
    assert!(stopped, "the worker without its secret stops");

    captured.push(stack.worker_logs());
    let all = captured.join("\n");
    assert!(
        all.contains("TRACE") && all.len() > 100_000,
        "trace logs were captured ({} bytes)",
        all.len()
    );
    assert!(all.contains("has no secret"), "the missing secret was reported");
    for (what, value) in [("key id", KEY), ("secret key", SECRET)] {
        if let Some(at) = all.find(value) {
            let from = all[..at].char_indices().rev().nth(300).map_or(0, |(i, _)| i);
            panic!("the {what} appears in the output:\n{}", &all[from..at + value.len()]);
        }
    }
    stack.cleanup().await;
}
