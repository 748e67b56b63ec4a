//! `SecretsSource` against Secrets Manager on the local AWS-API server
//! (moto, started by `bash scripts/test`): fetch, cache, rotation on
//! refusal, and every error a secret can have.

use aws_sdk_secretsmanager::primitives::Blob;
use signal9_alpaca::{CredentialSource, Credentials};
use signal9_shared::aws::AwsTarget;
use signal9_shared::secrets::{SecretError, SecretsSource};
use std::time::Duration;

async fn config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("SIGNAL9_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    AwsTarget::local(endpoint).load().await
}

fn name(what: &str) -> String {
    format!("{}/{what}", signal9_shared::testing::namespace())
}

fn json(key: &str, secret: &str, paper: bool) -> String {
    format!(r#"{{"apiKey":"{key}","secretKey":"{secret}","paper":{paper}}}"#)
}

async fn put(config: &aws_config::SdkConfig, name: &str, value: &str) {
    let client = aws_sdk_secretsmanager::Client::new(config);
    if client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .is_err()
    {
        client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .expect("put_secret_value");
    }
}

#[tokio::test]
async fn the_secret_is_cached_and_read_again_only_after_a_refusal() {
    let config = config().await;
    let name = name("alpaca");
    put(&config, &name, &json("k1", "s1", false)).await;
    let source = SecretsSource::new(&config, &name, Duration::from_secs(3600));
    assert_eq!(source.name(), name);
    let first = source.secret().await.expect("secret");
    assert_eq!(first.credentials, Credentials::new("k1", "s1"));
    assert!(!first.paper);

    // Rotated on the server: the cache still answers the old pair...
    put(&config, &name, &json("k2", "s2", false)).await;
    assert_eq!(source.current().await.expect("current"), Credentials::new("k1", "s1"));
    // ...until the API refuses it; then the new pair, once.
    let fresh = source.refresh(&Credentials::new("k1", "s1")).await.expect("refresh");
    assert_eq!(fresh, Some(Credentials::new("k2", "s2")));
    assert_eq!(source.current().await.expect("current"), Credentials::new("k2", "s2"));
    // A late refusal of the old pair gets the new one without a fetch.
    let again = source.refresh(&Credentials::new("k1", "s1")).await.expect("refresh");
    assert_eq!(again, Some(Credentials::new("k2", "s2")));
    // A refusal of the pair the secret still holds: nothing new.
    assert_eq!(
        source.refresh(&Credentials::new("k2", "s2")).await.expect("refresh"),
        None
    );
    assert_eq!(
        source.refresh(&Credentials::new("k2", "s2")).await.expect("quiet"),
        None
    );
}

#[tokio::test]
async fn a_short_ttl_reads_the_secret_again_in_the_background() {
    let config = config().await;
    let name = name("ttl");
    put(&config, &name, &json("a1", "b1", true)).await;
    let source = SecretsSource::new(&config, &name, Duration::from_millis(50));
    assert_eq!(source.current().await.expect("current"), Credentials::new("a1", "b1"));
    put(&config, &name, &json("a2", "b2", true)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Past the TTL the held pair answers at once and a refresh starts...
    assert_eq!(source.current().await.expect("current"), Credentials::new("a1", "b1"));
    // ...after which the new pair answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if source.current().await.expect("current") == Credentials::new("a2", "b2") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the refresh never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy to the AWS-API server that, once told to hang, cuts the
/// connections it carries and accepts new ones without ever answering: a
/// Secrets Manager that hangs.
struct HangingProxy {
    url: String,
    hang: tokio::sync::watch::Sender<bool>,
}

impl HangingProxy {
    async fn start(target: &str) -> HangingProxy {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (hang, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watch.borrow() {
                    held.push(inbound);
                    continue;
                }
                let (target, mut watch) = (target.clone(), watch.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|hang| *hang) => {}
                    }
                });
            }
        });
        HangingProxy { url, hang }
    }

    fn hang(&self) {
        let _ = self.hang.send(true);
    }
}

fn secret_failures(reason: &str) -> u64 {
    signal9_shared::telemetry::metrics::get()
        .secret_refresh_failures
        .with_label_values(&[reason])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_secrets_manager_stalls_no_caller_and_the_cached_pair_keeps_serving() {
    let direct = config().await;
    let name = name("hang");
    put(&direct, &name, &json("h1", "s1", true)).await;
    let endpoint = std::env::var("SIGNAL9_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let proxy = HangingProxy::start(&endpoint).await;
    let through_proxy = AwsTarget::local(proxy.url.clone()).load().await;
    let source = std::sync::Arc::new(
        SecretsSource::new(&through_proxy, &name, Duration::from_millis(50)).with_timeout(Duration::from_millis(800)),
    );
    assert_eq!(
        source.current().await.expect("first read"),
        Credentials::new("h1", "s1")
    );

    proxy.hang();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let timeouts_before = secret_failures("timeout");
    // Past the TTL, with Secrets Manager hung: every caller gets the held
    // pair. Before, the first held the cache's lock through a call that
    // never returned, and every other waited behind it, forever.
    let callers = (0..20).map(|_| {
        let source = std::sync::Arc::clone(&source);
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(5), source.current()).await })
    });
    for caller in futures::future::join_all(callers).await {
        let answer = caller
            .expect("task")
            .expect("a caller waited on the hung Secrets Manager");
        assert_eq!(answer.expect("current"), Credentials::new("h1", "s1"));
    }
    // A refusal must read the secret; that read ends at the timeout, as a
    // transient error, and is counted.
    let refused = tokio::time::timeout(Duration::from_secs(10), source.refresh(&Credentials::new("h1", "s1")))
        .await
        .expect("the refusal's read was not bounded by the timeout");
    let error = refused.expect_err("a hung read cannot bring a key");
    assert!(error.to_string().contains("no answer within"), "{error}");
    assert!(secret_failures("timeout") > timeouts_before);
    // And still, the held pair serves.
    assert_eq!(source.current().await.expect("current"), Credentials::new("h1", "s1"));
}

#[tokio::test]
async fn every_broken_secret_is_a_clear_error() {
    let config = config().await;
    let missing = SecretsSource::new(&config, name("missing"), Duration::from_secs(60));
    assert!(matches!(missing.fetch().await, Err(SecretError::Missing { .. })));
    let error = missing.current().await.expect_err("missing");
    assert!(error.to_string().contains("has no secret"), "{error}");

    let broken = name("broken");
    put(&config, &broken, r#"{"apiKey":"k"}"#).await;
    let source = SecretsSource::new(&config, &broken, Duration::from_secs(60));
    let error = source.fetch().await.expect_err("malformed");
    assert!(error.to_string().contains("\"secretKey\" is missing"), "{error}");

    let binary = name("binary");
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name(&binary)
        .secret_binary(Blob::new(b"\x00\x01".to_vec()))
        .send()
        .await
        .expect("create binary secret");
    let source = SecretsSource::new(&config, &binary, Duration::from_secs(60));
    let error = source.fetch().await.expect_err("binary");
    assert!(error.to_string().contains("binary secret"), "{error}");

    let unreachable = SecretsSource::new(
        &AwsTarget::local("http://127.0.0.1:9").load().await,
        "x",
        Duration::from_secs(1),
    );
    assert!(matches!(
        unreachable.fetch().await,
        Err(SecretError::Unavailable { .. })
    ));
}
