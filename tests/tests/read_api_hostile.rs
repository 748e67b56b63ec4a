//! `signal9-api` against hostile but ordinary clients (issue 25): every
//! out-of-bounds input is a 4xx with a reason, a panic is a 500 with a
//! request id, a request is priced before anything is published, a token
//! past its quota gets 429 while others are served, the example tokens are
//! refused at start, and slow clients are cut off while /healthz answers.
//! Real RabbitMQ, Redis, the simulator, a worker and the SQLite store.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use signal9_e2e::{active_symbols, queue_depth, text, ApiProcess, Stack};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const READER: &str = "reader-token-hostile-1";
const OTHER: &str = "reader-token-hostile-2";

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn get(url: &str, token: &str) -> Answer {
    let response = reqwest::Client::new()
        .get(url)
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Answer {
        status,
        headers,
        body: response.text().await.unwrap(),
    }
}

async fn api(worker: bool, env: &[(&str, &str)]) -> (Stack, ApiProcess) {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    if worker {
        stack.start_worker(&[]).unwrap();
    }
    let api = stack.start_api(&[("read", READER), ("read", OTHER)], env).unwrap();
    (stack, api)
}

#[tokio::test]
async fn every_out_of_bounds_read_is_a_4xx_with_a_reason_and_nothing_is_published() {
    let (mut stack, api) = api(false, &[("SIGNAL9_FAULT_PANIC_SYMBOL", "ZZPANIC")]).await;
    let base = api.base_url();
    let bars = |query: &str| format!("{base}/v2/stocks/bars?{query}");
    let many: Vec<String> = (0..2000).map(|i| format!("S{i}")).collect();
    let cases = [
        (
            bars("symbols=AAPL&timeframe=1Day&start=-0002-01-01"),
            400,
            "outside the accepted window",
        ),
        (
            bars("symbols=AAPL&timeframe=1Day&start=0000-01-01"),
            400,
            "outside the accepted window",
        ),
        (bars("symbols=AAPL&timeframe=1Day&start=-262143-01-01"), 400, "start"),
        (
            bars("symbols=AAPL&timeframe=1Day&start=2026-01-01&end=%2B262142-01-01T00:00:00Z"),
            400,
            "end",
        ),
        (
            bars("symbols=AAPL&timeframe=1Day&start=2999-01-01"),
            400,
            "outside the accepted window",
        ),
        (bars("symbols=AAPL&timeframe=7Fortnight"), 400, "invalid timeframe"),
        (bars("symbols=AAPL&timeframe=1Day&limit=-1"), 400, "invalid limit"),
        (
            bars("symbols=AAPL&timeframe=1Day&page_token=%E2%82%AC%00"),
            400,
            "invalid page token",
        ),
        (
            bars(&format!("symbols={}&timeframe=1Day", many.join(","))),
            400,
            "too many symbols",
        ),
        (bars("symbols=%E2%82%ACAB&timeframe=1Day"), 400, "invalid symbol"),
        (format!("{base}/v2/assets/%E2%82%ACAB"), 404, "asset not found"),
        (format!("{base}/v2/assets/{}", "A".repeat(5000)), 404, "asset not found"),
        (
            format!("{base}/v2/stocks/%E2%82%ACAB/bars?timeframe=1Day"),
            400,
            "invalid symbol",
        ),
    ];
    for (url, status, reason) in &cases {
        let answer = get(url, READER).await;
        assert_eq!(
            answer.status,
            *status,
            "{}: {}",
            &url[..url.len().min(120)],
            answer.body
        );
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(reason), "{}: {message}", &url[..url.len().min(120)]);
        assert!(message.len() < 400);
    }

    // A request priced past the cap: 422 naming the estimate and the cap,
    // and no job published (no worker here to take one).
    let answer = get(
        &format!("{base}/v1beta3/crypto/us/bars?symbols=BTC/USD&timeframe=1Min&start=2000-01-01"),
        READER,
    )
    .await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(
        answer.body.contains("fetch jobs")
            && answer.body.contains("SIGNAL9_API_MAX_JOBS_PER_REQUEST")
            && answer.body.contains("backfill"),
        "{}",
        answer.body
    );
    let interactive = stack.topology().job_queue(
        signal9_shared::job::JobKind::FetchBars,
        signal9_shared::job::Priority::Interactive,
    );
    assert_eq!(queue_depth(&interactive).await.unwrap_or(0), 0, "nothing was published");

    // A handler that panics: a 500 with the request id, and the API serves on.
    let answer = get(&bars("symbols=ZZPANIC&timeframe=1Day&start=2026-01-01"), READER).await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(answer.body.contains(&format!("request id {id}")), "{}", answer.body);
    assert!(
        !answer.body.contains("fault injected"),
        "no internal cause is sent: {}",
        answer.body
    );
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let headers = health.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert_eq!(get(&format!("{base}/v2/assets/AAPL"), READER).await.status, 404);
    assert!(api.logs().contains("fault injected"), "the panic is in the log");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_past_its_quota_gets_429_while_another_token_is_served() {
    let (mut stack, api) = api(
        true,
        &[
            ("SIGNAL9_API_TOKEN_CALLS", "2"),
            ("SIGNAL9_API_QUOTA_WINDOW_SECS", "600"),
        ],
    )
    .await;
    let base = api.base_url();
    let month = |m: u32| {
        format!("{base}/v2/stocks/bars?symbols=AAPL&timeframe=1Day&start=2026-{m:02}-01T00:00:00Z&end=2026-{m:02}-20T00:00:00Z")
    };
    for m in [3, 4] {
        let answer = get(&month(m), READER).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.headers["x-signal9-calls"], "1", "the price is said");
    }
    let refused = get(&month(5), READER).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let retry: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    assert!(refused.body.contains("the token's quota"), "{}", refused.body);
    // Another token is served; a covered range costs nothing and is served
    // to the exhausted token too.
    assert_eq!(get(&month(5), OTHER).await.status, 200);
    let covered = get(&month(3), READER).await;
    assert_eq!(
        (covered.status, covered.headers["x-signal9-calls"].to_str().unwrap()),
        (200, "0")
    );
    stack.cleanup().await;
}

