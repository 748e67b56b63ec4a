//! Settings shared by the binaries: every one is a CLI flag and the
//! same-named environment variable (clap `env`), with a default that works
//! on a developer's machine. The Alpaca names follow the official SDKs.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

use crate::store::{DynamoStore, SqliteStore, Store, StoreError};
use signal9_alpaca::{AlpacaClient, ClientConfig, Credentials, Gate};

/// Where Alpaca lives and which key to use.
#[derive(Clone, Args)]
pub struct AlpacaSettings {
    /// Alpaca key id for local work (Secrets Manager is preferred in production).
    #[arg(long = "alpaca-key-id", env = "APCA_API_KEY_ID", hide_env_values = true)]
    pub key_id: Option<String>,
    /// Alpaca secret key for local work.
    #[arg(long = "alpaca-secret-key", env = "APCA_API_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// AWS Secrets Manager secret holding the key pair as JSON
    /// {"apiKey", "secretKey", "paper"}; wins over the two variables above.
    #[arg(long = "alpaca-secret", env = "SIGNAL9_ALPACA_SECRET")]
    pub secret: Option<String>,
    /// How long the key pair read from Secrets Manager is kept before it is
    /// read again, in seconds (a 401/403 reads it again at once).
    #[arg(long = "alpaca-secret-ttl-secs", env = "SIGNAL9_ALPACA_SECRET_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub secret_ttl_secs: u64,
    /// The longest one Secrets Manager read may take, in seconds. Past it the
    /// read counts as failed (`signal9_secret_refresh_failures_total`) and
    /// the cached pair keeps serving; no Alpaca call waits on it.
    #[arg(long = "alpaca-secret-timeout-secs", env = "SIGNAL9_ALPACA_SECRET_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub secret_timeout_secs: u64,
    /// Trading API base URL (assets). Unset: the live or paper URL the
    /// secret's `paper` flag names, or https://paper-api.alpaca.markets.
    #[arg(long = "alpaca-base-url", env = "APCA_API_BASE_URL")]
    pub base_url: Option<String>,
    /// Market-data API base URL (bars). `APCA_DATA_BASE_URL` (the JS SDK's name) is read too.
    #[arg(long = "alpaca-data-url", env = "APCA_API_DATA_URL")]
    pub data_url: Option<String>,
    /// Timeout of one Alpaca request, in seconds.
    #[arg(long = "alpaca-timeout-secs", env = "SIGNAL9_ALPACA_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout_secs: u64,
}

impl std::fmt::Debug for AlpacaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlpacaSettings")
            .field("key_id", &self.key_id.as_ref().map(|_| "<redacted>"))
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .field("secret", &self.secret)
            .field("secret_ttl_secs", &self.secret_ttl_secs)
            .field("secret_timeout_secs", &self.secret_timeout_secs)
            .field("base_url", &self.base_url)
            .field("data_url", &self.data_url)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// A setting that is missing or malformed, named as the user set it.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct SettingError {
    /// The flag and variable.
    pub name: &'static str,
    /// What is wrong and what is expected.
    pub problem: String,
}

impl AlpacaSettings {
    /// The client configuration these settings describe, for an account
    /// that is paper (`true`) or live (`false`) when the base URL is unset.
    pub(crate) fn client_config(&self, paper: bool) -> ClientConfig {
        let data_url = self
            .data_url
            .clone()
            .or_else(|| std::env::var("APCA_DATA_BASE_URL").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| signal9_alpaca::urls::DATA.into());
        ClientConfig {
            trading_url: self
                .base_url
                .clone()
                .unwrap_or_else(|| signal9_alpaca::urls::trading(paper).into()),
            data_url,
            timeout: Duration::from_secs(self.timeout_secs),
        }
    }

    /// The client these settings describe, every call through `gate`. With
    /// a secret name, the secret is read once now, so a missing or malformed
    /// secret stops the process at start with a clear message.
    pub async fn client(&self, gate: std::sync::Arc<dyn Gate>) -> anyhow::Result<AlpacaClient> {
        let Some(name) = self.secret.as_deref().filter(|n| !n.is_empty()) else {
            return Ok(AlpacaClient::new(&self.client_config(true), self.credentials()?, gate)?);
        };
        let aws = crate::aws::AwsTarget::default().load().await;
        let source = crate::secrets::SecretsSource::new(&aws, name, Duration::from_secs(self.secret_ttl_secs))
            .with_timeout(Duration::from_secs(self.secret_timeout_secs));
        let secret = source.secret().await?;
        let source: std::sync::Arc<dyn signal9_alpaca::CredentialSource> = std::sync::Arc::new(source);
        Ok(AlpacaClient::new(&self.client_config(secret.paper), source, gate)?)
    }

