//! `signal9-api` end to end: the real broker, Redis, a worker, the store
//! and the simulator over HTTP. Alpaca's own SDK and the project's client
//! read bars and assets through it; covered ranges cost no call, missing
//! ones are fetched by interactive jobs; tokens and roles are enforced;
//! the same bars come as JSON pages or as one Arrow stream (pyarrow).
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use signal9_alpaca::BarRange;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use signal9_alpaca::{Adjustment, BarsQuery, Credentials, Symbol, Timeframe, Unmetered};
use signal9_e2e::{client_with, sim_client, ApiProcess, Stack};

const READER: &str = "reader-token-3f9a";
const OPERATOR: &str = "operator-token-77c1";

fn python() -> String {
    std::env::var("SIGNAL9_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/signal9-venv/bin/python")
    })
}

/// A stack with one worker, the assets synced, and the API.
async fn started(sim_args: &[&str], api_env: &[(&str, &str)], worker: bool) -> (Stack, ApiProcess) {
    let mut stack = Stack::start(sim_args).unwrap();
    if worker {
        stack.start_worker(&[]).unwrap();
        let out = stack
            .producer(&["sync", "--run-id", "api-sync", "--wait", "--wait-timeout-secs", "120"])
            .await
            .unwrap();
        assert!(out.status.success(), "sync: {}", signal9_e2e::text(&out));
    }
    let api = stack
        .start_api(&[("read", READER), ("operate", OPERATOR)], api_env)
        .unwrap();
    (stack, api)
}

async fn get(url: &str, token: Option<&str>) -> (u16, Option<String>, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let source = response
        .headers()
        .get("x-signal9-source")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, source, response.text().await.unwrap())
}