#[tokio::test]
async fn the_example_tokens_are_refused_at_start_unless_allowed() {
    let stack = Stack::start(&["--limit", "0"]).unwrap();
    let example = [("read", "compose-read-token")];
    let refused = stack.start_api(&example, &[]).unwrap_err().to_string();
    assert!(refused.contains("example token"), "{refused}");
    let allowed = stack
        .start_api(&example, &[("SIGNAL9_API_ALLOW_EXAMPLE_TOKENS", "1")])
        .unwrap();
    assert_eq!(
        get(&format!("{}/v2/assets/AAPL", allowed.base_url()), "compose-read-token")
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_healthz_answers_meanwhile() {
    let (mut stack, api) = api(false, &[("SIGNAL9_API_HEADER_TIMEOUT_SECS", "2")]).await;
    let addr = format!("127.0.0.1:{}", api.port);
    let mut slow = Vec::new();
    for i in 0..500 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // Half of them start a request and never finish its headers.
        if i % 2 == 0 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        slow.push(stream);
    }
    let client = reqwest::Client::new();
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let health = client.get(format!("{}/healthz", api.base_url())).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 200);
        best = best.min(started.elapsed());
    }
    assert!(
        best < Duration::from_millis(100),
        "/healthz took {best:?} with 500 slow clients"
    );
    // Each slow connection is closed by the server after the timeout (an
    // answer such as 408 may come first; then the end of the stream).
    let closes = slow.into_iter().map(|mut stream| async move {
        let mut buf = [0u8; 256];
        let read_to_end = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), read_to_end).await.is_ok()
    });
    let closed = futures::future::join_all(closes)
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    assert_eq!(closed, 500, "every slow connection was closed by the header timeout");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_pipeline_completes_while_one_token_hammers_the_api_with_its_full_quota() {
    let mut stack = Stack::start(&["--limit", "0"]).unwrap();
    // A small data budget, so the hammering token competes for it: 10 calls
    // per 2 s, of which the API may take 4 (its token 4 as well).
    stack.extra_env.extend(
        [("SIGNAL9_DATA_LIMIT", "10"), ("SIGNAL9_DATA_WINDOW_SECS", "2")].map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    stack.start_worker(&["--concurrency", "4"]).unwrap();
    let api = stack
        .start_api(
            &[("read", READER)],
            &[
                ("SIGNAL9_API_TOKEN_CALLS", "4"),
                ("SIGNAL9_API_CALLS", "4"),
                ("SIGNAL9_API_QUOTA_WINDOW_SECS", "2"),
            ],
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (served, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let hammer = {
        let (stop, served, refused, base) = (stop.clone(), served.clone(), refused.clone(), api.base_url());
        tokio::spawn(async move {
            let first = chrono::NaiveDate::from_ymd_opt(2016, 1, 4).unwrap();
            let mut day = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A day not asked for before: never covered, one call each.
                let date = first + chrono::Days::new(day);
                day += 1;
                let url = format!("{base}/v2/stocks/AAPL/bars?timeframe=1Day&start={date}&end={date}T23:59:59Z");
                match get(&url, READER).await.status {
                    200 => served.fetch_add(1, Ordering::Relaxed),
                    429 => refused.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        })
    };
    let started = Instant::now();
    let sync = stack
        .producer(&["sync", "--run-id", "hammered", "--wait", "--wait-timeout-secs", "180"])
        .await
        .unwrap();
    assert!(sync.status.success(), "sync: {}\n{}", text(&sync), stack.worker_logs());
    let symbols = active_symbols(42, 12_000, 200);
    let file = stack.symbols_file(&symbols);
    let bars = stack
        .producer(&signal9_e2e::fetch_iex_days(
            &file,
            "2026-11-02T00:00:00Z",
            "2026-11-20T23:59:59Z",
            Some("180"),
        ))
        .await
        .unwrap();
    assert!(bars.status.success(), "bars: {}\n{}", text(&bars), stack.worker_logs());
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    hammer.await.unwrap();
    let (served, refused) = (served.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    assert!(served > 0 && refused > 0, "served {served}, refused {refused}");
    // The token's bucket: 4 at once, then 4 per 2 s.
    let most = 4.0 + 4.0 * elapsed / 2.0;
    assert!(
        (served as f64) <= most + 1.0,
        "served {served} in {elapsed:.1} s, quota allows {most:.0}"
    );
    stack.cleanup().await;
}