    /// The key pair from the environment or flags.
    pub fn credentials(&self) -> Result<Credentials, SettingError> {
        match (&self.key_id, &self.secret_key) {
            (Some(key), Some(secret)) if !key.is_empty() && !secret.is_empty() => Ok(Credentials::new(key, secret)),
            _ => Err(SettingError {
                name: "APCA_API_KEY_ID / APCA_API_SECRET_KEY (--alpaca-key-id / --alpaca-secret-key)",
                problem: "both must be set to a non-empty Alpaca key pair".into(),
            }),
        }
    }
}

/// Which store backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Embedded SQLite file (the default).
    Sqlite,
    /// Amazon DynamoDB.
    Dynamodb,
}

/// Store selection.
#[derive(Debug, Clone, Args)]
pub struct StoreSettings {
    /// Store backend.
    #[arg(long = "store", env = "SIGNAL9_STORE", value_enum, default_value = "sqlite")]
    pub kind: StoreKind,
    /// The embedded store's file.
    #[arg(
        long = "sqlite-path",
        env = "SIGNAL9_SQLITE_PATH",
        default_value = "./data/signal9.db"
    )]
    pub sqlite_path: PathBuf,
    /// How long a write to the embedded store waits for another process's
    /// lock before it fails, in milliseconds (a failure counts against the
    /// worker's store breaker).
    #[arg(long = "sqlite-busy-timeout-ms", env = "SIGNAL9_SQLITE_BUSY_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub sqlite_busy_timeout_ms: u64,
    /// Prefix of the DynamoDB tables: {prefix}-assets, -bar_chunks, -coverage, -runs, -run_pages, -checkpoints, -corporate_actions.
    #[arg(
        long = "dynamodb-table-prefix",
        env = "SIGNAL9_DYNAMODB_TABLE_PREFIX",
        default_value = "signal9",
        value_parser = crate::store::dynamo::parse_table_prefix
    )]
    pub table_prefix: String,
}

impl StoreSettings {
    /// Opens the selected store and makes sure its schema exists.
    pub async fn open(&self) -> Result<std::sync::Arc<dyn Store>, StoreError> {
        match self.kind {
            StoreKind::Sqlite => {
                let store = SqliteStore::open(&self.sqlite_path)?;
                store.set_busy_timeout(std::time::Duration::from_millis(self.sqlite_busy_timeout_ms))?;
                store.init().await?;
                Ok(std::sync::Arc::new(store))
            }
            StoreKind::Dynamodb => {
                let store = self.dynamo().await;
                store.init().await?;
                Ok(std::sync::Arc::new(store))
            }
        }
    }

    /// The DynamoDB store these settings name, not yet initialised. The AWS
    /// SDK's default chain decides region, credentials and endpoint
    /// (`AWS_REGION`, `AWS_ENDPOINT_URL`, ...).
    pub async fn dynamo(&self) -> DynamoStore {
        let aws = crate::aws::AwsTarget::default().load().await;
        DynamoStore::from_config(&aws, self.table_prefix.clone())
    }

    /// Where the data lives, for messages: the file or the table prefix.
    pub fn describe(&self) -> String {
        match self.kind {
            StoreKind::Sqlite => format!("sqlite {}", self.sqlite_path.display()),
            StoreKind::Dynamodb => format!("dynamodb tables {}-*", self.table_prefix),
        }
    }
}

/// A list of retry delays, parsed from `5s,30s,2m,10m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTiers(pub Vec<Duration>);

fn parse_retry_tiers(text: &str) -> Result<RetryTiers, String> {
    crate::broker::parse_tiers(text).map(RetryTiers)
}

/// A namespace: 1-64 characters of a-z, 0-9, `-` and `_`.
pub(crate) fn parse_namespace(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(text.to_owned())
    } else {
        Err("expected 1-64 characters of a-z, 0-9, '-' and '_'".into())
    }
}

