//! The local AWS-API server (moto) in tests: its endpoint, the environment
//! the binaries take, and secrets put into it.

/// The local AWS-API server (moto) the tests use: `SIGNAL9_TEST_AWS_ENDPOINT`,
/// which `bash scripts/test` sets after starting it.
pub fn aws_endpoint() -> String {
    std::env::var("SIGNAL9_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// The environment that points a signal9 process at the local AWS-API server.
pub fn aws_env() -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", aws_endpoint()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "local".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "local".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A Secrets Manager client on the local AWS-API server.
pub async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    let config = signal9_shared::aws::AwsTarget::local(aws_endpoint()).load().await;
    aws_sdk_secretsmanager::Client::new(&config)
}

/// The JSON of an Alpaca secret.
pub fn secret_json(key: &str, secret: &str, paper: bool) -> String {
    serde_json::json!({"apiKey": key, "secretKey": secret, "paper": paper}).to_string()
}

/// Creates (or overwrites) secret `name` with `value` on the local server.
pub async fn put_secret(name: &str, value: &str) -> anyhow::Result<()> {
    let client = secrets_client().await;
    let created = client.create_secret().name(name).secret_string(value).send().await;
    if let Err(error) = created {
        if !error
            .as_service_error()
            .is_some_and(|e| e.is_resource_exists_exception())
        {
            anyhow::bail!("create_secret: {}", signal9_shared::aws::describe(&error));
        }
        client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("put_secret_value: {}", signal9_shared::aws::describe(&e)))?;
    }
    Ok(())
}