#[tokio::test]
async fn alpaca_py_reads_from_signal9_api_the_bars_and_assets_the_simulator_serves() {
    let (mut stack, api) = started(&[], &[], true).await;
    let start = "2026-11-09T00:00:00+00:00";
    let end = "2026-11-21T00:00:00+00:00";
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/sdk_against_api.py");
    let out = Command::new(python())
        .args([script, &api.base_url(), OPERATOR, &stack.sim.base_url(), start, end])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (scripts/test installs alpaca-py): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "alpaca-py against signal9-api: {stdout}\n{}\napi log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        api.logs()
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["differences"], Value::Array(vec![]), "{report}");
    let minute: u64 = report["minute_bars"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(minute > 20_000, "several pages of 10,000 bars: {report}");
    assert!(report["assets"].as_u64().unwrap() > 1000, "{report}");

    // The same request again is answered from the store: no call.
    let calls = stack.data_calls().await.unwrap();
    let url = format!(
        "{}/v2/stocks/bars?symbols=AAPL,MSFT,BRK.B&timeframe=1Min&start={}&end={}&limit=10000",
        api.base_url(),
        start.replace('+', "%2B"),
        end.replace('+', "%2B")
    );
    let (status, source, body) = get(&url, Some(READER)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(source.as_deref(), Some("store"));
    let page: Value = serde_json::from_str(&body).unwrap();
    assert!(page["next_page_token"].is_string(), "a full page names the next");
    assert_eq!(
        stack.data_calls().await.unwrap(),
        calls,
        "a covered range costs no Alpaca call"
    );
    stack.cleanup().await;
}

fn arrow_report(
    api: &ApiProcess,
    token: &str,
    symbols: &str,
    timeframe: &str,
    range: (&str, &str),
    sort: &str,
) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/arrow_against_api.py");
    let out = Command::new(python())
        .args([
            script,
            &api.base_url(),
            token,
            symbols,
            timeframe,
            range.0,
            range.1,
            sort,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (scripts/test installs pyarrow): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pyarrow against signal9-api: {stdout}\n{}\napi log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        api.logs()
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[tokio::test]
async fn the_same_request_as_json_and_as_an_arrow_stream_gives_the_same_bars() {
    let (mut stack, api) = started(&[], &[], true).await;
    let range = ("2026-10-26T00:00:00Z", "2026-11-21T00:00:00Z");
    // Minute bars of three symbols, several JSON pages; then daily bars newest first.
    for (symbols, timeframe, sort, at_least) in [
        ("AAPL,BRK.B,MSFT", "1Min", "asc", 20_000),
        ("AAPL,MSFT", "1Day", "desc", 30),
    ] {
        let report = arrow_report(&api, READER, symbols, timeframe, range, sort);
        assert_eq!(report["differences"], Value::Array(vec![]), "{report}");
        assert_eq!(report["content_type"], "application/vnd.apache.arrow.stream");
        let bars = report["json_bars"].as_u64().unwrap();
        assert!(bars >= at_least, "{report}");
        assert_eq!(report["arrow_bars"].as_u64().unwrap(), bars, "{report}");
        assert_eq!(report["pandas_rows"].as_u64().unwrap(), bars, "{report}");
        assert_eq!(report["polars_rows"].as_u64().unwrap(), bars, "{report}");
        assert_eq!(report["pandas_timestamp_dtype"], "datetime64[ns, UTC]", "{report}");
    }

    // Same auth, same pricing headers; an Arrow stream is not paged.
    let url = format!(
        "{}/v2/stocks/bars?symbols=AAPL&timeframe=1Day&start={}&end={}",
        api.base_url(),
        range.0,
        range.1
    );
    let client = reqwest::Client::new();
    let arrow = "application/vnd.apache.arrow.stream";
    let anonymous = client.get(&url).header("Accept", arrow).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let paged = client
        .get(format!("{url}&limit=10"))
        .header("Accept", arrow)
        .header("Authorization", format!("Bearer {READER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(paged.status().as_u16(), 400);
    assert!(paged
        .text()
        .await
        .unwrap()
        .contains("limit and page_token do not apply"));
    let calls = stack.data_calls().await.unwrap();
    let stored = client
        .get(&url)
        .header("Accept", arrow)
        .header("Authorization", format!("Bearer {READER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status().as_u16(), 200);
    assert_eq!(stored.headers()["x-signal9-source"], "store");
    assert_eq!(stored.headers()["x-signal9-calls"], "0");
    assert_eq!(
        stack.data_calls().await.unwrap(),
        calls,
        "a covered range costs no call"
    );
    stack.cleanup().await;
}

#[tokio::test]
async fn the_projects_client_reads_bars_through_signal9_api_across_pages() {
    let (mut stack, api) = started(&[], &[], true).await;
    let query = BarsQuery {
        symbols: ["AAPL", "BRK.B", "MSFT"]
            .iter()
            .map(|s| Symbol::parse(s).unwrap())
            .collect(),
        limit: Some(200),
        range: BarRange {
            timeframe: Timeframe::HOUR,
            start: "2026-10-01T00:00:00Z".parse().unwrap(),
            end: "2026-11-20T00:00:00Z".parse().unwrap(),
            adjustment: Adjustment::raw(),
            feed: None,
        },
    };
    let through_api = client_with(
        &api.base_url(),
        Duration::from_secs(60),
        Credentials::new("signal9", OPERATOR),
        Arc::new(Unmetered),
    );
    let ours = through_api.fetch_bars(&query).await.unwrap();
    let theirs = sim_client(&stack.sim.base_url(), Duration::from_secs(30))
        .fetch_bars(&query)
        .await
        .unwrap();
    assert!(ours.calls > 2, "pages of 200 bars: {} calls", ours.calls);
    assert_eq!(ours.bars.len(), 3);
    assert_eq!(ours.bars, theirs.bars, "signal9-api answers what the API does");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_partly_stored_range_is_mixed_and_only_the_rest_is_fetched() {
    let (mut stack, api) = started(&[], &[], true).await;
    let url = |end: &str| {
        format!(
            "{}/v2/stocks/AAPL/bars?timeframe=1Day&start=2026-10-01T00:00:00Z&end={end}",
            api.base_url()
        )
    };
    let before = stack.data_calls().await.unwrap();
    let (status, source, body) = get(&url("2026-10-31T00:00:00Z"), Some(READER)).await;
    assert_eq!((status, source.as_deref()), (200, Some("fetched")), "{body}");
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["symbol"], "AAPL");
    let october = first["bars"].as_array().unwrap().len();
    assert!(october >= 20, "{body}");
    let after_first = stack.data_calls().await.unwrap();
    assert!(after_first > before);

    let (status, source, body) = get(&url("2026-11-20T00:00:00Z"), Some(READER)).await;
    assert_eq!((status, source.as_deref()), (200, Some("mixed")), "{body}");
    let both: Value = serde_json::from_str(&body).unwrap();
    assert!(both["bars"].as_array().unwrap().len() > october);
    assert_eq!(
        stack.data_calls().await.unwrap(),
        after_first + 1,
        "only the uncovered November is fetched, in one call"
    );

    let (status, source, _) = get(&url("2026-11-20T00:00:00Z"), Some(READER)).await;
    assert_eq!((status, source.as_deref()), (200, Some("store")));
    assert_eq!(stack.data_calls().await.unwrap(), after_first + 1);

    // A start after now (within the accepted window) holds no bar and
    // costs nothing; a start years ahead is out of bounds: 400.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%d");
    let (status, source, body) = get(
        &format!(
            "{}/v2/stocks/bars?symbols=AAPL&timeframe=1Day&start={tomorrow}&end={tomorrow}T12:00:00Z",
            api.base_url()
        ),
        Some(READER),
    )
    .await;
    assert_eq!((status, source.as_deref()), (200, Some("store")), "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["bars"],
        serde_json::json!({})
    );
    let (status, _, body) = get(
        &format!(
            "{}/v2/stocks/bars?symbols=AAPL&timeframe=1Day&start=2031-01-01&end=2031-02-01",
            api.base_url()
        ),
        Some(READER),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("outside the accepted window"), "{body}");
    assert_eq!(stack.data_calls().await.unwrap(), after_first + 1);

    // Bad parameters get Alpaca's 400, with a reason.
    let (status, _, body) = get(
        &format!("{}/v2/stocks/bars?symbols=AAPL&timeframe=9Fortnight", api.base_url()),
        Some(READER),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid timeframe"), "{body}");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_corporate_action_evicts_the_cached_adjusted_range_so_the_next_request_fetches_it_again() {
    let (mut stack, api) = started(&[], &[], true).await;
    let store = stack.store(false).await.unwrap();
    let url = format!(
        "{}/v2/stocks/AAPL/bars?timeframe=1Day&adjustment=split&start=2026-10-01T00:00:00Z&end=2026-10-31T00:00:00Z",
        api.base_url()
    );
    let (_, source, body) = get(&url, Some(READER)).await;
    assert_eq!(source.as_deref(), Some("fetched"), "{body}");
    let (_, source, _) = get(&url, Some(READER)).await;
    assert_eq!(source.as_deref(), Some("store"), "now covered, and cached");

    // A split: the store drops the adjusted series; a worker's outbox relay
    // publishes bars.invalidated, and the API drops its cached ranges.
    let action = signal9_alpaca::CorporateAction {
        id: "5b1f7a9e-0000-4000-8000-00000000aa01".into(),
        kind: signal9_alpaca::ActionKind::ForwardSplit,
        symbol: Symbol::parse("AAPL").unwrap(),
        ex_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        terms: "4:1".into(),
    };
    let dropped = store.apply_action(&action, chrono::Utc::now()).await.unwrap().unwrap();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    let refetched = signal9_e2e::eventually(Duration::from_secs(20), || async {
        get(&url, Some(READER)).await.1.as_deref() == Some("fetched")
    })
    .await;
    assert!(
        refetched,
        "the cached range was served after its series was dropped\n{}",
        api.logs()
    );
    assert!(api.logs().contains("bars.invalidated"), "{}", api.logs());
    stack.cleanup().await;
}

#[tokio::test]
async fn on_dynamodb_a_missing_range_is_fetched_once_then_answered_from_the_store() {
    let mut stack = Stack::start(&[]).unwrap();
    stack.store(true).await.unwrap();
    stack.start_worker(&[]).unwrap();
    let api = stack.start_api(&[("read", READER)], &[]).unwrap();
    let url = format!(
        "{}/v2/stocks/bars?symbols=AAPL,MSFT&timeframe=1Day&start=2026-09-01T00:00:00Z&end=2026-10-31T00:00:00Z&limit=50",
        api.base_url()
    );
    let (status, source, body) = get(&url, Some(READER)).await;
    assert_eq!(
        (status, source.as_deref()),
        (200, Some("fetched")),
        "{body}\n{}",
        api.logs()
    );
    let first: Value = serde_json::from_str(&body).unwrap();
    let token = first["next_page_token"].as_str().unwrap().to_owned();
    let calls = stack.data_calls().await.unwrap();
    let (status, source, body) = get(&format!("{url}&page_token={token}"), Some(READER)).await;
    assert_eq!((status, source.as_deref()), (200, Some("store")), "{body}");
    let second: Value = serde_json::from_str(&body).unwrap();
    let total: usize = [&first, &second]
        .iter()
        .flat_map(|page| page["bars"].as_object().unwrap().values())
        .map(|bars| bars.as_array().unwrap().len())
        .sum();
    assert_eq!(stack.data_calls().await.unwrap(), calls, "the next page costs no call");
    let truth = sim_client(&stack.sim.base_url(), Duration::from_secs(30))
        .fetch_bars(&BarsQuery {
            symbols: vec![Symbol::parse("AAPL").unwrap(), Symbol::parse("MSFT").unwrap()],
            limit: None,
            range: BarRange {
                timeframe: Timeframe::DAY,
                start: "2026-09-01T00:00:00Z".parse().unwrap(),
                end: "2026-10-31T00:00:00Z".parse().unwrap(),
                adjustment: Adjustment::raw(),
                feed: None,
            },
        })
        .await
        .unwrap();
    let expected: usize = truth.bars.values().map(Vec::len).sum();
    assert!(expected > 80, "two symbols, two months: {expected}");
    assert_eq!(total, expected, "every bar, over two pages of 50");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_range_no_worker_fetches_answers_504_when_the_wait_runs_out() {
    let (mut stack, api) = started(&[], &[("SIGNAL9_API_FETCH_TIMEOUT_SECS", "2")], false).await;
    let (status, _, body) = get(
        &format!(
            "{}/v2/stocks/bars?symbols=AAPL&timeframe=1Day&start=2026-10-01T00:00:00Z&end=2026-10-31T00:00:00Z",
            api.base_url()
        ),
        Some(READER),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("did not finish within 2 s"),
        "{body}"
    );
    // The job waits in the interactive lane for a worker.
    let depth = signal9_e2e::queue_depth(&format!("{}.fetch-bars.interactive", stack.namespace))
        .await
        .unwrap();
    assert_eq!(depth, 1);
    stack.cleanup().await;
}

/// Logs in to the console; returns the session cookie and the CSRF token of the DLQ page.
async fn console_login(base: &str, token: &str) -> (String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .post(format!("{base}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303, "login with a valid token");
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = client
        .get(format!("{base}/console/dlq"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    (cookie, csrf)
}

async fn console_post(base: &str, path: &str, cookie: &str, body: &str) -> u16 {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{base}{path}"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn tokens_and_roles_are_enforced_and_no_token_reaches_the_log() {
    let (mut stack, api) = started(&[], &[], false).await;
    let base = api.base_url();
    let bars = format!("{base}/v2/stocks/bars?symbols=AAPL&timeframe=1Day&start=2026-10-01");
    let status = |url: String, headers: Vec<(&'static str, String)>| async move {
        let mut request = reqwest::Client::new().get(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (code, body) = status(bars.clone(), vec![]).await;
    assert_eq!(code, 401, "no token: {body}");
    assert!(body.contains("Bearer"), "the answer says how to authenticate: {body}");
    assert_eq!(
        status(bars.clone(), vec![("authorization", "Bearer bogus-token-x81".into())])
            .await
            .0,
        401
    );
    assert_eq!(
        status(
            format!("{base}/v2/assets/AAPL"),
            vec![
                ("apca-api-key-id", "someone".into()),
                ("apca-api-secret-key", READER.into())
            ]
        )
        .await
        .0,
        401,
        "the key id must be signal9"
    );
    assert_eq!(
        status(
            format!("{base}/v2/assets/AAPL"),
            vec![
                ("apca-api-key-id", "signal9".into()),
                ("apca-api-secret-key", READER.into())
            ]
        )
        .await
        .0,
        404,
        "let in with Alpaca's key headers (no assets synced here)"
    );

    // The console: a wrong token is refused; pages need a session.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let refused = client
        .post(format!("{base}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=nope-token-51q")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let anonymous = client.get(format!("{base}/console")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 303, "to the login page");

    // A read token sees the pages but may not act: 403.
    let (reader_cookie, reader_csrf) = console_login(&base, READER).await;
    assert_eq!(
        console_post(
            &base,
            "/console/dlq/replay",
            &reader_cookie,
            &format!("csrf={reader_csrf}")
        )
        .await,
        403
    );
    // An operate token acts only with the session's CSRF token.
    let (cookie, csrf) = console_login(&base, OPERATOR).await;
    assert_eq!(
        console_post(&base, "/console/dlq/replay", &cookie, "csrf=forged").await,
        403
    );
    assert_eq!(console_post(&base, "/console/dlq/replay", &cookie, "").await, 403);
    assert_eq!(
        console_post(&base, "/console/dlq/purge", &cookie, &format!("csrf={csrf}")).await,
        400,
        "a purge without its confirmation is refused"
    );
    assert_eq!(
        console_post(&base, "/console/dlq/replay", &cookie, &format!("csrf={csrf}")).await,
        303,
        "a valid action goes through"
    );
    let log = api.logs();
    assert!(log.contains("Console login"), "the log is on: {log}");
    for token in [READER, OPERATOR, "nope-token-51q", "bogus-token-x81"] {
        assert!(!log.contains(token), "a token reached the log: {token}");
    }
    stack.cleanup().await;
}

#[tokio::test]
async fn tokens_are_added_and_revoked_by_editing_the_file_without_a_restart() {
    let (mut stack, api) = started(&[], &[], false).await;
    let base = api.base_url();
    let (cookie, _) = console_login(&base, OPERATOR).await;
    let asset = format!("{base}/v2/assets/AAPL");
    // Let in (404: no assets synced here), or not (401).
    assert_eq!(get(&asset, Some(READER)).await.0, 404);
    let newcomer = "newcomer-token-0b8e";
    assert_eq!(get(&asset, Some(newcomer)).await.0, 401);

    std::fs::write(
        &api.tokens_file,
        format!("read {}\n", signal9_e2e::token_hash(newcomer)),
    )
    .unwrap();
    let switched = signal9_e2e::eventually(Duration::from_secs(10), || async {
        get(&asset, Some(newcomer)).await.0 == 404
    })
    .await;
    assert!(switched, "the new token is accepted without a restart\n{}", api.logs());
    assert_eq!(get(&asset, Some(READER)).await.0, 401, "a token taken out is refused");
    let page = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/console"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 303, "the revoked token's console session ended");

    // Auth fails closed: a file broken, emptied or deleted revokes every
    // token within the reload interval, until it is fixed.
    let good = format!("read {}\n", signal9_e2e::token_hash(newcomer));
    for (what, change) in [
        ("broken", Some(format!("{good}read not-a-hash\n"))),
        ("fixed", Some(good.clone())),
        ("emptied", Some(String::new())),
        ("fixed", Some(good.clone())),
        ("deleted", None),
        ("fixed", Some(good.clone())),
    ] {
        match change {
            Some(text) => std::fs::write(&api.tokens_file, text).unwrap(),
            None => std::fs::remove_file(&api.tokens_file).unwrap(),
        }
        let expected = if what == "fixed" { 404 } else { 401 };
        let took = signal9_e2e::eventually(Duration::from_secs(5), || async {
            get(&asset, Some(newcomer)).await.0 == expected
        })
        .await;
        assert!(
            took,
            "{what}: expected {expected} within the reload interval\n{}",
            api.logs()
        );
    }
    assert!(api.logs().contains("every token is refused"), "{}", api.logs());
    assert!(!api.logs().contains(newcomer));
    stack.cleanup().await;
}

#[tokio::test]
async fn the_console_shows_queues_workers_budgets_and_sync_runs() {
    let (mut stack, api) = started(&[], &[], true).await;
    let base = api.base_url();
    let (cookie, _) = console_login(&base, READER).await;
    let page = reqwest::Client::new()
        .get(format!("{base}/console"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for wanted in [
        format!("{}.fetch-bars.interactive", stack.namespace),
        format!("{}.dead-letter", stack.namespace),
        "Workers (1 alive)".into(),
        "api-sync".into(),
        "completed".into(),
        "calls per minute".into(),
        "<svg".into(),
    ] {
        assert!(page.contains(&wanted), "the overview lacks {wanted:?}:\n{page}");
    }
    // The sync's calls show in the data budget's chart.
    assert!(page.contains("<rect"), "a bar for the sync's calls:\n{page}");
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("signal9_http_requests_total{route=\"/console\",status=\"200\"}"),
        "{metrics}"
    );
    stack.cleanup().await;
}