/// Where RabbitMQ is and which topology to use.
#[derive(Clone, Args)]
pub struct BrokerSettings {
    /// RabbitMQ: one URL, or the nodes of a cluster as URLs separated by
    /// commas (`amqp://u:p@h1:5672/%2f,amqp://u:p@h2:5672/%2f`); a process
    /// connects to one that answers (in a random order) and, when it loses
    /// it, to another. Each asks for a 10 s heartbeat unless its URL says
    /// `?heartbeat=N`.
    #[arg(
        long,
        env = "SIGNAL9_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Prefix of every queue, exchange and Redis key.
    #[arg(long, env = "SIGNAL9_NAMESPACE", default_value = "signal9", value_parser = parse_namespace)]
    pub namespace: String,
    /// Retry delays, in order; after the last, a job is dead-lettered.
    #[arg(long, env = "SIGNAL9_RETRY_TIERS", default_value = "5s,30s,2m,10m", value_parser = parse_retry_tiers)]
    pub retry_tiers: RetryTiers,
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("BrokerSettings")
            .field("amqp_url", &"<redacted>")
            .field("namespace", &self.namespace)
            .field("retry_tiers", &self.retry_tiers)
            .finish()
    }
}

impl BrokerSettings {
    /// The topology these settings name.
    pub fn topology(&self) -> crate::broker::Topology {
        crate::broker::Topology::new(self.namespace.clone(), self.retry_tiers.0.clone())
    }
}

/// The two API budgets (shared by every process through Redis) and the
/// circuit breakers.
#[derive(Clone, Args)]
pub struct BudgetSettings {
    /// Redis, where the budgets live.
    #[arg(
        long,
        env = "SIGNAL9_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Trading API budget: calls per window.
    #[arg(long, env = "SIGNAL9_TRADING_LIMIT", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub trading_limit: u32,
    /// Trading API budget: window in seconds (fractions allowed).
    #[arg(long, env = "SIGNAL9_TRADING_WINDOW_SECS", default_value_t = 60.0, value_parser = positive_secs)]
    pub trading_window_secs: f64,
    /// Market-data API budget: calls per window.
    #[arg(long, env = "SIGNAL9_DATA_LIMIT", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub data_limit: u32,
    /// Market-data API budget: window in seconds (fractions allowed).
    #[arg(long, env = "SIGNAL9_DATA_WINDOW_SECS", default_value_t = 60.0, value_parser = positive_secs)]
    pub data_window_secs: f64,
    /// Safety margin added to each window, in milliseconds, so that jitter
    /// between taking a token and the request reaching the API cannot push
    /// the API's own window over the limit.
    #[arg(long, env = "SIGNAL9_BUDGET_MARGIN_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub margin_ms: u64,
    /// Share of each budget window kept idle for interactive requests (0
    /// to 0.9). Not needed for priority: an interactive request waiting for
    /// a token takes the next free one before any bulk or backfill call,
    /// so by default (0) bulk work may use the whole budget.
    #[arg(long, env = "SIGNAL9_INTERACTIVE_RESERVE", default_value_t = 0.0, value_parser = parse_reserve)]
    pub interactive_reserve: f64,
    /// Longest a call waits for a token (or an open breaker) before its job
    /// goes back through a delay queue, in seconds; not counted as an attempt.
    #[arg(long, env = "SIGNAL9_BUDGET_WAIT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub wait_secs: u64,
    /// Consecutive API failures (no answer, 5xx) that open an API's circuit breaker.
    #[arg(long, env = "SIGNAL9_BREAKER_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub breaker_failures: u32,
    /// First back-off of an open breaker, in whole seconds (2 or more); doubles up to 60 s, each wait jittered.
    #[arg(long, env = "SIGNAL9_BREAKER_BACKOFF_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub breaker_backoff_secs: u64,
}

impl std::fmt::Debug for BudgetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetSettings")
            .field("redis_url", &"<redacted>")
            .field("trading", &(self.trading_limit, self.trading_window_secs))
            .field("data", &(self.data_limit, self.data_window_secs))
            .field("margin_ms", &self.margin_ms)
            .field("interactive_reserve", &self.interactive_reserve)
            .field("wait_secs", &self.wait_secs)
            .finish()
    }
}

fn parse_reserve(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=0.9).contains(&v) => Ok(v),
        _ => Err("expected a share between 0 and 0.9, e.g. 0.2".into()),
    }
}

fn positive_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err("expected a number of seconds above 0 (fractions allowed), at most 86400".into()),
    }
}

