//! The AWS SDK configuration every AWS client of signal9 starts from.
//!
//! In production it is the SDK's default chain: region and credentials from
//! the environment, the profile or the instance role, and the SDK's own
//! `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_DYNAMODB`,
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER`) for a local AWS-API server.

use aws_config::{BehaviorVersion, SdkConfig};

/// Where the AWS clients point; `None` for each part keeps the SDK's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsTarget {
    /// An endpoint overriding every service's (a local AWS-API server).
    pub endpoint: Option<String>,
    /// The region, when the default chain should not decide it.
    pub region: Option<String>,
}

impl AwsTarget {
    /// A local AWS-API server at `endpoint` (moto, DynamoDB Local) with dummy
    /// static credentials, as tests and the compose file use.
    pub fn local(endpoint: impl Into<String>) -> Self {
        AwsTarget {
            endpoint: Some(endpoint.into()),
            region: Some("us-east-1".into()),
        }
    }

    /// Loads the SDK configuration: the default chain, then these overrides.
    pub async fn load(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                // A local server accepts any key; the default chain would
                // otherwise look for an instance role and time out.
                loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                    "local",
                    "local",
                    None,
                    None,
                    "signal9-local",
                ));
            }
        }
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        loader.load().await
    }
}

/// An SDK error with its whole chain of causes on one line (the SDK's own
/// Display says only "service error").
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}