impl BudgetSettings {
    /// The gate every Alpaca call of this process goes through: the budgets
    /// in Redis under `namespace`, and a breaker per API.
    pub fn gate(&self, namespace: &str) -> Result<crate::gate::ApiGate, crate::limiter::LimiterError> {
        let pool = crate::limiter::redis_pool(&self.redis_url)?;
        let margin = Duration::from_millis(self.margin_ms);
        let size = |limit, secs: f64| crate::limiter::BudgetSize {
            limit,
            window: Duration::from_secs_f64(secs),
            margin,
        };
        let backoff = Duration::from_secs(self.breaker_backoff_secs);
        let breaker = crate::breaker::BreakerPolicy {
            failures: self.breaker_failures,
            backoff,
            max_backoff: backoff.max(Duration::from_secs(60)),
        };
        Ok(crate::gate::ApiGate::new(
            pool,
            namespace,
            size(self.trading_limit, self.trading_window_secs),
            size(self.data_limit, self.data_window_secs),
            breaker,
            Duration::from_secs(self.wait_secs),
        )
        .with_interactive_reserve(self.interactive_reserve))
    }
}

/// How bar requests are packed, how large one job may be, and when a
/// fetched range is final enough to be answered from the store.
#[derive(Debug, Clone, Copy, Args)]
pub struct PackingSettings {
    /// Most symbols in one multi-symbol bars request: bounds the request
    /// line (a 200-symbol list stays under 4.8 KB, inside the 8 KB common
    /// proxies allow).
    #[arg(long, env = "SIGNAL9_SYMBOLS_PER_REQUEST", default_value_t = crate::plan::DEFAULT_SYMBOLS_PER_REQUEST, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub symbols_per_request: usize,
    /// Most pages of 10,000 bars one request, and one symbol's fetch-bars
    /// job, may need. A job whose symbol's range could hold more is refused
    /// with a permanent error naming this limit; `signal9-producer backfill`
    /// splits long ranges into jobs below it.
    #[arg(long, env = "SIGNAL9_MAX_JOB_PAGES", default_value_t = crate::plan::DEFAULT_MAX_PAGES, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_job_pages: u64,
    /// Seconds after a bar's period ends before a range holding it counts
    /// as covered (late trades and corrections land meanwhile): intraday
    /// bars once the range's last bar ended this long ago, daily and longer
    /// bars once the last day's extended hours (20:00 New York) ended this
    /// long ago. An unsettled range is fetched and stored, but fetched again
    /// by the next request.
    #[arg(long, env = "SIGNAL9_SETTLE_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub settle_secs: u64,
}

impl PackingSettings {
    /// The packing limits.
    pub fn packing(&self) -> crate::plan::Packing {
        crate::plan::Packing {
            max_symbols: self.symbols_per_request,
            max_pages: self.max_job_pages,
            settle: std::time::Duration::from_secs(self.settle_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        alpaca: AlpacaSettings,
    }

    #[derive(Debug, Parser)]
    struct All {
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        broker: BrokerSettings,
        #[command(flatten)]
        budget: BudgetSettings,
    }

    fn all(args: &[&str]) -> Result<All, String> {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        All::try_parse_from(argv).map_err(|e| e.to_string())
    }

    fn settings(args: &[&str]) -> AlpacaSettings {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.alpaca,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_trading_url_follows_the_paper_flag_unless_set() {
        // Unset, whatever the environment says.
        let unset = AlpacaSettings {
            base_url: None,
            ..settings(&[])
        };
        assert_eq!(
            unset.client_config(true).trading_url,
            signal9_alpaca::urls::PAPER_TRADING
        );
        assert_eq!(
            unset.client_config(false).trading_url,
            signal9_alpaca::urls::LIVE_TRADING
        );
        let set = settings(&["--alpaca-base-url", "http://127.0.0.1:1"]);
        assert_eq!(set.client_config(false).trading_url, "http://127.0.0.1:1");
    }

    #[test]
    fn debug_output_hides_the_key_pair() {
        let s = settings(&[
            "--alpaca-key-id",
            "AKDEBUGCHECK",
            "--alpaca-secret-key",
            "debug-secret-value",
        ]);
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("AKDEBUGCHECK") && !debug.contains("debug-secret-value"),
            "{debug}"
        );
    }

    #[test]
    fn broker_budget_and_store_settings_parse_from_flags() {
        let parsed = all(&[
            "--namespace",
            "ns-1",
            "--retry-tiers",
            "1s,2m",
            "--trading-limit",
            "7",
            "--data-window-secs",
            "0.5",
            "--store",
            "dynamodb",
            "--dynamodb-table-prefix",
            "prod.s9",
        ])
        .expect("valid flags");
        let topology = parsed.broker.topology();
        assert_eq!(topology.namespace(), "ns-1");
        assert_eq!(
            topology.retry_tiers(),
            [Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert_eq!(parsed.budget.trading_limit, 7);
        assert_eq!(parsed.budget.data_window_secs, 0.5);
        assert_eq!(parsed.store.kind, StoreKind::Dynamodb);
        assert_eq!(parsed.store.describe(), "dynamodb tables prod.s9-*");
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let cases = [
            (&["--namespace", "Bad/NS"][..], "--namespace"),
            (&["--namespace", ""][..], "--namespace"),
            (&["--retry-tiers", "5x"][..], "--retry-tiers"),
            (&["--data-window-secs", "0"][..], "--data-window-secs"),
            (&["--trading-window-secs", "inf"][..], "--trading-window-secs"),
            (&["--trading-limit", "0"][..], "--trading-limit"),
            (&["--breaker-backoff-secs", "1"][..], "--breaker-backoff-secs"),
            (&["--store", "postgres"][..], "--store"),
            (&["--dynamodb-table-prefix", "a b"][..], "--dynamodb-table-prefix"),
        ];
        for (args, flag) in cases {
            let error = all(args).expect_err(&format!("{args:?} is refused"));
            assert!(error.contains(flag), "{args:?}: {error}");
        }
    }

    #[test]
    fn debug_output_hides_urls_that_may_hold_passwords() {
        let parsed = all(&[
            "--amqp-url",
            "amqp://u:hunter2@mq:5672/%2f",
            "--redis-url",
            "redis://:hunter3@cache:6379",
        ])
        .expect("valid flags");
        let debug = format!("{:?} {:?}", parsed.broker, parsed.budget);
        assert!(!debug.contains("hunter2") && !debug.contains("hunter3"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn the_key_pair_needs_both_halves() {
        let neither = AlpacaSettings {
            key_id: None,
            secret_key: None,
            ..settings(&[])
        };
        let error = neither.credentials().expect_err("no key");
        assert!(error.to_string().contains("APCA_API_KEY_ID"), "{error}");
        let empty = AlpacaSettings {
            key_id: Some(String::new()),
            secret_key: Some("s".into()),
            ..settings(&[])
        };
        assert!(empty.credentials().is_err());
        let both = settings(&["--alpaca-key-id", "k", "--alpaca-secret-key", "s"]);
        assert_eq!(both.credentials().expect("both set"), Credentials::new("k", "s"));
    }

    #[tokio::test]
    async fn a_client_without_a_secret_uses_the_key_pair_and_without_one_refuses() {
        // The real gate: building a client makes no call, so Redis is not asked.
        let guard = all(&[]).expect("defaults").budget.gate("t-config").expect("guard");
        let gate: std::sync::Arc<dyn Gate> = std::sync::Arc::new(guard);
        let with_keys = AlpacaSettings {
            secret: None,
            ..settings(&["--alpaca-key-id", "k", "--alpaca-secret-key", "s"])
        };
        assert!(with_keys.client(gate.clone()).await.is_ok());
        let without = AlpacaSettings {
            key_id: None,
            secret_key: None,
            secret: None,
            ..settings(&[])
        };
        let error = without.client(gate).await.expect_err("no key pair");
        assert!(error.to_string().contains("APCA_API_SECRET_KEY"), "{error}");
    }

    #[tokio::test]
    async fn the_sqlite_store_opens_with_its_schema_and_names_its_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested").join("s.db");
        let parsed = all(&["--sqlite-path", path.to_str().expect("utf-8 path")]).expect("valid flags");
        assert_eq!(parsed.store.kind, StoreKind::Sqlite);
        assert!(parsed.store.describe().starts_with("sqlite "));
        let store = parsed.store.open().await.expect("opens");
        assert!(store.latest_run().await.expect("reads").is_none());
        assert!(path.exists());
    }

    #[test]
    fn the_guard_builds_from_the_budget_settings() {
        let parsed = all(&["--data-limit", "3", "--data-window-secs", "1.5"]).expect("valid flags");
        assert!(parsed.budget.gate("t-config").is_ok());
        let bad = BudgetSettings {
            redis_url: "not a url".into(),
            ..parsed.budget
        };
        assert!(bad.gate("t-config").is_err());
    }
}
